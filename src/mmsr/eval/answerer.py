"""The `mmsr.data.balance.Answerer` backed by the rollout engine (the preliminary model).

Without search: the direct mode, sampled at `temperature` (k identical greedy answers
would make the threshold meaningless). With search: the RAG workflow (`modes.RagScript`),
also sampled, so that k > 1 attempts differ.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from mmsr.data.balance import Answers
from mmsr.data.record import Sample
from mmsr.eval.modes import EvalConfig, RagScript, engine_config


def _answers_by_group(trajectories: Sequence[Any], n_samples: int) -> Answers:
    grouped: Answers = [[] for _ in range(n_samples)]
    for trajectory in trajectories:
        grouped[trajectory.group].append(trajectory.answer)
    return grouped


class EngineAnswerer:
    """Answers with a policy through `RolloutEngine`."""

    def __init__(self, policy, tools, config: EvalConfig | None = None, temperature: float = 1.0):
        self.policy, self.tools = policy, tools
        self.config = config or EvalConfig()
        self.temperature = temperature

    def _engine(self, mode: str, seed: int):
        from mmsr.rollout.engine import RolloutEngine

        config = replace(self.config, mode=mode, temperature=self.temperature, seed=seed)
        return RolloutEngine(self.policy, self.tools, engine_config(config)), config

    def answer_without_search(self, samples: Sequence[Sample], k: int, seed: int) -> Answers:
        engine, config = self._engine("direct", seed)
        out: Answers = []
        for start in range(0, len(samples), config.batch_size):
            batch = list(samples[start : start + config.batch_size])
            out += _answers_by_group(engine.rollout(batch, n=k, seed=seed + start), len(batch))
        return out

    def answer_with_search(self, samples: Sequence[Sample], k: int, seed: int) -> Answers:
        engine, config = self._engine("rag", seed)
        out: Answers = [[] for _ in samples]
        for _attempt in range(k):
            for start in range(0, len(samples), config.batch_size):
                batch = list(samples[start : start + config.batch_size])
                scripts = [RagScript(s.question, config.rag_query) for s in batch]
                for offset, trajectory in enumerate(engine.replay(batch, scripts)):
                    out[start + offset].append(trajectory.answer)
        return out
