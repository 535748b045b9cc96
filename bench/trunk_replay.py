"""Training steps that recompute the frozen bottom layers vs steps that replay them.

    python bench/trunk_replay.py --model runs/replicate-s80/sft/final \
        --data runs/replicate-s80/balance-train/balanced.parquet --threads 2

One rollout (questions x n with the local search tools, the engine recording the frozen
layers' output) gives trajectories of the shapes SFT and GRPO train on (search turns
with result thumbnails, answers); the same rollout is also timed without recording.
Then, from the same weights each time, alternating:
- SFT step: full forward (`trunk_cache` off, every step before) vs replayed from a cache
  filled by one earlier pass (SFT's 2nd and later epochs);
- GRPO update (KL to a frozen reference): recomputing every layer (`replay_trunk` off)
  vs replaying the sampler's record for the policy and the reference.
Prints each time and loss (the losses must agree) and the median ratios.
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
from mmsr.train.config import GRPOOptions, ModelOptions, OptimOptions, SFTConfig
from mmsr.train.grpo import grpo_update
from mmsr.train.lora import prepare_trainable
from mmsr.train.optim import build_optimizer, build_scheduler
from mmsr.train.sft import sft_step
from mmsr.train.shared_trunk import TrunkCache

warnings.filterwarnings("ignore", message="Palette images")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_rollout_options(parser, repeats=3)
    parser.add_argument("--matmul-dtype", default="bf16", choices=("bf16", "fp32"))
    args = parser.parse_args()
    policy, tools, samples = load_rollout_inputs(args)
    reference = copy.deepcopy(policy.model).eval().requires_grad_(False)
    options = ModelOptions(freeze_layers=args.freeze_layers, matmul_dtype=args.matmul_dtype)
    model = prepare_trainable(policy.model, options)
    config = EngineConfig(max_new_tokens=96, batch_size=16, temperature=0.7)
    rollout_s = {}
    for record in (0, args.freeze_layers):
        began = time.perf_counter()
        engine = RolloutEngine(policy, tools, config, record_trunk=record)
        trajectories = engine.rollout(samples, n=args.n, seed=1)
        rollout_s[record] = time.perf_counter() - began
    print(f"trajectory lengths {sorted(t.length for t in trajectories)}")
    print(f"rollout: {rollout_s[0]:.1f} s plain, {rollout_s[args.freeze_layers]:.1f} s "
          "recording the frozen layers' output")  # fmt: skip
    keys = list(range(len(trajectories)))
    weights = copy.deepcopy(model.state_dict())
    pad_id = policy.tokenizer.convert_tokens_to_ids("<|im_end|>")
    sft = SFTConfig(batch_size=len(trajectories), model=options)
    rewards = torch.rand(len(trajectories), generator=torch.Generator().manual_seed(0))
    cache = TrunkCache(model, args.freeze_layers)

    def sft_time(replay: bool) -> tuple[float, float]:
        model.load_state_dict(weights)
        optimizer = build_optimizer(model, OptimOptions(lr=1e-4))
        scheduler = build_scheduler(optimizer, OptimOptions(lr=1e-4), 10)
        began = time.perf_counter()
        loss = sft_step(model, trajectories, optimizer, scheduler, sft, pad_id, None,
                        cache if replay else None, keys if replay else None)["loss"]  # fmt: skip
        return time.perf_counter() - began, loss

    def grpo_time(replay: bool) -> tuple[float, float]:
        model.load_state_dict(weights)
        optim = OptimOptions(lr=5e-5)
        optimizer = build_optimizer(model, optim)
        grpo = GRPOOptions(kl_coef=0.001, micro_batch_size=16, micro_batch_tokens=8192,
                           replay_trunk=replay)  # fmt: skip
        began = time.perf_counter()
        metrics = grpo_update(
            model, trajectories, rewards, optimizer, build_scheduler(optimizer, optim, 10),
            grpo, pad_id=pad_id, ref_model=reference,
        )  # fmt: skip
        return time.perf_counter() - began, metrics["loss"]

    first, _ = sft_time(True)  # SFT's first epoch: full forwards that also fill the cache
    print(f"SFT step filling the cache: {first:.1f} s")
    for name, timed in (("SFT step", sft_time), ("GRPO update", grpo_time)):
        seconds: dict[bool, list[float]] = {False: [], True: []}
        for repeat in range(args.repeats):
            for replay in (False, True):
                took, loss = timed(replay)
                seconds[replay].append(took)
                label = "replayed" if replay else "full"
                print(f"[{repeat + 1}/{args.repeats}] {name} {label}: {took:.1f} s, "
                      f"loss {loss:.6f}", flush=True)  # fmt: skip
        full, replayed = (statistics.median(seconds[k]) for k in (False, True))
        print(f"median {name}: full {full:.1f} s, replayed {replayed:.1f} s: "
              f"{full / replayed:.2f}x faster")  # fmt: skip


if __name__ == "__main__":
    main()
