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
searching more or less. `--by-type` adds, for the first floor, the push on each question
type: nano decides by the type (stop 33), so these say which types a run was taught to
search for and which to answer.
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


def searched(row: dict) -> bool:
    return row["n_image_search"] + row["n_text_search"] > 0


def signed_advantages(rows: list[dict], floor: float) -> list[float]:
    """Each rollout's advantage, signed + when it searched and - when it answered at once."""
    keys = sorted({(row["step"], row["group"]) for row in rows})
    group_of = {key: i for i, key in enumerate(keys)}
    rewards = torch.tensor([float(row["reward"]["score"]) for row in rows])
    groups = torch.tensor([group_of[(row["step"], row["group"])] for row in rows])
    advantages = group_advantages(rewards, groups, std_floor=floor)
    return [
        advantage if searched(row) else -advantage
        for row, advantage in zip(rows, advantages.tolist(), strict=True)
    ]


def net_push(rows: list[dict], floor: float) -> dict[str, float]:
    """Net push towards searching, in total and by the question's balance category."""
    push: dict[str, float] = defaultdict(float)
    for row, signed in zip(rows, signed_advantages(rows, floor), strict=True):
        push["all"] += signed
        push[row.get("category") or "unlabelled"] += signed
    return dict(push)


def row_type(row: dict) -> str:
    """The rollout's question type; logs from before it was recorded (stop 34) have only
    the question id, which for the world is world-<country>-<type>."""
    if row.get("qtype"):
        return row["qtype"]
    sample_id = str(row.get("sample_id", ""))
    return sample_id.split("-", 2)[2] if sample_id.count("-") >= 2 else "unknown"


def push_by_type(rows: list[dict], floor: float) -> dict[str, dict[str, float]]:
    """{type: {"draws", "push", "searched"}}: groups drawn, net push towards searching and
    the share of the type's rollouts that searched, types sorted."""
    by_type: dict[str, list[tuple[dict, float]]] = defaultdict(list)
    for row, signed in zip(rows, signed_advantages(rows, floor), strict=True):
        by_type[row_type(row)].append((row, signed))
    return {
        kind: {
            "draws": len({(row["step"], row["group"]) for row, _ in pairs}),
            "push": sum(signed for _, signed in pairs),
            "searched": sum(searched(row) for row, _ in pairs) / len(pairs),
        }
        for kind, pairs in sorted(by_type.items())
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", type=Path, required=True, help="a GRPO run folder")
    parser.add_argument(
        "--from-step", type=int, default=1, help="only the rollouts of this step on"
    )
    parser.add_argument("--floors", type=float, nargs="+", default=[0.0, 0.05, 0.06, 0.07, 0.1])
    parser.add_argument(
        "--by-type", action="store_true", help="also the push by question type (first floor)"
    )
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
    if args.by_type:
        print(f"\nBy question type, std floor {args.floors[0]:g}:\n")
        print("| question type | groups drawn | rollouts that searched | net push to search |")
        print("| --- | ---: | ---: | ---: |")
        for kind, cell in push_by_type(rows, args.floors[0]).items():
            print(f"| {kind} | {cell['draws']} | {cell['searched']:.0%} | {cell['push']:+.1f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
