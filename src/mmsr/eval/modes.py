"""The three evaluation modes on top of the rollout engine.

- direct: the model answers at once, without tools. The engine runs with a budget of one
  turn and no searches, so the prompt (`mmsr.rollout.prompts.instruction`) lists no search
  tool and asks for <reason> then <answer>.
- rag: the paper's RAG workflow. Every question makes exactly one image search on its
  image, then one text search, then the model answers. The two search turns are forced
  token by token through the engine's token forcer (`RagForcer`) and the searches really
  run. The workflow, not the model, decides the third turn's action too, so that turn is
  forced up to `<answer>`; the answer itself is the model's (a small model imitating the
  forced turns would otherwise write another reasoning and no action: nano after SFT
  answered 0 of 28 questions that way). The text query (`rag_query`):
    "question": the question itself (the classic retrieve-then-read baseline; default,
                because it needs nothing from the model and every checkpoint can run it);
    "model":    written by the model after reading the image results (the engine
                generates the query inside a forced `<text_search>` tag).
- ondemand: the normal rollout; the model decides whether and how to search within the
  training budget (1 image search, 2 text searches, 3 turns).

Generation is near-greedy by default (temperature 0 runs at `GREEDY_TEMPERATURE`: the
engine only samples) so evaluations are reproducible.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from mmsr.data.record import Sample
from mmsr.eval.records import MODES, EvalRecord, record_from_trajectory, sample_golds
from mmsr.models.precision import check_matmul_dtype
from mmsr.reward import RewardConfig, answer_matches
from mmsr.rollout.forcing import REASON_LIMIT, ReasonThenAction
from mmsr.rollout.protocol import SearchLimits

# The fixed reasoning before each of the RAG workflow's three actions (`rag_turns`).
RAG_REASONS = (
    "<reason>First I search the web for this image.</reason>\n",
    "<reason>Now I search the web with text.</reason>\n",
    "<reason>Now I answer from the results.</reason>\n",
)
RAG_QUERIES = ("question", "model")
RAG_REASONING = ("fixed", "model")
# rag_reasoning="model": the model writes each turn's reasoning (up to RAG_REASON_LIMIT
# tokens), then the workflow's action.
RAG_REASON_LIMIT = REASON_LIMIT
GREEDY_TEMPERATURE = 1e-4  # logits / 1e-4: any lead of 0.01 nats wins with odds e^-100


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
    """0: (near-)greedy, reproducible; > 0 samples. The engine needs T > 0, so 0 runs at
    `GREEDY_TEMPERATURE`, where sampling picks the argmax token but for exact ties."""
    seed: int = 0
    """Sampling seed (only matters with temperature > 0)."""
    batch_size: int = 8
    """Questions rolled out at once."""
    rag_query: str = "question"
    """rag mode: the text query is the question ("question") or written by the model."""
    rag_reasoning: str = "fixed"
    """rag mode: each turn's reasoning is our fixed text ("fixed"), or the model's own,
    after which only the action is forced ("model"; fairer to a model fine-tuned on its
    own wording, e.g. SFT nano, which otherwise reads our text as a cue to stop)."""
    sample_dtype: str = "fp32"
    """The weights the rollouts run on: "fp32" (the policy's own), "bf16" (a bf16 copy,
    fp32 LM head; `EngineConfig.sample_dtype`) or "auto" (bf16 where the device
    multiplies bf16 in hardware)."""
    match: str = "em"
    """Rule judge: "em" or "subem"."""
    fold_accents: bool = False
    """Rule judge: strip accents before comparing."""

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"--mode {self.mode!r} must be one of {MODES}")
        if self.rag_query not in RAG_QUERIES:
            raise ValueError(f"--rag-query {self.rag_query!r} must be one of {RAG_QUERIES}")
        if self.rag_reasoning not in RAG_REASONING:
            raise ValueError(
                f"--rag-reasoning {self.rag_reasoning!r} must be one of {RAG_REASONING}"
            )
        if self.match not in ("em", "subem"):
            raise ValueError(f"--match {self.match!r} must be 'em' or 'subem'")
        check_matmul_dtype(self.sample_dtype, "--sample-dtype")

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
        "temperature": config.temperature if config.temperature > 0 else GREEDY_TEMPERATURE,
        "seed": config.seed,
        "batch_size": config.batch_size,
        "sample_dtype": config.sample_dtype,
        **overrides,
    }
    return EngineConfig(**{k: v for k, v in values.items() if k in fields})


def rag_turns(question: str, rag_query: str = "question") -> tuple[tuple[str, bool], ...]:
    """The forced text of the RAG workflow's three turns: (text, whole turn?) each, our
    fixed reasoning then the action (`rag_actions`).

    A whole turn is closed by the engine right after its text; with `rag_query="model"`
    the second turn is only the start of a text search, which the model completes; the
    third turn is the start of the answer, which the model completes.
    """
    actions = rag_actions(question, rag_query)
    return tuple(
        (reason + action, whole)
        for reason, (action, whole) in zip(RAG_REASONS, actions, strict=True)
    )


def rag_actions(question: str, rag_query: str = "question") -> tuple[tuple[str, bool], ...]:
    """The RAG workflow's three actions, forced after the model's own reasoning
    (`rag_reasoning="model"`): (text, whole turn?) each, as in `rag_turns`."""
    if rag_query not in RAG_QUERIES:
        raise ValueError(f"--rag-query {rag_query!r} must be one of {RAG_QUERIES}")
    text = (
        ("<text_search>", False)
        if rag_query == "model"
        else (f"<text_search>{' '.join(question.split())}</text_search>", True)
    )
    return (("<search><img></search>", True), text, ("<answer>", False))


class _RagForcerBase:
    """What both RAG forcers share: the end-of-turn token, and the caller's budget for the
    model's own part of a turn (the engine's per-turn budget is raised to fit the forced
    part)."""

    def __init__(
        self,
        tokenizer,
        samples: Sequence[Sample],
        rag_query: str = "question",
        max_new_tokens: int | None = None,
    ):
        self.tokenizer = tokenizer
        self.end_of_turn = tokenizer.convert_tokens_to_ids("<|im_end|>")
        self.max_new_tokens = max_new_tokens  # the model's own tokens per turn, if limited
        self.build(samples, rag_query)

    def build(self, samples: Sequence[Sample], rag_query: str) -> None:
        """Each forcer's own turns for `samples`, and `self.longest`."""
        raise NotImplementedError

    def own_part_spent(self, used: int) -> bool:
        """Whether the model has written its `max_new_tokens` after the forced part."""
        return self.max_new_tokens is not None and used >= self.max_new_tokens


