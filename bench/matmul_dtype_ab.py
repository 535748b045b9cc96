"""GRPO update time of nano with bf16 matmuls (`--matmul-dtype bf16`) against fp32, side by
side in one run, and how far the bf16 log-probs stray from the fp32 ones.

    python bench/matmul_dtype_ab.py                  # the replication's update shape
    python bench/matmul_dtype_ab.py --rounds 5 --json

The replication's setup: nano with its lowest 22 of 30 layers frozen, KL on (the reference
shares the frozen trunk), micro-batches capped at 8,192 tokens. Batches are synthetic
text-only trajectories shaped like search trajectories: a long prompt + observations
(loss mask 0) and a short sampled part (mask 1). Each round runs the same batch through
both precisions, alternating which goes first, each on its own copy of the same weights,
so the two see the same work and the same machine load; the figure is the ratio of the
medians. The log-prob gap is measured on the batch's sampled tokens with the untrained
weights: what GRPO's ratio sees when the rollout was sampled in fp32.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import time
from pathlib import Path

import torch

from mmsr.models.loading import load_policy
from mmsr.models.precision import matmul_precision
from mmsr.rollout.batch import collate
from mmsr.rollout.logprobs import token_logprobs
from mmsr.train.config import GRPOOptions, ModelOptions, OptimOptions
from mmsr.train.grpo import grpo_update
from mmsr.train.lora import prepare_trainable
from mmsr.train.optim import build_optimizer, build_scheduler

sys.path.insert(0, str(Path(__file__).parent))
from grpo_throughput import print_result, synthetic_batch  # noqa: E402

DTYPES = ("fp32", "bf16")


def logprob_gap(model, trajectories) -> dict[str, float]:
    batch = collate(trajectories, pad_id=0)
    wanted = batch.loss_mask[:, 1:].bool()
    with torch.no_grad():
        exact, _ = token_logprobs(model, batch, where=batch.loss_mask)
        with matmul_precision("cpu", "bf16"):
            mixed, _ = token_logprobs(model, batch, where=batch.loss_mask)
    gap = (mixed - exact)[:, 1:][wanted].abs()
    return {
        "logp_gap_mean": round(float(gap.mean()), 4),
        "logp_gap_p99": round(float(gap.quantile(0.99)), 4),
        "share_past_clip_0.2": round(float((gap > 0.2).float().mean()), 4),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=16, help="trajectories per update")
    parser.add_argument("--length", type=int, default=1024, help="tokens per trajectory")
    parser.add_argument("--sampled", type=int, default=128, help="sampled tokens (mask 1)")
    parser.add_argument("--freeze-layers", type=int, default=22)
    parser.add_argument("--rounds", type=int, default=3, help="timed rounds (median)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", action="store_true", help="print one JSON line")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    policy = load_policy("nano", device="cpu")
    base = policy.model
    reference = copy.deepcopy(base).eval().requires_grad_(False)
    options = GRPOOptions(kl_coef=0.001, micro_batch_size=16, micro_batch_tokens=8192)
    optim = OptimOptions(lr=1e-6)
    runs = {}
    for dtype in DTYPES:
        model = prepare_trainable(
            copy.deepcopy(base), ModelOptions(freeze_layers=args.freeze_layers)
        )
        optimizer = build_optimizer(model, optim)
        runs[dtype] = (model, optimizer, build_scheduler(optimizer, optim, 100))
    vocab = base.get_input_embeddings().num_embeddings
    prompt = args.length - args.sampled  # the last `sampled` tokens are the policy's
    gap = logprob_gap(runs["fp32"][0], synthetic_batch(8, args.length, prompt, vocab, 99))
    times: dict[str, list[float]] = {dtype: [] for dtype in DTYPES}
    for round_ in range(args.rounds + 1):  # round 0 warms up allocators and kernels
        trajectories = synthetic_batch(args.batch, args.length, prompt, vocab, round_)
        rewards = torch.rand(args.batch, generator=torch.Generator().manual_seed(round_))
        for dtype in DTYPES if round_ % 2 == 0 else DTYPES[::-1]:
            model, optimizer, scheduler = runs[dtype]
            started = time.perf_counter()
            with matmul_precision("cpu", dtype):
                grpo_update(
                    model, trajectories, rewards, optimizer, scheduler, options, pad_id=0,
                    ref_model=reference,
                )  # fmt: skip
            if round_:
                times[dtype].append(time.perf_counter() - started)
    medians = {dtype: statistics.median(times[dtype]) for dtype in DTYPES}
    result = {
        "batch": args.batch,
        "length": args.length,
        "sampled": args.sampled,
        "threads": torch.get_num_threads(),
        "update_s_fp32": round(medians["fp32"], 2),
        "update_s_bf16": round(medians["bf16"], 2),
        "all_fp32": [round(t, 2) for t in times["fp32"]],
        "all_bf16": [round(t, 2) for t in times["bf16"]],
        "speedup": round(medians["fp32"] / medians["bf16"], 2),
        **gap,
    }
    print_result(result, args.json)


if __name__ == "__main__":
    main()
