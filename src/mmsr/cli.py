"""The `mmsr` command. Thin: every command parses its options and calls a package.

Imports of torch-heavy packages happen inside the commands so `mmsr --help` stays fast.
"""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.console import Console

app = typer.Typer(
    help="mmsr: MMSearch-R1 — teach a multimodal model when to search.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
world_app = typer.Typer(help="The embedded offline world (countries, flags, pages, questions).")
data_app = typer.Typer(help="Sample files: JSONL + images, FVQA parquet.")
app.add_typer(world_app, name="world")
app.add_typer(data_app, name="data")

console = Console()


def _print_json(obj) -> None:
    typer.echo(json.dumps(obj, indent=2, ensure_ascii=False))


def _fail(message: str) -> None:
    console.print(f"[bold red]error:[/] {message}")
    raise typer.Exit(code=2)


# ---------------------------------------------------------------- world
@world_app.command("info")
def world_info(as_json: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """Counts of entities, pages and questions by type and split."""
    from mmsr.world.info import render_info, world_info as compute

    info = compute()
    _print_json(info) if as_json else render_info(info, console)


@world_app.command("build")
def world_build(
    out: Path = typer.Option(None, help="Output folder (default: the package's world folder)."),
    flags_dir: Path = typer.Option(
        None, help="Folder of <iso2>.png flag renders (default: npm svg-country-flags)."
    ),
    seed: int = typer.Option(0, help="Seed for question photos and splits."),
) -> None:
    """Rebuild the world from the factbook and flag packages."""
    from mmsr.world.build import build_world

    try:
        summary = build_world(out_dir=out, flags_dir=flags_dir, seed=seed, console=console)
    except (FileNotFoundError, ValueError, RuntimeError) as err:
        _fail(str(err))
    _print_json(summary)


# ---------------------------------------------------------------- data
@data_app.command("inspect")
def data_inspect(
    file: Path = typer.Argument(..., help="A .jsonl or .parquet sample file."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Counts, categories and one example (with its image size)."""
    from mmsr.data.errors import DataError
    from mmsr.data.inspect import inspect_file, render_inspection

    try:
        report = inspect_file(file, console=None if as_json else console)
    except (DataError, FileNotFoundError) as err:
        _fail(str(err))
    _print_json(report) if as_json else render_inspection(report, console)


@data_app.command("convert")
def data_convert(
    src: Path = typer.Argument(..., help="Input .jsonl or .parquet."),
    dst: Path = typer.Argument(..., help="Output .jsonl (images go beside it) or .parquet."),
) -> None:
    """Convert between JSONL + image folder and FVQA parquet."""
    from mmsr.data.errors import DataError
    from mmsr.data.io import convert

    try:
        n = convert(src, dst, console=console)
    except (DataError, FileNotFoundError) as err:
        _fail(str(err))
    console.print(f"wrote {n} samples to {dst}")


# ---------------------------------------------------------------- models / demo
@app.command("generate")
def generate(
    prompt: str = typer.Argument(..., help="The user message."),
    image: Path = typer.Option(None, help="An image to show the model."),
    model: str = typer.Option("nano", help="'nano' or a local checkpoint folder."),
    max_new_tokens: int = typer.Option(48, help="Tokens to generate at most."),
) -> None:
    """Plain chat generation with a policy (greedy)."""
    from mmsr.models.generate import chat_once
    from mmsr.models.loading import load_policy

    try:
        policy = load_policy(model, console=console)
        reply = chat_once(policy, prompt, image=image, max_new_tokens=max_new_tokens)
    except (FileNotFoundError, ValueError) as err:
        _fail(str(err))
    typer.echo(reply)


@app.command("demo")
def demo() -> None:
    """The main job on the embedded default (what `make demo` runs)."""
    from mmsr.demo import run_demo

    run_demo(console)


if __name__ == "__main__":
    app()
