"""GRPO update time with count-only micro-batches vs a padded-token cap, side by side.

    python bench/grpo_microbatch_ab.py --model runs/replicate-nano/sft/final \
        --data runs/replicate-nano/balance-train/balanced.parquet --threads 2

One rollout (questions x n, the configured local search tools), then the same GRPO update
on those trajectories, alternating `grpo.micro_batch_tokens` 0 (every trajectory in one
forward of `--micro-batch` rows, padded to the longest) and `--tokens` (rows x longest
<= tokens per forward), from the same weights each time. Prints each update's time and
loss (the loss must agree: accumulation is exact) and the median ratio. A policy that
searches gives the mixed lengths (a direct answer ~250 tokens, five thumbnails ~1,900)
where the cap matters; an untrained nano rarely searches.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time
import warnings

import torch
from rollout_setup import add_rollout_options, load_rollout_inputs

from mmsr.rollout.engine import EngineConfig, RolloutEngine
from mmsr.train.config import GRPOOptions, ModelOptions, OptimOptions
from mmsr.train.grpo import grpo_update
from mmsr.train.lora import prepare_trainable
from mmsr.train.optim import build_optimizer, build_scheduler

warnings.filterwarnings("ignore", message="Palette images")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_rollout_options(parser, repeats=2)
    parser.add_argument("--micro-batch", type=int, default=16, help="rows per forward at most")
    parser.add_argument("--tokens", type=int, default=8192, help="the padded-token cap")
    args = parser.parse_args()
    if args.tokens < 1:
        raise SystemExit("--tokens must be >= 1")
    policy, tools, samples = load_rollout_inputs(args)
    config = EngineConfig(max_new_tokens=96, max_total_tokens=2048, batch_size=16)
    started = time.perf_counter()
    trajectories = RolloutEngine(policy, tools, config).rollout(samples, n=args.n, seed=1)
    lengths = sorted(t.length for t in trajectories)
    print(f"rollout {time.perf_counter() - started:.1f} s; trajectory lengths {lengths}")

    rewards = torch.rand(len(trajectories), generator=torch.Generator().manual_seed(0))
    reference = copy.deepcopy(policy.model).eval().requires_grad_(False)
    options = ModelOptions(freeze_vision=True, freeze_layers=args.freeze_layers)
    model = prepare_trainable(policy.model, options)
    weights = copy.deepcopy(model.state_dict())
    pad_id = policy.tokenizer.convert_tokens_to_ids("<|im_end|>")
    seconds: dict[int, list[float]] = {0: [], args.tokens: []}
    for repeat in range(args.repeats):
        for cap in seconds:
            model.load_state_dict(weights)
            optim = OptimOptions(lr=5e-5)
            optimizer = build_optimizer(model, optim)
            grpo = GRPOOptions(
                kl_coef=0.001, micro_batch_size=args.micro_batch, micro_batch_tokens=cap
            )
            began = time.perf_counter()
            metrics = grpo_update(
                model, trajectories, rewards, optimizer, build_scheduler(optimizer, optim, 10),
                grpo, pad_id=pad_id, ref_model=reference,
            )  # fmt: skip
            seconds[cap].append(time.perf_counter() - began)
            print(
                f"[{repeat + 1}/{args.repeats}] micro_batch_tokens {cap}: update "
                f"{seconds[cap][-1]:.1f} s, loss {metrics['loss']:.6f}",
                flush=True,
            )
    count_only, capped = (statistics.median(seconds[c]) for c in seconds)
    print(
        f"median update: count only {count_only:.1f} s, capped at {args.tokens} tokens "
        f"{capped:.1f} s: {count_only / capped:.2f}x faster"
    )


if __name__ == "__main__":
    main()
