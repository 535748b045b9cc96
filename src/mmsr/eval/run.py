"""One evaluation run end to end: roll out, judge, measure, write the outputs."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import Progress

from mmsr.data.record import Sample
from mmsr.eval.judges import LLMJudge, OnError, RuleJudge, apply_judges
from mmsr.eval.metrics import compute_metrics
from mmsr.eval.modes import EvalConfig, records_from, trajectories_for
from mmsr.eval.records import EvalRecord
from mmsr.eval.report import write_report
from mmsr.eval.samples import question_image_bytes
from mmsr.eval.viewer import write_viewer


@dataclass
class EvalRun:
    config: EvalConfig
    records: list[EvalRecord]
    metrics: dict[str, Any]


def rollout_records(
    policy, tools, samples: Sequence[Sample], config: EvalConfig, console: Console | None = None
) -> list[EvalRecord]:
    """Roll every sample out once in `config.mode`, `config.batch_size` at a time."""
    records: list[EvalRecord] = []
    show = console is not None and console.is_terminal
    with Progress(console=console, transient=True, disable=not show) as progress:
        task = progress.add_task(f"eval {config.mode}", total=len(samples))
        for start in range(0, len(samples), config.batch_size):
            batch = list(samples[start : start + config.batch_size])
            records += records_from(batch, trajectories_for(policy, tools, batch, config), config)
            progress.advance(task, len(batch))
    return records


def evaluate(
    policy,
    tools,
    samples: Sequence[Sample],
    config: EvalConfig,
    *,
    llm_judge: LLMJudge | None = None,
    on_error: OnError = "fallback",
    console: Console | None = None,
) -> EvalRun:
    """Rollouts, verdicts (rule, and the LLM judge when given) and metrics."""
    records = rollout_records(policy, tools, samples, config, console)
    return judge_and_measure(records, config, llm_judge=llm_judge, on_error=on_error)


def judge_and_measure(
    records: list[EvalRecord],
    config: EvalConfig,
    *,
    llm_judge: LLMJudge | None = None,
    on_error: OnError = "fallback",
) -> EvalRun:
    apply_judges(records, RuleJudge(config.reward_config), llm_judge, on_error=on_error)
    metrics = compute_metrics(records, config.mode, config.limits, config.fold_accents)
    metrics["config"] = asdict(config)
    return EvalRun(config, records, metrics)


def write_run(
    run: EvalRun,
    out_dir: Path,
    samples: Sequence[Sample] = (),
    title: str | None = None,
) -> dict[str, Path]:
    """trajectories.jsonl, metrics.json, report.md, report.html and viewer.html."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    title = title or f"mmsr eval: {run.config.mode}"
    trajectories = out_dir / "trajectories.jsonl"
    with trajectories.open("w", encoding="utf-8") as handle:
        for record in run.records:
            handle.write(json.dumps(record.to_json(), ensure_ascii=False, default=str) + "\n")
    paths = write_report(run.metrics, out_dir, title)
    images = {}
    for sample in samples:
        data = question_image_bytes(sample)
        if data is not None:
            images[sample.id] = data
    paths["viewer"] = write_viewer(run.records, out_dir / "viewer.html", title, images)
    paths["trajectories"] = trajectories
    return paths


def read_records(path: Path) -> list[EvalRecord]:
    """Records of a `trajectories.jsonl` written by `write_run` (to re-judge or re-report)."""
    records = []
    for line_no, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            records.append(EvalRecord.from_json(json.loads(line)))
        except (ValueError, TypeError) as err:
            raise ValueError(f"{path}:{line_no}: not an eval record ({err})") from err
    return records


def read_run_records(path: Path, option: str) -> list[EvalRecord]:
    """The records of a saved run given as its folder or its trajectories.jsonl; errors
    name the command-line `option` that gave the path."""
    path = Path(path)
    trajectories = path / "trajectories.jsonl" if path.is_dir() else path
    if not trajectories.is_file():
        where = "no trajectories.jsonl in it" if path.is_dir() else "no such file"
        raise FileNotFoundError(f"{option} {path}: {where}")
    records = read_records(trajectories)
    if not records:
        raise ValueError(f"{option} {path}: trajectories.jsonl holds no records")
    return records
