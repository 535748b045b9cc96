"""Rollouts sampled from the fp32 policy vs from its bf16 copy (`EngineConfig.sample_dtype`).

    python bench/sample_dtype.py --model runs/replicate-v14/sft/final \
        --data runs/replicate-v14/balance-train/balanced.parquet \
        --eval-data runs/replicate-v14/balance-test/balanced.parquet --threads 2 --repeats 3

1. GRPO's rollouts: the same questions x n at the replication's temperature (0.7, 96 tokens
   a turn, the local search tools), alternating fp32 and bf16 sampling: wall time and
   sampled tokens per second, medians and their ratio.
2. How far each sampler's old_logp lies from the log-probs GRPO's update computes (the
   fp32 policy under bf16 autocast, the replication's `matmul_dtype`) on the same
   trajectories: mean |difference| over sampled tokens, and the share of tokens whose
   ratio starts outside PPO's clip range [0.8, 1.2].
3. The evaluation's setting: greedy on-demand answers to `--eval-questions` questions by
   each: wall time, and how many answers and verdicts agree.
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings

import torch
from rollout_setup import add_rollout_options, load_rollout_inputs

from mmsr.eval.modes import EvalConfig, trajectories_for
from mmsr.eval.samples import load_eval_samples
from mmsr.models.precision import matmul_precision
from mmsr.reward import RewardConfig, answer_matches
from mmsr.rollout.batch import collate
from mmsr.rollout.engine import EngineConfig, RolloutEngine
from mmsr.rollout.logprobs import token_logprobs

warnings.filterwarnings("ignore", message="Palette images")
DTYPES = ("fp32", "bf16")


def logp_gap(policy, trajectories, temperature: float) -> tuple[float, float]:
    """(mean |learner log p - old_logp|, share of ratios outside [0.8, 1.2]) over the
    sampled tokens, the learner being the policy under bf16 autocast."""
    pad_id = policy.tokenizer.convert_tokens_to_ids("<|im_end|>")
    gaps = []
    for start in range(0, len(trajectories), 4):
        batch = collate(trajectories[start : start + 4], pad_id)
        with torch.inference_mode(), matmul_precision("cpu", "bf16"):
            logp, _ = token_logprobs(policy.model, batch, temperature)
        mask = batch.loss_mask.bool()
        gaps.append((logp[mask] - batch.old_logp[mask]).float())
    gap = torch.cat(gaps)
    outside = ((gap.exp() - 1).abs() > 0.2).float().mean()
    return float(gap.abs().mean()), float(outside)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_rollout_options(parser, repeats=3)
    parser.add_argument("--eval-data", default="world:test", help="world:<split> or parquet")
    parser.add_argument("--eval-questions", type=int, default=16)
    args = parser.parse_args()
    policy, tools, samples = load_rollout_inputs(args)
    times: dict[str, list[float]] = {d: [] for d in DTYPES}
    speeds: dict[str, list[float]] = {d: [] for d in DTYPES}
    last = {}
    for repeat in range(args.repeats):
        for dtype in DTYPES:
            config = EngineConfig(max_new_tokens=96, batch_size=16, temperature=0.7,
                                  sample_dtype=dtype)  # fmt: skip
            began = time.perf_counter()
            engine = RolloutEngine(policy, tools, config)
            trajectories = engine.rollout(samples, n=args.n, seed=1 + repeat)
            seconds = time.perf_counter() - began
            tokens = sum(t.n_sampled_tokens for t in trajectories)
            times[dtype].append(seconds)
            speeds[dtype].append(tokens / seconds)
            last[dtype] = trajectories
            searched = sum(t.n_image_search + t.n_text_search > 0 for t in trajectories)
            print(f"rollout {repeat + 1} {dtype}: {seconds:.1f} s, {tokens} tokens "
                  f"({tokens / seconds:.1f}/s), {searched} of {len(trajectories)} searched",
                  flush=True)  # fmt: skip
    median = {d: statistics.median(speeds[d]) for d in DTYPES}
    ratio = median["bf16"] / median["fp32"]
    print(f"rollout tokens/s, medians of {args.repeats}: fp32 {median['fp32']:.1f}, bf16 "
          f"{median['bf16']:.1f}: bf16 sampling {ratio:.2f}x")  # fmt: skip
    for dtype in DTYPES:
        mean_gap, outside = logp_gap(policy, last[dtype], 0.7)
        print(f"{dtype} sampler vs the bf16-autocast learner: mean |d log p| {mean_gap:.4f}, "
              f"{outside:.2%} of ratios outside [0.8, 1.2]")  # fmt: skip

    questions = load_eval_samples(args.eval_data)[: args.eval_questions]
    answers = {}
    for dtype in DTYPES:
        config = EvalConfig(mode="ondemand", max_new_tokens=96, sample_dtype=dtype)
        began = time.perf_counter()
        trajectories = trajectories_for(policy, tools, questions, config)
        seconds = time.perf_counter() - began
        answers[dtype] = [t.answer for t in trajectories]
        right = sum(
            answer is not None and answer_matches(answer, [q.answer, *q.aliases], RewardConfig())
            for answer, q in zip(answers[dtype], questions, strict=True)
        )
        print(f"greedy on demand, {dtype}: {seconds:.1f} s, {right} of {len(questions)} right",
              flush=True)  # fmt: skip
    same = sum(a == b for a, b in zip(answers["fp32"], answers["bf16"], strict=True))
    print(f"greedy answers the same in fp32 and bf16: {same} of {len(questions)}")


if __name__ == "__main__":
    main()
