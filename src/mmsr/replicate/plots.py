"""The replication's PNG plots (matplotlib, headless).

- grpo_curves.png: reward mean and search ratio per GRPO step, one line per run;
- behaviour.png: the answer-behaviour breakdown (on-demand, test set) of the SFT model
  (before RL) and of every GRPO model (after);
- correct_no_search.png: the share of training rollouts right without search per GRPO step,
  with the before / after evaluation shares as dashed lines;
- search_by_category.png: the search ratio of the training rollouts on search_required and
  on search_free questions per GRPO step (the knowledge boundary: a policy that learns it
  searches more on the first and less on the second).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mmsr.replicate.results import BEHAVIOURS, MODEL_LABELS, RUN_LABELS

COLOURS = {"correct_no_search": "#2a9d8f", "correct_search": "#8ab17d",
           "wrong_no_search": "#e76f51", "wrong_search": "#f4a261"}  # fmt: skip


def write_plots(results: dict[str, Any], folder: Path) -> dict[str, Path]:
    import matplotlib

    matplotlib.use("Agg")  # no display; must precede pyplot
    import matplotlib.pyplot as plt

    folder.mkdir(parents=True, exist_ok=True)
    paths = {
        "grpo_curves": _curves(plt, results["grpo_steps"], folder / "grpo_curves.png"),
        "behaviour": _behaviour(plt, results["evals"], folder / "behaviour.png"),
        "correct_no_search": _correct_no_search(plt, results, folder / "correct_no_search.png"),
    }
    by_category = results["grpo_steps"].values()
    if any(row.get(CATEGORY_KEYS[0]) is not None for steps in by_category for row in steps):
        path = folder / "search_by_category.png"
        paths["search_by_category"] = _search_by_category(plt, results["grpo_steps"], path)
    return paths


def _series(steps: list[dict[str, Any]], key: str) -> tuple[list[int], list[float]]:
    points = [(row["step"], row[key]) for row in steps if row.get(key) is not None]
    return [p[0] for p in points], [p[1] for p in points]


def _curves(plt, grpo_steps: dict[str, list[dict[str, Any]]], path: Path) -> Path:
    figure, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    for axis, key, title in ((axes[0], "reward_mean", "reward (mean of the batch)"),
                             (axes[1], "search_ratio", "search ratio")):  # fmt: skip
        for run, steps in grpo_steps.items():
            x, y = _series(steps, key)
            axis.plot(x, y, marker="o", markersize=3, label=RUN_LABELS.get(run, run))
        axis.set_title(title)
        axis.set_xlabel("GRPO step")
        axis.grid(alpha=0.3)
    axes[1].set_ylim(-0.02, 1.02)
    axes[0].legend(fontsize=8)
    return _save(plt, figure, path)


CATEGORY_KEYS = ("search_ratio_search_required", "search_ratio_search_free")


def _search_by_category(plt, grpo_steps: dict[str, list[dict[str, Any]]], path: Path) -> Path:
    figure, axis = plt.subplots(figsize=(6, 3.6))
    for number, (run, steps) in enumerate(grpo_steps.items()):
        colour = f"C{number}"
        for key, style, which in ((CATEGORY_KEYS[0], "-", "search_required"),
                                  (CATEGORY_KEYS[1], "--", "search_free")):  # fmt: skip
            x, y = _series(steps, key)
            label = f"{RUN_LABELS.get(run, run)}: {which}"
            axis.plot(x, y, style, color=colour, marker="o", markersize=3, label=label)
    return _save_share_per_step(plt, figure, axis, "search ratio of the rollouts", path)


def _behaviour(plt, evals: dict[str, Any], path: Path) -> Path:
    models = [m for m in evals if "ondemand" in evals[m]]
    figure, axis = plt.subplots(figsize=(1.8 + 1.6 * len(models), 3.8))
    bottoms = [0.0] * len(models)
    labels = [("before RL\n" if m == "sft" else "after RL\n") + MODEL_LABELS.get(m, m)
              for m in models]  # fmt: skip
    for behaviour in BEHAVIOURS:
        shares = [(evals[m]["ondemand"].get("behaviour") or {}).get(behaviour, 0.0) for m in models]
        axis.bar(labels, shares, bottom=bottoms, color=COLOURS[behaviour],
                 label=behaviour.replace("_", " "))  # fmt: skip
        bottoms = [b + s for b, s in zip(bottoms, shares, strict=True)]
    axis.set_ylim(0, 1)
    axis.set_ylabel("share of test questions (on-demand)")
    axis.tick_params(axis="x", labelsize=7)
    axis.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1, 1))
    return _save(plt, figure, path)


def _correct_no_search(plt, results: dict[str, Any], path: Path) -> Path:
    figure, axis = plt.subplots(figsize=(6, 3.6))
    for run, steps in results["grpo_steps"].items():
        x, y = _series(steps, "correct_no_search")
        axis.plot(x, y, marker="o", markersize=3, label=f"{RUN_LABELS.get(run, run)} (rollouts)")
    for model, style in (("sft", ":"), ("main", "--")):
        share = (results["evals"].get(model, {}).get("ondemand", {}).get("behaviour") or {}).get(
            "correct_no_search"
        )
        if share is not None:
            label = f"{MODEL_LABELS[model]}, test eval"
            axis.axhline(share, linestyle=style, color="grey", label=label)
    return _save_share_per_step(plt, figure, axis, "correct without search", path)


def _save_share_per_step(plt, figure, axis, ylabel: str, path: Path) -> Path:
    """Finish a plot of a share (0..1) against the GRPO step, and save it."""
    axis.set_xlabel("GRPO step")
    axis.set_ylabel(ylabel)
    axis.set_ylim(-0.02, 1.02)
    axis.grid(alpha=0.3)
    axis.legend(fontsize=7)
    return _save(plt, figure, path)


def _save(plt, figure, path: Path) -> Path:
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path