class ModelReasoningRagForcer(_RagForcerBase):
    """The RAG workflow with the model's own reasoning: each turn starts with `<reason>`,
    the model reasons (it cannot end the turn there), and once it closes `</reason>` (or
    after `RAG_REASON_LIMIT` tokens, when the forcer closes it) the turn's action is forced
    (`rag_actions`); the model then completes an open action (query, answer)."""

    reads_tokens = True

    def build(self, samples: Sequence[Sample], rag_query: str) -> None:
        self.turn = ReasonThenAction(self.tokenizer)
        self.actions = [rag_actions(sample.question, rag_query) for sample in samples]
        longest_action = max(
            (self.turn.overhead(a) for acts in self.actions for a, _ in acts), default=0
        )
        self.longest = RAG_REASON_LIMIT + longest_action + 1

    def budget(self, max_new_tokens: int) -> int:
        """The engine's per-turn budget: reasoning, a forced action, then the model's own
        `max_new_tokens` for the query or answer (the forcer ends the turn there)."""
        return max_new_tokens + self.longest

    def __call__(
        self, group: int, sample_index: int, turn: int, step: int, tokens: Sequence[int] = ()
    ) -> int | None:
        acts = self.actions[group]
        if turn > len(acts):
            return None
        action, whole = acts[turn - 1]
        key = (group, sample_index, turn)
        forced = self.turn.token(key, action, step, tokens)
        if forced is not None:
            return forced
        if whole or self.own_part_spent(self.turn.after_action(key, step)):
            return self.end_of_turn
        return None


def rag_forcer(tokenizer, samples: Sequence[Sample], config: EvalConfig):
    """The RAG workflow's forcer for `config` (`rag_reasoning` picks which)."""
    kind = ModelReasoningRagForcer if config.rag_reasoning == "model" else RagForcer
    return kind(tokenizer, samples, config.rag_query, config.max_new_tokens)


class RagForcer(_RagForcerBase):
    """The engine's token forcer for the RAG workflow: each turn emits its forced text
    token by token (then `<|im_end|>` when the turn is whole); the rest is the model's.

    Forced tokens are recorded with the policy's own log-prob of them, like sampled ones
    (see `mmsr.rollout.engine.TokenForcer`), so RAG trajectories are ordinary trajectories.
    """

    def build(self, samples: Sequence[Sample], rag_query: str) -> None:
        self.turns = [
            [
                (self.tokenizer.encode(text, add_special_tokens=False), whole)
                for text, whole in rag_turns(sample.question, rag_query)
            ]
            for sample in samples
        ]
        # A forced turn must fit in the engine's per-turn budget, its <|im_end|> included.
        self.longest = max((len(t) + 1 for turns in self.turns for t, _ in turns), default=0)

    def budget(self, max_new_tokens: int) -> int:
        """`max_new_tokens` raised so that every forced turn fits."""
        return max(max_new_tokens, self.longest)

    def __call__(self, group: int, sample_index: int, turn: int, step: int) -> int | None:
        del sample_index
        turns = self.turns[group]
        tokens, whole = turns[turn - 1] if turn <= len(turns) else ([], False)
        if step < len(tokens):
            return tokens[step]
        if whole or self.own_part_spent(step - len(tokens)):
            return self.end_of_turn
        return None


def trajectories_for(policy, tools, samples: Sequence[Sample], config: EvalConfig) -> list:
    """One trajectory per sample, in the mode's way."""
    from mmsr.rollout.engine import RolloutEngine

    samples = list(samples)
    forcer, overrides = None, {}
    if config.mode == "rag":
        forcer = rag_forcer(policy.tokenizer, samples, config)
        overrides["max_new_tokens"] = forcer.budget(config.max_new_tokens)
    engine = RolloutEngine(policy, tools, engine_config(config, **overrides), forcer=forcer)
    return engine.rollout(samples, n=1, seed=config.seed)


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
