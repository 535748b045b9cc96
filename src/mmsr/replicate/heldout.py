"""The targets again, on questions no setting was chosen on.

The replication's settings (the GRPO learning rate, the train set's ratio, ...) were
compared on its balanced test set, so its verdicts there are optimistic. This check takes
a finished run, balances another world split the same way (world:val by default: 190
questions, none in the train or test pools), evaluates the run's models on it in the same
modes and computes every target there: `heldout-<split>.md` / `.json` in the run folder,
stages in `balance-<split>/` and `eval-<split>/`. It trains nothing and leaves results.md
as it was; rerun, it reuses what it finished.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from rich.console import Console

from mmsr.demo import build_tools
from mmsr.replicate.config import ReplicateConfig
from mmsr.replicate.results import RUN_LABELS, compute_targets, eval_table_lines, target_lines
from mmsr.replicate.run import balance_stage, evaluate_models, evaluation_plan, eye_stage
from mmsr.stages import DONE_FILE, StageClock, duration


def finished_models(out: Path) -> dict[str, tuple[str, dict[str, Any]]]:
    """The models a finished replication in `out` trained: name -> (path, stage params),
    the names of its evaluations (sft, main, no-penalty, unbalanced)."""
    models = {}
    for stage in ("sft", *RUN_LABELS):  # the GRPO runs' folders
        done = out / stage / DONE_FILE
        if done.is_file():
            record = json.loads(done.read_text(encoding="utf-8"))
            models[stage.removeprefix("grpo-")] = (record["model"], record["params"])
    if "sft" not in models or "main" not in models:
        raise FileNotFoundError(
            f"{out} holds no finished SFT and GRPO main stages: run the replication with "
            "these options first (bench/replicate_nano.py)"
        )
    return models


def run_config(out: Path) -> ReplicateConfig:
    """The options a finished replication in `out` ran with (its results.json)."""
    saved = out / "results.json"
    if not saved.is_file():
        raise FileNotFoundError(f"{saved} not found: finish the replication in {out} first")
    return ReplicateConfig(**json.loads(saved.read_text(encoding="utf-8"))["config"])


def check_heldout(
    out: str | Path, split: str = "val", console: Console | None = None
) -> dict[str, Any]:
    """Balance world:`split` as the finished replication in `out` balanced world:test (its
    own options), evaluate its models there, and write the targets; returns what
    heldout-<split>.json holds."""
    if split in ("train", "test"):
        raise ValueError(f"--heldout {split!r}: the replication trains or chooses on it")
    console = console or Console()
    out = Path(out)
    config = run_config(out)
    models = finished_models(out)
    started = time.perf_counter()
    clock = StageClock(console)
    eye = eye_stage(config, out / "eye", console, {})
    tools = build_tools(config.search_config, console)
    try:
        with clock.stage(
            1, f"Balance world:{split} (the base policy as the preliminary model)"
        ) as st:
            data = balance_stage(config, split, out / f"balance-{split}", eye, tools, console, st)
        plan = evaluation_plan(config.ablations, config.rag_question)
        plan = [(model, mode) for model, mode in plan if model in models]
        evals = evaluate_models(config, models, plan, data, out / f"eval-{split}", tools, clock,
                                console, 2)  # fmt: skip
    finally:
        if tools is not None:
            tools.close()
    result = {
        "out": str(out), "split": split, "balance": data["counts"], "evals": evals,
        "targets": compute_targets(evals), "seconds": time.perf_counter() - started,
    }  # fmt: skip
    (out / f"heldout-{split}.json").write_text(json.dumps(result, indent=2), encoding="utf-8")
    markdown = render(result)
    (out / f"heldout-{split}.md").write_text(markdown, encoding="utf-8")
    console.print(markdown)
    return result


def render(result: dict[str, Any]) -> str:
    split, counts = result["split"], result["balance"]
    categories = counts["output_categories"]
    lines = [
        f"# The nano replication's targets on world:{split} (held out)",
        "",
        f"Run folder `{result['out']}`; world:{split} {counts['input']} questions -> "
        f"{counts['output']} balanced ({categories['search_free']} search_free : "
        f"{categories['search_required']} search_required); {duration(result['seconds'])}.",
        "",
        "## Targets",
        "",
        *target_lines(result["targets"]),
        "",
        f"## Evaluation on the balanced world:{split} set (greedy)",
        "",
        *eval_table_lines(result["evals"]),
    ]
    return "\n".join(lines) + "\n"
