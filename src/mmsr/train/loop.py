"""`mmsr train grpo`: questions -> rollouts (groups of n) -> rewards -> GRPO update -> logs.

Resumable: the run folder's latest checkpoint restores weights, optimizer, scheduler, RNG
and the data order, and the rollouts of step k are seeded by (seed, k), so a resumed run
takes exactly the steps an uninterrupted one would.
"""

from __future__ import annotations

import copy
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from mmsr.data.record import Sample
from mmsr.eval.records import question_type
from mmsr.models.precision import matmul_precision
from mmsr.train.checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint, save_final
from mmsr.train.config import DRAWS, GRPOConfig, config_to_dict, config_to_yaml
from mmsr.train.grpo import grpo_update
from mmsr.train.lora import count_parameters, prepare_trainable
from mmsr.train.metrics import MetricsLogger, RolloutLog, rollout_metrics
from mmsr.train.optim import build_optimizer, build_scheduler
from mmsr.train.shared_trunk import frozen_trunk_layers


@dataclass
class DataOrder:
    """Seeded epoch-wise shuffling of `n` questions; (epoch, position) is all its state."""

    n: int
    seed: int
    epoch: int = 0
    position: int = 0

    def _permutation(self) -> list[int]:
        return np.random.default_rng([self.seed, self.epoch]).permutation(self.n).tolist()

    def take(self, count: int) -> list[int]:
        """The next `count` indices (a new shuffled epoch starts when one runs out)."""
        picked: list[int] = []
        while len(picked) < count:
            order = self._permutation()
            need = count - len(picked)
            picked += order[self.position : self.position + need]
            self.position += need
            if self.position >= self.n:
                self.epoch, self.position = self.epoch + 1, 0
        return picked

    def state(self) -> dict[str, int]:
        return {"epoch": self.epoch, "position": self.position}

    def restore(self, state: dict[str, int]) -> None:
        self.epoch, self.position = int(state["epoch"]), int(state["position"])


@dataclass
class TypeRoundRobin:
    """Questions drawn one question type at a time (`GRPOConfig.draw = "by_type"`): every
    round visits each type once, in a seeded order of its own, and each type hands out its
    questions in seeded cycles. So every type comes up equally often, however few
    questions it has, and the questions of a step are of different types. The i-th draw
    is a function of (seed, i): `position`, the draws so far, is all its state."""

    types: Sequence[str]
    seed: int
    position: int = 0

    def __post_init__(self) -> None:
        if not self.types:
            raise ValueError("no questions to draw from")
        members: dict[str, list[int]] = {}
        for index, qtype in enumerate(self.types):
            members.setdefault(qtype, []).append(index)
        self._members = [members[qtype] for qtype in sorted(members)]

    def draw(self, i: int) -> int:
        """The question index of the i-th draw (0-based)."""
        rnd, slot = divmod(i, len(self._members))
        rng = np.random.default_rng([self.seed, 0, rnd])
        kind = int(rng.permutation(len(self._members))[slot])
        # Round r draws every type once, so this is the type's r-th draw.
        members = self._members[kind]
        cycle, at = divmod(rnd, len(members))
        cycle_order = np.random.default_rng([self.seed, 1, kind, cycle]).permutation(len(members))
        return members[int(cycle_order[at])]

    def take(self, count: int) -> list[int]:
        picked = [self.draw(i) for i in range(self.position, self.position + count)]
        self.position += count
        return picked

    def state(self) -> dict[str, int]:
        return {"position": self.position}

    def restore(self, state: dict[str, int]) -> None:
        self.position = int(state["position"])


def data_order(samples: Sequence[Sample], draw: str, seed: int) -> DataOrder | TypeRoundRobin:
    """How GRPO draws its questions (`GRPOConfig.draw`)."""
    if draw == "shuffle":
        return DataOrder(len(samples), seed)
    if draw == "by_type":
        return TypeRoundRobin([question_type(sample) for sample in samples], seed)
    raise ValueError(f"draw {draw!r} is not one of {DRAWS}")


