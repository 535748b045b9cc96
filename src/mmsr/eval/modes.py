"""The three evaluation modes on top of the rollout engine.

- direct: the model answers at once, without tools. The engine runs with a budget of one
  turn and no searches, so the prompt (`mmsr.rollout.prompts.instruction`) lists no search
  tool and asks for <reason> then <answer>.
- rag: the paper's RAG workflow. Every question makes exactly one image search on its
  image, then one text search, then the model answers. The two search turns are forced;
  the final answer is the model's. The text query (`rag_query`):
    "question": the question itself (the classic retrieve-then-read baseline; default,
                because it needs nothing from the model and every checkpoint can run it);
    "model":    written by the model after reading the image results (the engine
                generates the query inside a forced `<text_search>` tag).
- ondemand: the normal rollout; the model decides whether and how to search within the
  training budget (1 image search, 2 text searches, 3 turns).

Generation is greedy by default (temperature 0) so evaluations are reproducible.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from mmsr.data.record import Sample
from mmsr.eval.records import MODES, EvalRecord, record_from_trajectory, sample_golds
from mmsr.reward import RewardConfig, answer_matches
from mmsr.rollout.protocol import SearchLimits

RAG_IMAGE_TURN = "<reason>First I search the web for this image.</reason>\n<search><img></search>"
RAG_TEXT_REASON = "<reason>Now I search the web with text.</reason>\n"
RAG_QUERIES = ("question", "model")


@dataclass
class EvalConfig:
    """One evaluation run (CLI options map 1:1)."""

    mode: str = "ondemand"
    """direct | rag | ondemand."""
    max_turns: int = 3
    """Model turns per question in ondemand mode (the answer included)."""
    max_image_search: int = 1
    """Image searches allowed per question in ondemand mode."""
    max_text_search: int = 2
    """Text searches allowed per question in ondemand mode."""
    max_new_tokens: int = 256
    """Tokens generated per turn at most."""
    temperature: float = 0.0
    """0: greedy (reproducible); > 0 samples."""
    seed: int = 0
    """Sampling seed (only matters with temperature > 0)."""
    batch_size: int = 8
    """Questions rolled out at once."""
    rag_query: str = "question"
    """rag mode: the text query is the question ("question") or written by the model."""
    match: str = "em"
    """Rule judge: "em" or "subem"."""
    fold_accents: bool = False
    """Rule judge: strip accents before comparing."""

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"--mode {self.mode!r} must be one of {MODES}")
        if self.rag_query not in RAG_QUERIES:
            raise ValueError(f"--rag-query {self.rag_query!r} must be one of {RAG_QUERIES}")
        if self.match not in ("em", "subem"):
            raise ValueError(f"--match {self.match!r} must be 'em' or 'subem'")

    @property
    def limits(self) -> SearchLimits:
        """The budget of one question in this mode (what the prompt states)."""
        if self.mode == "direct":
            return SearchLimits(1, 0, 0)
        if self.mode == "rag":
            return SearchLimits(3, 1, 1)
        return SearchLimits(self.max_turns, self.max_image_search, self.max_text_search)

    @property
    def reward_config(self) -> RewardConfig:
        return RewardConfig(match=self.match, fold_accents=self.fold_accents)


def engine_config(config: EvalConfig, **overrides: Any):
    """The `EngineConfig` of a mode: its budget, greedy or sampled generation."""
    from mmsr.rollout.engine import EngineConfig

    limits = config.limits
    fields = {f.name for f in dataclasses.fields(EngineConfig)}
    values = {
        "max_turns": limits.max_turns,
        "max_image_search": limits.max_image_search,
        "max_text_search": limits.max_text_search,
        "max_new_tokens": config.max_new_tokens,
        "temperature": config.temperature,
        "seed": config.seed,
        "batch_size": config.batch_size,
        **overrides,
    }
    return EngineConfig(**{k: v for k, v in values.items() if k in fields})


class RagScript:
    """The forced turns of the RAG workflow for one question, as a replay script:
    turn 0 searches the image, turn 1 searches text, turn 2 is left to the model (None)."""

    def __init__(self, question: str, rag_query: str = "question"):
        self.question = " ".join(question.split())
        self.rag_query = rag_query

    def __call__(self, turn_index: int, observations: Sequence[Any] = ()) -> str | None:
        if turn_index == 0:
            return RAG_IMAGE_TURN
        if turn_index == 1:
            if self.rag_query == "model":
                return None  # the engine's forced-prefix path writes RAG_TEXT_REASON + tag
            return f"{RAG_TEXT_REASON}<text_search>{self.question}</text_search>"
        return None  # the model answers


def trajectories_for(engine, samples: Sequence[Sample], config: EvalConfig) -> list:
    """One trajectory per sample, in the mode's way."""
    if config.mode in ("direct", "ondemand"):
        return engine.rollout(list(samples), n=1, seed=config.seed)
    scripts = [RagScript(s.question, config.rag_query) for s in samples]
    return engine.replay(list(samples), scripts)


def records_from(
    samples: Sequence[Sample], trajectories: Sequence[Any], config: EvalConfig
) -> list[EvalRecord]:
    """EvalRecords with the rule verdict (the LLM judge, if any, runs afterwards)."""
    by_group: dict[int, Any] = {}
    for index, trajectory in enumerate(trajectories):
        by_group.setdefault(getattr(trajectory, "group", index), trajectory)
    records = []
    for index, sample in enumerate(samples):
        trajectory = by_group.get(index)
        if trajectory is None:
            raise RuntimeError(f"the engine returned no trajectory for sample {sample.id}")
        data = trajectory.to_json()
        answer = data.get("answer")
        correct = isinstance(answer, str) and answer_matches(
            answer, sample_golds(sample), config.reward_config
        )
        records.append(record_from_trajectory(sample, config.mode, data, correct))
    return records
