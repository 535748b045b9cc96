"""The `mmsr.data.balance.Answerer` backed by the rollout engine (the preliminary model).

Without search: the direct mode, sampled at `temperature` (k identical greedy answers
would make the threshold meaningless). With search: the RAG workflow (`modes.rag_forcer`),
sampled too, so that k > 1 attempts differ; greedy (temperature 0) for a single answer.
Each answer is one trajectory of a GRPO-style group of k (`RolloutEngine.rollout(samples,
n=k)`).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from mmsr.data.balance import Answers
from mmsr.data.record import Sample
from mmsr.eval.modes import EvalConfig, engine_config, rag_forcer

_TAG = re.compile(r"</?[a-z_]+>")


def lenient_answer(trajectory: Any) -> str | None:
    """The parsed <answer>, else the last turn's text without tags (None if empty).

    For a preliminary model that knows facts but not yet the tag format (the nano base
    model before SFT): its plain sentence is matched instead, best with SubEM.
    """
    if trajectory.answer is not None:
        return trajectory.answer
    if not trajectory.turns:
        return None
    text = " ".join(_TAG.sub(" ", trajectory.turns[-1].text).split())
    return text or None


def answers_by_group(trajectories: Sequence[Any], n_samples: int, lenient: bool = False) -> Answers:
    """[n_samples][k] answers from trajectories whose `group` is the sample's index."""
    grouped: Answers = [[] for _ in range(n_samples)]
    for trajectory in trajectories:
        answer = lenient_answer(trajectory) if lenient else trajectory.answer
        grouped[trajectory.group].append(answer)
    return grouped


class EngineAnswerer:
    """Answers with a policy through `RolloutEngine`, `config.batch_size` questions at once."""

    def __init__(
        self,
        policy,
        tools,
        config: EvalConfig | None = None,
        temperature: float = 1.0,
        lenient: bool = False,
        console=None,
    ):
        if temperature < 0:
            raise ValueError(f"--temperature {temperature} must be >= 0 (0: greedy)")
        self.policy, self.tools = policy, tools
        self.config = config or EvalConfig()
        self.temperature = temperature
        self.lenient = lenient  # see `lenient_answer`
        self.console = console  # a progress bar there when it is a terminal

    def _answers(self, mode: str, samples: Sequence[Sample], k: int, seed: int) -> Answers:
        from rich.progress import Progress

        if k > 1 and self.temperature == 0:
            raise ValueError(f"--temperature 0 (greedy) with k={k}: k answers must vary")
        config = replace(self.config, mode=mode, temperature=self.temperature, seed=seed)
        out: Answers = []
        show = self.console is not None and self.console.is_terminal
        with Progress(console=self.console, transient=True, disable=not show) as progress:
            task = progress.add_task(f"{mode} answers x{k}", total=len(samples))
            for start in range(0, len(samples), config.batch_size):
                batch = list(samples[start : start + config.batch_size])
                # Seeds differ per batch; within one, the engine seeds each (group, sample).
                out += self._batch(mode, config, batch, k, seed + start)
                progress.advance(task, len(batch))
        return out

    def _batch(self, mode: str, config: EvalConfig, batch: list[Sample], k: int, seed: int):
        from mmsr.rollout.engine import RolloutEngine

        forcer = rag_forcer(self.policy.tokenizer, batch, config)  # its `rag_reasoning`
        engine = RolloutEngine(
            self.policy,
            self.tools,
            engine_config(
                config,
                batch_size=config.batch_size * k,
                max_new_tokens=forcer.budget(config.max_new_tokens),
            ),
            forcer=forcer if mode == "rag" else None,
        )
        trajectories = engine.rollout(batch, n=k, seed=seed)
        return answers_by_group(trajectories, len(batch), self.lenient)

    def answer_without_search(self, samples: Sequence[Sample], k: int, seed: int) -> Answers:
        return self._answers("direct", samples, k, seed)

    def answer_with_search(self, samples: Sequence[Sample], k: int, seed: int) -> Answers:
        return self._answers("rag", samples, k, seed)
