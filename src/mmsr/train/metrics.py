"""Metric sinks: one JSON line per step, TensorBoard scalars, optional Weights & Biases.

Keys are the names of the variables they come from (`reward_mean`, `kl`, `clipfrac`, ...).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from mmsr.eval.records import question_type


def rollout_metrics(
    rewards: Sequence[Mapping[str, float]],
    trajectories: Sequence[Any],
    categories: Sequence[str | None] = (),
) -> dict[str, float]:
    """Batch statistics of the rewards (compute_score dicts) and the trajectories.

    `categories` (one per trajectory: search_free / search_required / None) adds
    `acc_<category>` and `search_ratio_<category>` for the categories present: whether the
    policy searches where search is needed and answers at once where it is not."""
    n = max(len(rewards), 1)
    scores = [float(r["score"]) for r in rewards]
    mean = sum(scores) / n
    std = math.sqrt(sum((s - mean) ** 2 for s in scores) / n)
    lengths = [t.n_sampled_tokens for t in trajectories]
    searched = [r["n_image_search"] + r["n_text_search"] > 0 for r in rewards]
    return {
        "reward_mean": mean,
        "reward_std": std,
        "acc": sum(float(r["acc"]) for r in rewards) / n,
        "format_rate": sum(float(r["format"]) for r in rewards) / n,
        "search_ratio": sum(searched) / n,
        # The paper's behaviour of interest (Fig. 4): right from its own knowledge, no search.
        "correct_no_search": sum(
            float(r["acc"]) >= 1.0 and not s for r, s in zip(rewards, searched, strict=True)
        )
        / n,
        "search_ratio_image": sum(int(r["n_image_search"] > 0) for r in rewards) / n,
        "search_ratio_text": sum(int(r["n_text_search"] > 0) for r in rewards) / n,
        "response_length": sum(lengths) / max(len(lengths), 1),
        "response_length_max": float(max(lengths, default=0)),
        "turns_mean": sum(len(t.turns) for t in trajectories) / max(len(trajectories), 1),
        **_by_category(rewards, searched, categories),
    }


def _by_category(
    rewards: Sequence[Mapping[str, float]], searched: Sequence[bool], categories: Sequence
) -> dict[str, float]:
    out: dict[str, float] = {}
    for category in sorted({c for c in categories if c}):
        rows = [i for i, c in enumerate(categories) if c == category]
        out[f"acc_{category}"] = sum(float(rewards[i]["acc"]) for i in rows) / len(rows)
        out[f"search_ratio_{category}"] = sum(searched[i] for i in rows) / len(rows)
    return out


def open_after(path: Path, after: int):
    """Open a per-step JSONL log for appending, first dropping its lines of steps after
    `after` (the checkpoint a run resumes from): a run killed between logging a step and
    checkpointing it redoes that step, and must not log it twice."""
    if path.exists():
        lines = path.read_text(encoding="utf-8").splitlines()
        kept = [line for line in lines if line.strip() and json.loads(line)["step"] <= after]
        if len(kept) != len(lines):
            path.write_text("".join(line + "\n" for line in kept), encoding="utf-8")
    return path.open("a", encoding="utf-8")


class RolloutLog:
    """Appends each step's rollouts to a JSONL file (`run.save_rollouts`), resuming as
    `open_after` says."""

    def __init__(self, path: Path, after: int = 0):
        self.file = open_after(path, after)

    def write(self, step: int, trajectories: Sequence[Any], rewards, samples) -> None:
        for trajectory, reward, sample in zip(trajectories, rewards, samples, strict=True):
            self.file.write(json.dumps(rollout_record(step, trajectory, reward, sample)) + "\n")
        self.file.flush()

    def close(self) -> None:
        self.file.close()


def rollout_record(step: int, trajectory: Any, reward: Mapping[str, Any], sample: Any) -> dict:
    """One line of rollouts.jsonl: the trajectory's text and tool calls, its reward and the
    question it answered (what a per-step analysis of GRPO needs; no tensors, no images)."""
    return {
        "step": step,
        "category": sample.category,
        "qtype": question_type(sample),
        "question": sample.question,
        "golds": [sample.answer, *sample.aliases],
        "reward": {k: _plain(v) for k, v in reward.items()},
        **trajectory.to_json(),
    }


class MetricsLogger:
    """Writes every step's metrics to `out/metrics.jsonl` (flushed each line), TensorBoard
    under `out/tensorboard` and W&B when a project is given."""

    def __init__(
        self,
        out: Path,
        tensorboard: bool = True,
        wandb_project: str = "",
        config=None,
        after: int = 0,
    ):
        out.mkdir(parents=True, exist_ok=True)
        self.path = out / "metrics.jsonl"
        self.file = open_after(self.path, after)
        self.writer = None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError as err:  # tensorboard is a dependency; say which is missing
                raise ImportError(f"run.tensorboard needs the tensorboard package: {err}") from err
            self.writer = SummaryWriter(str(out / "tensorboard"))
        self.wandb = None
        if wandb_project:
            try:
                import wandb
            except ImportError as err:
                raise ImportError(
                    f"run.wandb_project={wandb_project!r} needs `pip install wandb`"
                ) from err
            self.wandb = wandb.init(project=wandb_project, config=config, dir=str(out))

    def log(self, step: int, metrics: Mapping[str, float]) -> None:
        record = {"step": step, **{k: _plain(v) for k, v in metrics.items()}}
        self.file.write(json.dumps(record) + "\n")
        self.file.flush()
        for key, value in record.items():
            if self.writer is not None and key != "step" and isinstance(value, (int, float)):
                self.writer.add_scalar(key, value, step)
        if self.wandb is not None:
            self.wandb.log(record, step=step)

    def close(self) -> None:
        self.file.close()
        if self.writer is not None:
            self.writer.close()
        if self.wandb is not None:
            self.wandb.finish()


def _plain(value):
    if hasattr(value, "item"):
        return value.item()
    return value


def read_metrics(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