def ground_truth(sample: Sample) -> list[str]:
    """What `mmsr.reward.compute_score` is given: the answer first, then its aliases."""
    return [sample.answer, *sample.aliases]


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def train_grpo(
    config: GRPOConfig,
    *,
    policy=None,
    tools=None,
    samples: Sequence[Sample] | None = None,
    console: Console | None = None,
    resume: bool = True,
    stop_after: int | None = None,
) -> Path:
    """Run (or resume) GRPO as `config` says; returns the run folder.

    `policy` / `tools` / `samples` override what the config would load (tests, notebooks);
    `stop_after` ends the process after that many steps in total, as if it were killed
    right after the checkpoint of that step (tests of resume)."""
    from mmsr.reward import compute_score
    from mmsr.rollout.engine import RolloutEngine

    console = console or Console()
    out = Path(config.run.out)
    out.mkdir(parents=True, exist_ok=True)
    config_yaml = config_to_yaml(config)
    (out / "config.yaml").write_text(config_yaml)
    console.rule("mmsr train grpo: resolved config")
    console.print(config_yaml, markup=False, highlight=False)

    seed_everything(config.run.seed)
    if policy is None:
        from mmsr.models.loading import load_policy

        policy = load_policy(config.model.policy, config.model.device, config.model.dtype, console)
    if samples is None:
        from mmsr.eval.samples import load_eval_samples

        samples = load_eval_samples(config.data)
    if tools is None and config.search_config != "none":
        from mmsr.search.config import SearchConfig
        from mmsr.search.tools import make_tools

        tools = make_tools(SearchConfig.load(config.search_config))
    base = policy.model
    # The reference is the policy before any update: a frozen copy, or under LoRA the same
    # weights with the adapters switched off (no second copy in memory).
    needs_copy = config.grpo.kl_coef > 0 and not config.model.lora
    ref_model = copy.deepcopy(base).eval().requires_grad_(False) if needs_copy else None
    model = prepare_trainable(base, config.model, seed=config.run.seed)
    trainable, total = count_parameters(model)
    console.print(f"trainable parameters: {trainable:,} of {total:,}")
    total_updates = config.steps * config.grpo.ppo_epochs
    optimizer = build_optimizer(model, config.optim)
    scheduler = build_scheduler(optimizer, config.optim, total_updates)
    order = data_order(samples, config.draw, config.run.seed)
    step = 0
    checkpoints = out / "checkpoints"
    found = latest_checkpoint(checkpoints) if resume else None
    if found is not None:
        state = load_checkpoint(found, model, optimizer, scheduler)
        step = int(state["step"])
        order.restore(state["data_order"])
        console.print(f"resumed from {found} (step {step})")
    record = frozen_trunk_layers(model) if config.grpo.replay_trunk else 0
    tokenizer = policy.tokenizer
    forcer = None
    if config.grpo.forced_search or config.grpo.forced_answer:
        from mmsr.rollout.forcing import DecisionForcer

        forcer = DecisionForcer(
            tokenizer, config.grpo.forced_search, config.grpo.forced_answer,
            config.engine.max_new_tokens, at=config.grpo.forced_at,
        )  # fmt: skip
    engine = RolloutEngine(policy, tools, config.engine, record_trunk=record, forcer=forcer)
    pad_id = tokenizer.pad_token_id
    pad_id = int(pad_id if pad_id is not None else tokenizer.convert_tokens_to_ids("<|im_end|>"))
    logger = MetricsLogger(
        out, config.run.tensorboard, config.run.wandb_project, config_to_dict(config), after=step
    )
    rollout_log = (
        RolloutLog(out / "rollouts.jsonl", after=step) if config.run.save_rollouts else None
    )
    last = config.steps if stop_after is None else min(config.steps, stop_after)
    columns = (
        TextColumn("GRPO"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
        TextColumn("{task.fields[info]}"),
    )  # fmt: skip
    try:
        with Progress(*columns, console=console, transient=False) as progress:
            task = progress.add_task("grpo", total=config.steps, completed=step, info="")
            while step < last:
                metrics = grpo_step(
                    config, step, engine, model, ref_model, optimizer, scheduler, samples,
                    order, pad_id, compute_score, ground_truth, rollout_log,
                )  # fmt: skip
                step += 1
                logger.log(step, metrics)
                info = (
                    f"reward {metrics['reward_mean']:.3f} acc {metrics['acc']:.2f} "
                    f"kl {metrics['kl']:.4f}"
                )
                progress.update(task, completed=step, info=info)
                if step % config.run.save_every == 0 or step == last:
                    save_checkpoint(
                        checkpoints, step, model, optimizer, scheduler,
                        {"data_order": order.state()}, config_yaml, config.run.keep_checkpoints,
                    )  # fmt: skip
    finally:
        logger.close()
        if rollout_log is not None:
            rollout_log.close()
    if step >= config.steps and config.run.save_final:
        final = save_final(model, policy.processor, out / "final")
        console.print(f"final model: {final}")
    return out


def grpo_step(
    config: GRPOConfig,
    step: int,
    engine,
    model,
    ref_model,
    optimizer,
    scheduler,
    samples: Sequence[Sample],
    order: DataOrder | TypeRoundRobin,
    pad_id: int,
    compute_score,
    truth,
    rollout_log: RolloutLog | None = None,
) -> dict[str, Any]:
    """One training step: rollouts, rewards, update; returns the step's metrics (and
    writes the step's rollouts to `rollout_log` when given)."""
    started = time.perf_counter()
    batch = [samples[i] for i in order.take(config.prompts_per_step)]
    # Step-seeded rollouts: a resumed run samples exactly what an uninterrupted one would.
    trajectories = engine.rollout(
        batch, n=config.grpo.group_size, seed=config.run.seed * 1_000_003 + step
    )
    rollout_s = time.perf_counter() - started
    extra = {"reward_config": config.reward, "step": step}
    asked = [batch[t.group] for t in trajectories]  # each trajectory's question
    scores = [
        compute_score(sample.source, t.solution_str, truth(sample), extra)
        for sample, t in zip(asked, trajectories, strict=True)
    ]
    if rollout_log is not None:
        rollout_log.write(step + 1, trajectories, scores, asked)
    rewards = torch.tensor([float(s["score"]) for s in scores])
    update_started = time.perf_counter()
    with matmul_precision(next(model.parameters()).device, config.model.matmul_dtype):
        update = grpo_update(
            model, trajectories, rewards, optimizer, scheduler, config.grpo,
            pad_id=pad_id, temperature=config.engine.temperature,
            grad_clip=config.optim.grad_clip, ref_model=ref_model,
        )  # fmt: skip
    engine.refresh()  # the next rollouts sample from the updated weights
    update_s = time.perf_counter() - update_started
    tokens = sum(t.length for t in trajectories)
    sampled = sum(t.n_sampled_tokens for t in trajectories)
    # The policy's behaviour is that of its free rollouts; forced ones are logged apart.
    decision = engine.forcer.decision if engine.forcer is not None else lambda _: None
    kinds = [decision(t.sample_index) for t in trajectories]
    free = [i for i, kind in enumerate(kinds) if kind is None]
    behaviour = rollout_metrics(
        [scores[i] for i in free], [trajectories[i] for i in free],
        [asked[i].category for i in free],
    )  # fmt: skip
    for kind, name in (("image_search", "forced_search"), ("answer", "forced_answer")):
        rows = [scores[i] for i, k in enumerate(kinds) if k == kind]
        if rows:
            behaviour[f"{name}_acc"] = sum(float(s["acc"]) for s in rows) / len(rows)
            behaviour[f"{name}_reward"] = sum(float(s["score"]) for s in rows) / len(rows)
            # Forced words (`forced_at="reasoning"`) leave the action to the model.
            searched = [s["n_image_search"] + s["n_text_search"] > 0 for s in rows]
            behaviour[f"{name}_searched"] = sum(searched) / len(rows)
    return {
        **behaviour,
        **update,
        "tokens_per_s": tokens * config.grpo.ppo_epochs / max(update_s, 1e-9),
        "rollout_tokens_per_s": sampled / max(rollout_s, 1e-9),
        "rollout_s": rollout_s,
        "update_s": update_s,
        "step_s": time.perf_counter() - started,
    }
