"""The `mmsr` command. Thin: every command parses its options and calls a package.

Imports of torch-heavy packages happen inside the commands so `mmsr --help` stays fast.
"""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.console import Console

from mmsr.demo import DemoConfig

app = typer.Typer(
    help="mmsr: MMSearch-R1 — teach a multimodal model when to search.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
world_app = typer.Typer(help="The embedded offline world (countries, flags, pages, questions).")
data_app = typer.Typer(help="Sample files: JSONL + images, FVQA parquet.")
app.add_typer(world_app, name="world")
app.add_typer(data_app, name="data")
search_app = typer.Typer(help="Image and text search: local index, web APIs or a search server.")
serve_app = typer.Typer(help="Long-running servers (the shared search server).")
app.add_typer(search_app, name="search")
app.add_typer(serve_app, name="serve")
train_app = typer.Typer(help="Training: align (the nano eye), SFT warm-start, GRPO.")
app.add_typer(train_app, name="train")

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
    from mmsr.world.info import render_info
    from mmsr.world.info import world_info as compute

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


# ---------------------------------------------------------------- search / serve
_SEARCH_CONFIG_HELP = "Search config YAML (see mmsr.search.config.SearchConfig)."


def _search_config(config: Path | None, **overrides):
    from mmsr.search.config import SearchConfig

    try:
        return SearchConfig.load(config, **overrides)
    except (FileNotFoundError, ValueError) as err:
        _fail(str(err))


def _show_search(response, as_json: bool, title: str) -> None:
    from mmsr.search.render import render_response, response_json

    _print_json(response_json(response)) if as_json else render_response(
        response, console, title=title
    )
    if response.error:
        raise typer.Exit(code=1)


def _build_tools(cfg, *, image: bool, text: bool):
    from mmsr.search.errors import SearchError
    from mmsr.search.tools import make_tools

    try:
        return make_tools(cfg, image=image, text=text)
    except (SearchError, RuntimeError, ValueError, FileNotFoundError) as err:
        _fail(str(err))


@search_app.command("index")
def search_index(
    config: Path = typer.Option(None, help=_SEARCH_CONFIG_HELP),
    threads: int = typer.Option(2, help="torch CPU threads for the encoders."),
) -> None:
    """Build the local search indexes now (else the first search builds them); cached."""
    import time

    import torch

    torch.set_num_threads(threads)
    cfg = _search_config(config)
    started = time.perf_counter()
    tools = _build_tools(cfg, image=True, text=True)
    tools.close()
    console.print(
        f"search indexes ready in {time.perf_counter() - started:.1f} s "
        f"(image: {cfg.image_backend}, text: {cfg.text_backend}; cached under $MMSR_CACHE)"
    )


@search_app.command("image")
def search_image(
    image: str = typer.Argument(..., help="Image file, or an http(s) image URL (serpapi)."),
    k: int = typer.Option(5, "--k", help="Results to return."),
    backend: str = typer.Option(None, help="local | serpapi | remote (default: config, local)."),
    server: str = typer.Option(None, help="Search server URL for --backend remote."),
    config: Path = typer.Option(None, help=_SEARCH_CONFIG_HELP),
    no_cache: bool = typer.Option(False, "--no-cache", help="Skip the persistent cache."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Pages whose images look like IMAGE (the paper's image search tool)."""
    cfg = _search_config(
        config, image_backend=backend, remote_url=server, cache=False if no_cache else None
    )
    image_bytes, image_url = None, None
    if image.startswith(("http://", "https://")):
        image_url = image
    else:
        path = Path(image)
        if not path.is_file():
            _fail(f"image file not found: {path}")
        image_bytes = path.read_bytes()
    tools = _build_tools(cfg, image=True, text=False)
    try:
        response = tools.image.search(image_bytes, image_url=image_url, k=k)
    finally:
        tools.close()
    _show_search(response, as_json, f"image search: {image}")


@search_app.command("text")
def search_text(
    query: str = typer.Argument(..., help="The search query."),
    k: int = typer.Option(5, "--k", help="Results to return."),
    backend: str = typer.Option(
        None, help="local | serpapi | searxng | remote (default: config, local)."
    ),
    server: str = typer.Option(None, help="Search server URL for --backend remote."),
    summarizer: str = typer.Option(None, help="extractive | llm | none (default: extractive)."),
    config: Path = typer.Option(None, help=_SEARCH_CONFIG_HELP),
    no_cache: bool = typer.Option(False, "--no-cache", help="Skip the persistent cache."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Pages relevant to QUERY, read and summarised (the paper's text search tool)."""
    cfg = _search_config(
        config,
        text_backend=backend,
        remote_url=server,
        summarizer=summarizer,
        cache=False if no_cache else None,
    )
    tools = _build_tools(cfg, image=False, text=True)
    try:
        response = tools.text.search(query, k=k)
    finally:
        tools.close()
    _show_search(response, as_json, f"text search: {query}")


@serve_app.command("search")
def serve_search(
    host: str = typer.Option("127.0.0.1", help="Interface; non-loopback needs a token."),
    port: int = typer.Option(8765, help="TCP port."),
    backend: str = typer.Option(
        None, help="Backend of both tools (image falls back to the config's for searxng)."
    ),
    token: str = typer.Option(
        None, envvar="MMSR_SEARCH_TOKEN", help="Bearer token clients must send."
    ),
    max_concurrency: int = typer.Option(8, help="Searches at once; more get 503 at once."),
    request_timeout: float = typer.Option(60.0, help="Seconds before a search gets 504."),
    config: Path = typer.Option(None, help=_SEARCH_CONFIG_HELP),
) -> None:
    """Serve image and text search over HTTP for many rollout workers (one index, one cache)."""
    from mmsr.search.config import IMAGE_BACKENDS
    from mmsr.search.server import ServerConfig, check_bind, create_app, serve

    server_config = ServerConfig(
        host=host,
        port=port,
        token=token or None,
        max_concurrency=max_concurrency,
        request_timeout_s=request_timeout,
    )
    try:
        check_bind(host, server_config.token)  # before loading any index
    except ValueError as err:
        _fail(str(err))
    image_backend = backend if backend in IMAGE_BACKENDS else None
    cfg = _search_config(config, image_backend=image_backend, text_backend=backend)
    tools = _build_tools(cfg, image=True, text=True)
    try:
        app_ = create_app(
            tools.image,
            tools.text,
            config=server_config,
            stats=tools.stats,
            backend_names={"image": cfg.image_backend, "text": cfg.text_backend},
        )
    except ValueError as err:
        _fail(str(err))
    console.print(
        f"serving search on http://{host}:{port} (image: {cfg.image_backend}, text: "
        f"{cfg.text_backend}, max concurrency {max_concurrency}"
        f"{', token required' if server_config.token else ''})"
    )
    try:
        serve(app_, server_config)
    finally:
        tools.close()


# ---------------------------------------------------------------- eval / data balance
@app.command("eval")
def eval_(
    model: str = typer.Option("nano", help="'nano' or a local checkpoint folder."),
    data: str = typer.Option("world:test", help="world:test|val|train|all, or a .parquet/.jsonl."),
    mode: str = typer.Option("ondemand", help="direct | rag | ondemand."),
    out: Path = typer.Option(None, help="Folder for report.md/.html, viewer.html, trajectories."),
    limit: int = typer.Option(None, help="Evaluate only the first N questions."),
    judge: str = typer.Option("rule", help="rule (EM/SubEM, offline) | llm (OpenAI-compatible)."),
    judge_url: str = typer.Option("", help="LLM judge base URL, e.g. http://127.0.0.1:8000/v1."),
    judge_model: str = typer.Option("", help="LLM judge model name."),
    judge_key_env: str = typer.Option("OPENAI_API_KEY", help="Env var holding the judge key."),
    judge_on_error: str = typer.Option("fallback", help="fallback (rule verdict) | fail."),
    match: str = typer.Option("em", help="Rule judge: em | subem."),
    rag_query: str = typer.Option("question", help="rag mode text query: question | model."),
    rag_reasoning: str = typer.Option(
        "fixed",
        help="rag mode reasoning: fixed (our text) | model (the model's own; only the "
        "workflow's actions are forced).",
    ),
    max_turns: int = typer.Option(3, help="ondemand: turns per question."),
    max_image_search: int = typer.Option(1, help="ondemand: image searches allowed."),
    max_text_search: int = typer.Option(2, help="ondemand: text searches allowed."),
    max_new_tokens: int = typer.Option(256, help="Tokens per turn at most."),
    temperature: float = typer.Option(0.0, help="0 = greedy."),
    batch_size: int = typer.Option(8, help="Questions rolled out at once."),
    seed: int = typer.Option(0, help="Sampling seed."),
    sample_dtype: str = typer.Option(
        "fp32",
        help="Weights the rollouts run on: fp32 | bf16 (a bf16 copy; LM head and log-probs "
        "fp32) | auto (bf16 where the device multiplies bf16 in hardware).",
    ),
    search_config: Path = typer.Option(None, help=_SEARCH_CONFIG_HELP),
    device: str = typer.Option(None, help="cpu | cuda (default: GPU if any)."),
    from_run: Path = typer.Option(
        None, help="Judge a saved run (its --out folder) again instead of running a model."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the metrics as JSON."),
) -> None:
    """Evaluate a policy: accuracy, search ratio, answer behaviour (direct, rag, ondemand)."""
    from mmsr.eval.commands import JudgeOptions, rejudge_run, run_eval
    from mmsr.eval.judges import JudgeError
    from mmsr.eval.modes import EvalConfig
    from mmsr.eval.report import render_metrics

    try:
        config = EvalConfig(
            mode=mode,
            max_turns=max_turns,
            max_image_search=max_image_search,
            max_text_search=max_text_search,
            max_new_tokens=max_new_tokens,
            temperature=temperature,
            seed=seed,
            batch_size=batch_size,
            rag_query=rag_query,
            rag_reasoning=rag_reasoning,
            sample_dtype=sample_dtype,
            match=match,
        )
        judge_options = JudgeOptions(judge, judge_url, judge_model, judge_key_env, judge_on_error)
        if from_run is not None:
            metrics = rejudge_run(run_dir=from_run, judge=judge_options, match=match, out=out)
            out = out or from_run
        else:
            metrics = run_eval(
                model=model,
                data=data,
                config=config,
                out=out,
                limit=limit,
                judge=judge_options,
                search_config=search_config,
                device=device,
                console=None if as_json else console,
            )
    except (ValueError, FileNotFoundError, RuntimeError, JudgeError) as err:
        _fail(str(err))
    if as_json:
        _print_json(metrics)
        return
    render_metrics(metrics, console)
    if out is not None:
        console.print(f"reports in {out} (report.html, viewer.html)")


@app.command("decisions")
def decisions_command(
    direct: Path = typer.Option(
        ..., help="A direct-mode run: its --out folder or its trajectories.jsonl."
    ),
    ondemand: Path = typer.Option(
        ..., help="An on-demand run of the same model and questions (folder or .jsonl)."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the counts as JSON."),
) -> None:
    """Did the model search when it needed to? Crosses an on-demand run with a direct run:
    known questions searched (wasted) or answered, unknown ones searched or missed; then
    the on-demand run's right answers by the searches each question made (`paths`), and
    its searches by question type (`by_type`: does the type alone set the decision?)."""
    from rich.markdown import Markdown

    from mmsr.eval.decisions import (
        render_by_type,
        render_decisions,
        render_paths,
        search_by_type,
        search_decisions,
        search_paths,
    )
    from mmsr.eval.run import read_run_records

    try:
        knew = read_run_records(direct, "--direct")
        chose = read_run_records(ondemand, "--ondemand")
        decisions = search_decisions(knew, chose)
    except (ValueError, FileNotFoundError) as err:
        _fail(str(err))
    decisions["paths"] = search_paths(chose)
    decisions["by_type"] = search_by_type(chose)
    if as_json:
        _print_json(decisions)
        return
    paths = render_paths({"on demand": decisions["paths"]})
    by_type = render_by_type({"on demand": decisions["by_type"]})
    console.print(Markdown("\n".join([*render_decisions(decisions), "", *paths, "", *by_type])))


@data_app.command("balance")
def data_balance(
    model: str = typer.Option("nano", help="The preliminary model: 'nano' or a checkpoint."),
    data: str = typer.Option("world:train", help="world:<split>, or a .parquet/.jsonl."),
    out: Path = typer.Option(..., help="Output FVQA .parquet (decisions go to .balance.json)."),
    k: int = typer.Option(5, "--k", help="Answers per question without search."),
    threshold: int = typer.Option(3, help="Right at least this often of k: search_free."),
    rag_k: int = typer.Option(1, help="RAG answers per search_required question (0: keep all)."),
    target_ratio: float = typer.Option(
        1.0, help="search_required : search_free after balancing (<= 0: no balancing)."
    ),
    temperature: float = typer.Option(1.0, help="Sampling temperature of the k answers."),
    lenient: bool = typer.Option(
        False, help="Without an <answer> tag, judge the last turn's text (base models; use subem)."
    ),
    max_new_tokens: int = typer.Option(128, help="Tokens per turn at most."),
    batch_size: int = typer.Option(8, help="Questions rolled out at once."),
    limit: int = typer.Option(None, help="Use only the first N questions."),
    match: str = typer.Option("em", help="em | subem."),
    seed: int = typer.Option(0, help="Seeds sampling and downsampling."),
    search_config: Path = typer.Option(None, help=_SEARCH_CONFIG_HELP),
    device: str = typer.Option(None, help="cpu | cuda (default: GPU if any)."),
    from_decisions: Path = typer.Option(
        None,
        help="A .balance.json of the same --data/--limit: draw its recorded categories to "
        "--target-ratio again (seconds; no model, no search; --k etc. do not apply).",
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the counts as JSON."),
) -> None:
    """Search-balanced data (FVQA method): classify by a preliminary model, drop, rebalance."""
    from mmsr.data.balance import BalanceConfig
    from mmsr.eval.commands import run_balance
    from mmsr.eval.modes import EvalConfig

    try:
        balance = BalanceConfig(
            k=k,
            threshold=threshold,
            rag_k=rag_k,
            target_ratio=target_ratio if target_ratio > 0 else None,
            seed=seed,
            match=match,
        )
        eval_config = EvalConfig(max_new_tokens=max_new_tokens, batch_size=batch_size, match=match)
        counts = run_balance(
            model=model,
            data=data,
            out=out,
            balance=balance,
            eval_config=eval_config,
            temperature=temperature,
            lenient=lenient,
            limit=limit,
            search_config=search_config,
            device=device,
            console=None if as_json else console,
            from_decisions=from_decisions,
        )
    except (ValueError, FileNotFoundError, RuntimeError) as err:
        _fail(str(err))
    if as_json:
        _print_json(counts)
        return
    console.print(
        f"wrote {counts['output']} samples to {out}: {counts['output_categories']} "
        f"(dropped {counts['dropped_unanswerable']} unanswerable, "
        f"{counts['dropped_balance']} to balance)"
    )


# ---------------------------------------------------------------- train align
@train_app.command("align")
def train_align_command(
    steps: int = typer.Option(None, help="Shorthand: this many steps in each stage."),
    classify_steps: int = typer.Option(None, help="Stage 0 steps (tower + temporary head)."),
    embed_steps: int = typer.Option(None, help="Stage 1 steps (tower only, no LM pass)."),
    lm_steps: int = typer.Option(None, help="Stage 2 steps (LM loss, LM frozen)."),
    lm_lr: float = typer.Option(None, help="Stage 2 peak learning rate (default 5e-4)."),
    lm_batch: int = typer.Option(None, help="Stage 2 photos per step (default 8)."),
    out: Path = typer.Option(None, help="Write the trained vision weights here."),
    ship: bool = typer.Option(False, "--ship", help="Write them to the package's asset."),
    run_dir: Path = typer.Option(Path("runs/align"), help="Checkpoint + log folder."),
    resume: bool = typer.Option(False, "--resume", help="Continue from run-dir's checkpoint."),
    model: str = typer.Option("nano", help="'nano' (random tower) or a checkpoint folder."),
    start_from: str = typer.Option(
        None,
        help="nano: start the tower from these vision weights instead of random ('shipped': "
        "the package's eye), e.g. to train its LM stage longer with --classify-steps 0 "
        "--embed-steps 0.",
    ),
    image_size: int = typer.Option(112, help="Photo size in px (longest side)."),
    threads: int = typer.Option(2, help="torch CPU threads."),
) -> None:
    """Teach the vision tower (LM frozen) to name the familiar flags; resumable."""
    import torch

    from mmsr.models.policy import Policy
    from mmsr.models.vision_weights import NANO_VISION_ASSET
    from mmsr.train.align import AlignConfig, train_align
    from mmsr.world.load import load_world

    torch.set_num_threads(threads)
    sizes = {"image_size": image_size}
    if steps is not None:
        sizes.update(classify_steps=steps, embed_steps=steps, lm_steps=steps)
    for name, value in (
        ("classify_steps", classify_steps),
        ("embed_steps", embed_steps),
        ("lm_steps", lm_steps),
        ("lm_lr", lm_lr),
        ("lm_batch", lm_batch),
    ):
        if value is not None:
            sizes[name] = value
    try:
        config = AlignConfig(**sizes)
        if model == "nano":
            from mmsr.models.nano import load_nano

            start = None
            if start_from is not None:
                start = NANO_VISION_ASSET if start_from == "shipped" else Path(start_from)
                if not start.is_file():
                    raise FileNotFoundError(f"--start-from: no vision weights at {start}")
            nano, processor = load_nano(console=console, vision_weights=start)
            policy = Policy(model=nano, processor=processor, name="nano")
        else:
            if start_from is not None:
                raise ValueError("--start-from applies to --model nano only")
            from mmsr.models.loading import load_policy

            policy = load_policy(model, device="cpu", console=console)
        weights = NANO_VISION_ASSET if ship else out
        result = train_align(policy, load_world(), config, run_dir, weights, resume, console)
    except (FileNotFoundError, ValueError) as err:
        _fail(str(err))
    console.print(f"align took {result.seconds / 60:.1f} min ({result.steps} steps)")


# ---------------------------------------------------------------- train sft / grpo
_OVERRIDE_HELP = "Config overrides key.sub=value (YAML values), e.g. grpo.kl_coef=0."


@train_app.command("grpo")
def train_grpo_command(
    config: Path = typer.Option(
        None, help="YAML config file, or a shipped preset: nano_cpu, qwen2_5_vl_7b_gpu."
    ),
    overrides: list[str] = typer.Argument(None, help=_OVERRIDE_HELP),
    no_resume: bool = typer.Option(False, "--no-resume", help="Ignore existing checkpoints."),
) -> None:
    """GRPO: rollouts in groups, rewards, clipped policy update with k3 KL; resumable."""
    from mmsr.train.config import GRPOConfig, load_config
    from mmsr.train.loop import train_grpo

    try:
        options = load_config(GRPOConfig, config, overrides)
        out = train_grpo(options, console=console, resume=not no_resume)
    except (FileNotFoundError, ValueError, ImportError) as err:
        _fail(str(err))
    console.print(f"run folder: {out}")


@train_app.command("sft")
def train_sft_command(
    config: Path = typer.Option(
        None, help="YAML config file (SFTConfig keys), or the shipped preset nano_sft_cpu."
    ),
    overrides: list[str] = typer.Argument(None, help=_OVERRIDE_HELP),
    data: str = typer.Option(
        None, help="world:<split> (synthesise) or a trajectory .jsonl to distil."
    ),
    no_resume: bool = typer.Option(False, "--no-resume", help="Ignore existing checkpoints."),
) -> None:
    """SFT warm-start on world-synthesised trajectories, or distillation from a file."""
    from mmsr.train.config import SFTConfig, load_config
    from mmsr.train.sft import train_sft

    try:
        options = load_config(
            SFTConfig, config, [*(overrides or []), *([f"data={data}"] if data else [])]
        )
        out = train_sft(options, console=console, resume=not no_resume)
    except (FileNotFoundError, ValueError, ImportError) as err:
        _fail(str(err))
    console.print(f"run folder: {out}")


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


@app.command("ask")
def ask_command(
    image: Path = typer.Argument(..., help="The question image."),
    question: str = typer.Argument(..., help="The question about it."),
    model: str = typer.Option("nano", "--model", help="'nano' or a local checkpoint folder."),
    config: Path = typer.Option(None, "--config", help=_SEARCH_CONFIG_HELP),
    as_json: bool = typer.Option(False, "--json", help="Print the whole trajectory as JSON."),
    seed: int = typer.Option(0, help="Sampling seed."),
    temperature: float = typer.Option(0.3, help="Sampling temperature (> 0)."),
    max_new_tokens: int = typer.Option(256, help="Tokens per turn at most."),
) -> None:
    """Answer QUESTION about IMAGE with search: reasoning, tool calls, results, answer."""
    from mmsr.models.loading import load_policy
    from mmsr.rollout.ask import ask, render_trajectory
    from mmsr.rollout.engine import EngineConfig

    cfg = _search_config(config)
    tools = _build_tools(cfg, image=True, text=True)
    try:
        engine_config = EngineConfig(temperature=temperature, max_new_tokens=max_new_tokens)
        policy = load_policy(model, console=None if as_json else console)
        trajectory = ask(policy, tools, image, question, engine_config, seed=seed)
    except (FileNotFoundError, ValueError) as err:
        _fail(str(err))
    finally:
        tools.close()
    if as_json:
        _print_json({"question": question, "image": str(image), **trajectory.to_json()})
    else:
        render_trajectory(trajectory, console, question)


_DEMO = DemoConfig()  # the defaults of `mmsr demo` (mmsr.demo imports no torch)


@app.command("demo")
def demo(
    out: Path = typer.Option(Path(_DEMO.out), help="Run folder (stages, reports, summary)."),
    sft_steps: int = typer.Option(
        _DEMO.sft_steps, help="SFT warm-start optimizer steps (batch 8)."
    ),
    sft_trajectories: int = typer.Option(
        _DEMO.sft_trajectories, help="World-synthesised SFT trajectories."
    ),
    grpo_steps: int = typer.Option(_DEMO.grpo_steps, help="GRPO steps."),
    prompts_per_step: int = typer.Option(_DEMO.prompts_per_step, help="GRPO questions per step."),
    group_size: int = typer.Option(_DEMO.group_size, help="GRPO trajectories per question."),
    eval_questions: int = typer.Option(
        _DEMO.eval_questions,
        help="Questions of the fixed evaluation slice (seeded shuffle of --eval-data).",
    ),
    eval_data: str = typer.Option(_DEMO.eval_data, help="world:<split>, or a .parquet/.jsonl."),
    max_new_tokens: int = typer.Option(
        _DEMO.max_new_tokens, help="Tokens per model turn (GRPO and evaluation)."
    ),
    policy: str = typer.Option(_DEMO.policy, help="'nano' or a local Qwen-VL checkpoint folder."),
    freeze_layers: int = typer.Option(
        _DEMO.freeze_layers, help="Lowest decoder layers kept frozen (nano: 30)."
    ),
    search_config: str = typer.Option(
        None, help="Search config YAML (default: local world backends; 'none': no tools)."
    ),
    seed: int = typer.Option(
        _DEMO.seed, help="Seed of SFT scripts, data order, rollouts, eval slice."
    ),
    threads: int = typer.Option(0, help="torch CPU threads (0: torch's default)."),
    fresh: bool = typer.Option(False, "--fresh", help="Start over: delete the stage folders."),
) -> None:
    """The main job on the embedded default (what `make demo` runs): world, nano's eye,
    search indexes, SFT warm-start, GRPO, and an evaluation before and after GRPO.

    Finished stages under --out are reused when run again with the same options."""
    from mmsr.demo import run_demo

    if threads > 0:
        import torch

        torch.set_num_threads(threads)
    try:
        config = DemoConfig(
            out=str(out), policy=policy, sft_steps=sft_steps, sft_trajectories=sft_trajectories,
            grpo_steps=grpo_steps, prompts_per_step=prompts_per_step, group_size=group_size,
            eval_questions=eval_questions, eval_data=eval_data, max_new_tokens=max_new_tokens,
            freeze_layers=freeze_layers, search_config=search_config, seed=seed, fresh=fresh,
        )  # fmt: skip
        run_demo(config, console)
    except (FileNotFoundError, ValueError, ImportError) as err:
        _fail(str(err))


if __name__ == "__main__":
    app()
