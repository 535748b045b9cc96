"""GRPO update throughput (tokens/s) of the nano policy and its share of the machine's fp32
matmul peak, both measured in the same run.

    python bench/grpo_throughput.py                 # 16 x 256 tokens in one micro-batch, KL on
    python bench/grpo_throughput.py --kl-coef 0     # no reference forward

What is counted: model FLOPs = 6 * P * tokens for the policy forward + backward (2 + 4)
plus 2 * P * tokens for the reference forward when the KL is on, with P the language
model's parameters (134.5 M, the tied lm_head included; the vision tower sees no image
here and is excluded). Attention score FLOPs (~2% at 256 tokens) and the fp32
log-softmax over the vocabulary are NOT counted: they are overhead the update must beat.
Peak = the median FLOP/s of a large fp32 torch.matmul (2 * n^3 per product), timed
between the update steps so both see the same machine load. Batches are synthetic
text-only trajectories: prompt tokens with loss mask 0, then sampled tokens with mask 1.
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import time

import torch

from mmsr.models.loading import load_policy
from mmsr.rollout.trajectory import Trajectory
from mmsr.train.config import GRPOOptions, ModelOptions, OptimOptions
from mmsr.train.grpo import grpo_update
from mmsr.train.lora import prepare_trainable
from mmsr.train.optim import build_optimizer, build_scheduler


def matmul_flops_per_s(n: int = 2048, repeats: int = 7) -> float:
    a, b = torch.randn(n, n), torch.randn(n, n)
    torch.matmul(a, b)  # warm-up
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        torch.matmul(a, b)
        times.append(time.perf_counter() - started)
    return 2 * n**3 / statistics.median(times)


def synthetic_batch(n: int, length: int, prompt: int, vocab: int, seed: int) -> list[Trajectory]:
    generator = torch.Generator().manual_seed(seed)
    trajectories = []
    for row in range(n):
        ids = torch.randint(0, vocab, (length,), generator=generator)
        mask = torch.zeros(length, dtype=torch.long)
        mask[prompt:] = 1
        old_logp = torch.full((length,), -10.0) * mask
        trajectories.append(Trajectory.bare(f"b{row}", row // 4, ids, mask, old_logp=old_logp))
    return trajectories


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=16, help="trajectories per update")
    parser.add_argument("--length", type=int, default=256, help="tokens per trajectory")
    parser.add_argument("--prompt", type=int, default=64, help="prompt tokens (mask 0)")
    parser.add_argument("--micro-batch", type=int, default=16, help="rows per forward")
    parser.add_argument("--kl-coef", type=float, default=0.001)
    parser.add_argument("--steps", type=int, default=3, help="timed update steps (median)")
    parser.add_argument("--json", action="store_true", help="print one JSON line")
    args = parser.parse_args()

    policy = load_policy("nano", device="cpu")
    model = policy.model
    ref_model = copy.deepcopy(model).eval().requires_grad_(False) if args.kl_coef else None
    model = prepare_trainable(model, ModelOptions(freeze_vision=True))
    lm_params = sum(p.numel() for n, p in model.named_parameters() if ".visual." not in f".{n}")
    optim = OptimOptions(lr=1e-6)
    optimizer = build_optimizer(model, optim)
    scheduler = build_scheduler(optimizer, optim, 100)
    options = GRPOOptions(kl_coef=args.kl_coef, micro_batch_size=args.micro_batch)
    vocab = model.get_input_embeddings().num_embeddings
    tokens = args.batch * args.length
    flops_per_step = (6 + (2 if args.kl_coef else 0)) * lm_params * tokens
    step_times, peaks = [], [matmul_flops_per_s()]
    for step in range(args.steps + 1):  # step 0 warms up allocators and kernels
        trajectories = synthetic_batch(args.batch, args.length, args.prompt, vocab, step)
        rewards = torch.rand(args.batch, generator=torch.Generator().manual_seed(step))
        started = time.perf_counter()
        grpo_update(
            model, trajectories, rewards, optimizer, scheduler, options, pad_id=0,
            ref_model=ref_model,
        )  # fmt: skip
        if step:
            step_times.append(time.perf_counter() - started)
        peaks.append(matmul_flops_per_s())
    step_s = statistics.median(step_times)
    peak = statistics.median(peaks)
    achieved = flops_per_step / step_s
    result = {
        "batch": args.batch,
        "length": args.length,
        "micro_batch": args.micro_batch,
        "kl_coef": args.kl_coef,
        "lm_params": lm_params,
        "threads": torch.get_num_threads(),
        "step_s_median": round(step_s, 2),
        "step_s_all": [round(t, 2) for t in step_times],
        "tokens_per_s": round(tokens / step_s, 1),
        "achieved_gflops": round(achieved / 1e9, 1),
        "matmul_peak_gflops": round(peak / 1e9, 1),
        "matmul_peak_all": [round(p / 1e9, 1) for p in peaks],
        "share_of_peak": round(achieved / peak, 3),
    }
    print_result(result, args.json)


def print_result(result: dict, as_json: bool) -> None:
    """One JSON line, or one aligned `key: value` line per figure."""
    if as_json:
        print(json.dumps(result))
    else:
        for key, value in result.items():
            print(f"{key:>20}: {value}")


if __name__ == "__main__":
    main()
