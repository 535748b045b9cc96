"""Which way GRPO's advantages push the search decision, for a floor under the group std.

    python bench/decision_push.py --run runs/replicate-v18/grpo-main --floors 0 0.06 0.1
    python bench/decision_push.py --run runs/replicate-v19/grpo-main --from-step 7

Reads a GRPO run's `rollouts.jsonl` (its rewards as scored) and recomputes every group's
advantages as `mmsr.train.grpo.group_advantages` would with each `--floors` value
(`GRPOOptions.adv_std_floor`; 0: the plain group std). A rollout that searched pushes the
decision towards searching by its advantage, one that answered at once pushes it away by
its own: the sum over all rollouts is the net push (> 0: towards searching), printed
apart for the questions the balancing model knew (search_free) and did not
(search_required). A first-order reading on rollouts already sampled, not a rerun: it
shows whether, from the state those rollouts were drawn in, a floor pushes towards
searching more or less.
"""

from __future__ import annotations

import argparse
from collections import defaultdict
from pathlib import Path

import torch

from mmsr.train.grpo import group_advantages
from mmsr.train.metrics import read_metrics


def read_rollouts(path: Path) -> list[dict]:
    if not path.is_file():
        raise SystemExit(f"{path}: no rollouts (train with run.save_rollouts)")
    return read_metrics(path)  # the same JSON-lines layout as metrics.jsonl


def net_push(rows: list[dict], floor: float) -> dict[str, float]:
    """Net push towards searching, in total and by the question's balance category."""
    keys = sorted({(row["step"], row["group"]) for row in rows})
    group_of = {key: i for i, key in enumerate(keys)}
    rewards = torch.tensor([float(row["reward"]["score"]) for row in rows])
    groups = torch.tensor([group_of[(row["step"], row["group"])] for row in rows])
    advantages = group_advantages(rewards, groups, std_floor=floor)
    push: dict[str, float] = defaultdict(float)
    for row, advantage in zip(rows, advantages.tolist(), strict=True):
        searched = row["n_image_search"] + row["n_text_search"] > 0
        signed = advantage if searched else -advantage
        push["all"] += signed
        push[row.get("category") or "unlabelled"] += signed
    return dict(push)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", type=Path, required=True, help="a GRPO run folder")
    parser.add_argument(
        "--from-step", type=int, default=1, help="only the rollouts of this step on"
    )
    parser.add_argument("--floors", type=float, nargs="+", default=[0.0, 0.05, 0.06, 0.07, 0.1])
    args = parser.parse_args(argv)
    if any(floor < 0 for floor in args.floors):
        parser.error(f"--floors {args.floors}: every floor must be >= 0")
    rows = [
        row for row in read_rollouts(args.run / "rollouts.jsonl") if row["step"] >= args.from_step
    ]
    if not rows:
        parser.error(f"--from-step {args.from_step}: no rollouts from that step on")
    steps = {row["step"] for row in rows}
    print(f"{args.run}: {len(rows)} rollouts, steps {min(steps)}-{max(steps)}")
    print("| std floor | net push to search | search_free questions | search_required questions |")
    print("| ---: | ---: | ---: | ---: |")
    for floor in args.floors:
        push = net_push(rows, floor)
        free, required = push.get("search_free", 0.0), push.get("search_required", 0.0)
        print(f"| {floor:g} | {push['all']:+.1f} | {free:+.1f} | {required:+.1f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
