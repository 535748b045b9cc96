"""mmsr's GRPO update side by side with TRL's GRPOTrainer: same model (nano, 134.5 M, fp32,
CPU), same batch (4 prompts x 4 generations), same sequence lengths, same objective
settings (beta / kl_coef 0.001, clip 0.2, token-level loss, 2 micro-batches of 8).

    pip install -e '.[bench]'        # trl (1.16.0 works with transformers 5.23)
    python bench/grpo_vs_trl.py      # ~6 minutes on 2 cores

What is compared: the UPDATE, i.e. everything a GRPO step does after sampling: reference
log-probs, the policy forward/backward over all micro-batches and the optimizer step.
TRL's step time is measured with a callback around each `training_step`, and the time
spent inside its `_generate` (HF `generate` sampling plus reward scoring) is subtracted.
TRL is told to sample exactly `--completion` tokens (min_new_tokens), so both trainers
process identical [16, prompt + completion] batches; mmsr runs `grpo_update` on
trajectories of those shapes. Medians over `--steps` steps after one warm-up step each.
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from grpo_throughput import synthetic_batch  # noqa: E402

from mmsr.models.loading import load_policy  # noqa: E402
from mmsr.train.config import GRPOOptions, ModelOptions, OptimOptions  # noqa: E402
from mmsr.train.grpo import grpo_update  # noqa: E402
from mmsr.train.lora import prepare_trainable  # noqa: E402
from mmsr.train.optim import build_optimizer, build_scheduler  # noqa: E402

PROMPTS = [
    "Name a country in Europe and its capital.",
    "Which ocean is the largest on Earth?",
    "What colours are on the flag of Italy?",
    "Give one word that rhymes with 'search'.",
]


def chat_prompt(tokenizer, text: str) -> str:
    messages = [{"role": "user", "content": text}]
    return tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)


def reward_letter_e(completions, **kwargs) -> list[float]:
    """A trivial reward (share of the letter e): only its cost matters here."""
    texts = [c if isinstance(c, str) else c[-1]["content"] for c in completions]
    return [t.count("e") / max(len(t), 1) for t in texts]


def time_trl(args, policy) -> dict:
    from datasets import Dataset
    from transformers import TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    tokenizer = policy.tokenizer
    dataset = Dataset.from_list([{"prompt": [{"role": "user", "content": p}]} for p in PROMPTS])
    config = GRPOConfig(
        output_dir=str(Path(args.out) / "trl"),
        per_device_train_batch_size=8,
        gradient_accumulation_steps=2,  # 16 completions per optimizer step, 8 per forward
        num_generations=4,
        max_completion_length=args.completion,
        generation_kwargs={"min_new_tokens": args.completion},
        beta=0.001,
        epsilon=0.2,
        loss_type="dapo",  # token-level normalisation over the whole batch = mmsr token-mean
        scale_rewards="group",
        learning_rate=1e-6,
        lr_scheduler_type="constant",
        max_steps=args.steps + 1,
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        use_cpu=True,
        bf16=False,
        gradient_checkpointing=False,  # TRL's default is on (recompute); mmsr does not recompute
        seed=0,
        dataloader_num_workers=0,
        log_completions=False,
    )
    trainer = GRPOTrainer(
        model=copy.deepcopy(policy.model),
        reward_funcs=reward_letter_e,
        args=config,
        train_dataset=dataset,
        processing_class=tokenizer,
    )
    generate_s: list[float] = []
    original = trainer._generate

    def timed_generate(*a, **k):
        started = time.perf_counter()
        result = original(*a, **k)
        generate_s.append(time.perf_counter() - started)
        return result

    trainer._generate = timed_generate
    steps: list[float] = []
    shapes: list[int] = []

    class StepTimer(TrainerCallback):
        def on_step_begin(self, *a, **k):
            self.started = time.perf_counter()
            self.generated = len(generate_s)

        def on_step_end(self, *a, **k):
            steps.append(time.perf_counter() - self.started)
            shapes.append(sum(generate_s[self.generated :]))

    trainer.add_callback(StepTimer())
    trainer.train()
    updates = [s - g for s, g in zip(steps, shapes, strict=True)][1:]
    lengths = [row.get("completions/mean_length") for row in trainer.state.log_history]
    return {
        "trl_step_s_all": [round(s, 2) for s in steps[1:]],
        "trl_generate_s_all": [round(g, 2) for g in shapes[1:]],
        "trl_update_s_all": [round(u, 2) for u in updates],
        "trl_update_s_median": round(statistics.median(updates), 2),
        "trl_completion_mean_length": [x for x in lengths if x is not None],
    }


def time_mmsr(args, policy, prompt_tokens: int) -> dict:
    model = copy.deepcopy(policy.model)
    ref_model = copy.deepcopy(model).eval().requires_grad_(False)
    model = prepare_trainable(model, ModelOptions(freeze_vision=False))
    optim = OptimOptions(lr=1e-6, grad_clip=1.0)
    optimizer = build_optimizer(model, optim)
    scheduler = build_scheduler(optimizer, optim, 100)
    options = GRPOOptions(kl_coef=0.001, micro_batch_size=8, loss_agg="token-mean")
    vocab = model.get_input_embeddings().num_embeddings
    length = prompt_tokens + args.completion
    times = []
    for step in range(args.steps + 1):
        trajectories = synthetic_batch(16, length, prompt_tokens, vocab, step)
        rewards = torch.rand(16, generator=torch.Generator().manual_seed(step))
        started = time.perf_counter()
        grpo_update(
            model, trajectories, rewards, optimizer, scheduler, options, pad_id=0,
            ref_model=ref_model,
        )  # fmt: skip
        times.append(time.perf_counter() - started)
    return {
        "mmsr_update_s_all": [round(t, 2) for t in times[1:]],
        "mmsr_update_s_median": round(statistics.median(times[1:]), 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--completion", type=int, default=64, help="sampled tokens per row")
    parser.add_argument("--steps", type=int, default=2, help="timed steps after a warm-up")
    parser.add_argument("--out", default="/tmp/mmsr-bench-trl")
    args = parser.parse_args()
    import transformers
    import trl

    policy = load_policy("nano", device="cpu")
    tokenizer = policy.tokenizer
    # TRL left-pads prompts to the longest in the batch: use that length on the mmsr side.
    prompt_tokens = max(
        len(tokenizer(chat_prompt(tokenizer, p), add_special_tokens=False)["input_ids"])
        for p in PROMPTS
    )
    result = {
        "trl_version": trl.__version__,
        "transformers_version": transformers.__version__,
        "threads": torch.get_num_threads(),
        "batch": 16,
        "prompt_tokens": prompt_tokens,
        "completion_tokens": args.completion,
    }
    result.update(time_mmsr(args, policy, prompt_tokens))
    result.update(time_trl(args, policy))
    result["mmsr_speedup_vs_trl"] = round(
        result["trl_update_s_median"] / result["mmsr_update_s_median"], 2
    )
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
