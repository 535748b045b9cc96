"""Search-balanced data: the FVQA construction method (MMSearch-R1 paper, Sec. 3.3).

1. A preliminary model answers every question `k` times without search (sampling).
2. A question it gets right at least `threshold` of those times is `search_free`; the
   others are `search_required`.
3. A search_required question is dropped when the model stays wrong even with search: it
   answers it `rag_k` times in the RAG workflow (image search, then text search) and none
   of those answers is right. Such questions teach only noise: searching does not help.
4. The two categories are brought to `target_ratio` (search_required : search_free) by
   downsampling the larger one with a seeded RNG, stratified by taxonomy (the sample's
   tags, else its source), so each taxonomy keeps its share within the category.

This module holds the decisions only; who answers is an `Answerer` (`mmsr.eval.modes`
has the one backed by the rollout engine, the tests a scripted one). Data must not know
about models.
"""

from __future__ import annotations

import dataclasses
import json
import random
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from mmsr.data.record import Sample, SampleImage
from mmsr.reward import RewardConfig, answer_matches

Answers = list[list[str | None]]  # [n_samples][n_attempts]: parsed answers, None when none


class Answerer(Protocol):
    """Answers questions `k` times each, without search or in the RAG workflow."""

    def answer_without_search(self, samples: Sequence[Sample], k: int, seed: int) -> Answers: ...

    def answer_with_search(self, samples: Sequence[Sample], k: int, seed: int) -> Answers: ...


@dataclass
class BalanceConfig:
    """The knobs of the construction; defaults follow the paper's spirit at nano scale."""

    k: int = 5
    """Answers per question without search."""
    threshold: int = 3
    """A question right at least this many times out of `k` is search_free."""
    rag_k: int = 1
    """RAG answers per search_required question; dropped when none of them is right."""
    target_ratio: float | None = 1.0
    """search_required : search_free after balancing (FVQA train is about 2.1); None keeps
    every surviving question."""
    seed: int = 0
    """Seeds the answers' sampling and the downsampling."""
    match: str = "em"
    """How an answer is judged right: "em" or "subem" (mmsr.reward)."""

    def __post_init__(self) -> None:
        if self.k < 1:
            raise ValueError(f"balance option k={self.k} must be >= 1")
        if not 1 <= self.threshold <= self.k:
            raise ValueError(f"balance option threshold={self.threshold} must lie in 1..k={self.k}")
        if self.rag_k < 0:
            raise ValueError(f"balance option rag_k={self.rag_k} must be >= 0 (0: drop nothing)")
        if self.target_ratio is not None and self.target_ratio <= 0:
            raise ValueError(f"balance option target_ratio={self.target_ratio} must be > 0")
        if self.match not in ("em", "subem"):
            raise ValueError(f"balance option match={self.match!r} must be 'em' or 'subem'")


@dataclass
class Decision:
    """What happened to one question."""

    sample_id: str
    right_without_search: int  # of k answers
    category: str  # "search_free" | "search_required"
    right_with_search: int | None = None  # of rag_k answers; None when RAG did not run
    fate: str = "kept"  # "kept" | "dropped_unanswerable" | "dropped_balance" | "unchecked"


@dataclass
class BalanceResult:
    samples: list[Sample]  # the balanced set, `category` set on each
    decisions: list[Decision]  # one per input question, input order
    counts: dict[str, Any] = field(default_factory=dict)


def count_right(answers: Sequence[str | None], golds: Sequence[str], config: RewardConfig) -> int:
    return sum(a is not None and answer_matches(a, golds, config) for a in answers)


def golds_of(sample: Sample) -> list[str]:
    return list(dict.fromkeys([sample.answer, *sample.aliases]))


def taxonomy_key(sample: Sample) -> str:
    """The stratum a sample is downsampled in: its tags, else its source."""
    return "/".join(sample.tags) if sample.tags else sample.source or "unknown"


def classify(samples: Sequence[Sample], answers: Answers, config: BalanceConfig) -> list[Decision]:
    """Steps 1-2: search_free when right at least `threshold` of `k` times."""
    if len(answers) != len(samples):
        raise ValueError(f"got answers for {len(answers)} questions, expected {len(samples)}")
    reward = RewardConfig(match=config.match)
    decisions = []
    for sample, attempts in zip(samples, answers, strict=True):
        if len(attempts) != config.k:
            raise ValueError(
                f"question {sample.id}: {len(attempts)} answers without search, "
                f"expected k={config.k}"
            )
        right = count_right(attempts, golds_of(sample), reward)
        category = "search_free" if right >= config.threshold else "search_required"
        decisions.append(Decision(sample.id, right, category))
    return decisions


def drop_unanswerable(
    samples: Sequence[Sample],
    decisions: Sequence[Decision],
    rag_answers: Answers,
    config: BalanceConfig,
) -> None:
    """Step 3 (in place): `rag_answers` hold the RAG answers of the search_required
    questions, in their order."""
    required = [i for i, d in enumerate(decisions) if d.category == "search_required"]
    if len(rag_answers) != len(required):
        raise ValueError(
            f"got RAG answers for {len(rag_answers)} questions, expected {len(required)}"
        )
    reward = RewardConfig(match=config.match)
    for index, attempts in zip(required, rag_answers, strict=True):
        decision = decisions[index]
        decision.right_with_search = count_right(attempts, golds_of(samples[index]), reward)
        if decision.right_with_search == 0:
            decision.fate = "dropped_unanswerable"


def stratified_sample(
    samples: Sequence[Sample], n: int, rng: random.Random, key: Callable[[Sample], str]
) -> list[Sample]:
    """`n` of `samples`, each stratum keeping its share (largest remainder), order kept."""
    if n >= len(samples):
        return list(samples)
    strata: dict[str, list[int]] = {}
    for index, sample in enumerate(samples):
        strata.setdefault(key(sample), []).append(index)
    quotas = {name: len(members) * n / len(samples) for name, members in strata.items()}
    taken = {name: int(quota) for name, quota in quotas.items()}
    by_remainder = sorted(strata, key=lambda name: (-(quotas[name] - taken[name]), name))
    for name in by_remainder[: n - sum(taken.values())]:
        taken[name] += 1
    chosen: list[int] = []
    for name in sorted(strata):
        chosen += rng.sample(strata[name], taken[name])
    return [samples[i] for i in sorted(chosen)]


def rebalance(
    samples: Sequence[Sample], decisions: Sequence[Decision], config: BalanceConfig
) -> list[Sample]:
    """Step 4: the kept samples, with categories set, brought to `target_ratio`."""
    kept = [
        (dataclasses.replace(s, category=d.category), d)
        for s, d in zip(samples, decisions, strict=True)
        if d.fate == "kept"
    ]
    free = [s for s, d in kept if d.category == "search_free"]
    required = [s for s, d in kept if d.category == "search_required"]
    if config.target_ratio is not None and free and required:
        rng = random.Random(config.seed)
        if len(required) > config.target_ratio * len(free):
            n = max(1, round(config.target_ratio * len(free)))
            required = stratified_sample(required, n, rng, taxonomy_key)
        else:
            n = max(1, round(len(required) / config.target_ratio))
            free = stratified_sample(free, n, rng, taxonomy_key)
    chosen = {s.id for s in free + required}
    for sample, decision in kept:
        if sample.id not in chosen:
            decision.fate = "dropped_balance"
    return [s for s, _ in kept if s.id in chosen]


def redraw(
    samples: Sequence[Sample], decisions: Sequence[Decision], config: BalanceConfig
) -> BalanceResult:
    """Step 4 again over recorded decisions (`read_decisions`): the same classification
    brought to `config.target_ratio` without asking any model. Questions dropped as
    unanswerable stay dropped; those the earlier draw left out compete again."""
    decisions = _undrawn(samples, decisions)
    balanced = rebalance(samples, decisions, config)
    return BalanceResult(balanced, decisions, summarize(decisions, balanced, config))


def _undrawn(samples: Sequence[Sample], decisions: Sequence[Decision]) -> list[Decision]:
    """Copies of the recorded `decisions` of `samples` before step 4's draw: the questions
    it left out are kept again."""
    if [s.id for s in samples] != [d.sample_id for d in decisions]:
        raise ValueError(
            f"the recorded decisions are for other questions ({len(decisions)} decisions, "
            f"{len(samples)} questions, or another order): give the questions they were "
            "made for (the same --data and --limit)"
        )
    return [
        dataclasses.replace(d, fate="kept" if d.fate == "dropped_balance" else d.fate)
        for d in decisions
    ]


def recheck_with_search(
    samples: Sequence[Sample],
    decisions: Sequence[Decision],
    answerer: Answerer,
    config: BalanceConfig,
    n_checked: int,
) -> BalanceResult:
    """Step 3 over recorded decisions, with another model than the preliminary one, then
    step 4: `n_checked` of the kept search_required questions (a seeded draw) are
    answered `config.rag_k` times in the RAG workflow and dropped when none is right; the
    others are left out as `unchecked`. For a preliminary model that cannot run the
    workflow (nano before SFT): the model trained to run it checks afterwards."""
    if n_checked < 1:
        raise ValueError(f"n_checked={n_checked} must be >= 1")
    if config.rag_k < 1:
        raise ValueError(f"balance option rag_k={config.rag_k} must be >= 1 to check anything")
    decisions = _undrawn(samples, decisions)
    required = [
        i for i, d in enumerate(decisions) if d.category == "search_required" and d.fate == "kept"
    ]
    random.Random(config.seed).shuffle(required)
    checked, unchecked = sorted(required[:n_checked]), required[n_checked:]
    for index in unchecked:
        decisions[index].fate = "unchecked"
    chosen = [samples[i] for i in checked]
    rag = answerer.answer_with_search(chosen, config.rag_k, config.seed + 1)
    drop_unanswerable(chosen, [decisions[i] for i in checked], rag, config)
    balanced = rebalance(samples, decisions, config)
    return BalanceResult(balanced, decisions, summarize(decisions, balanced, config))


def build_balanced(
    samples: Sequence[Sample], answerer: Answerer, config: BalanceConfig
) -> BalanceResult:
    """The whole method: answer, classify, drop the unanswerable, rebalance."""
    ids = Counter(s.id for s in samples)
    duplicated = [i for i, n in ids.items() if n > 1]
    if duplicated:
        raise ValueError(f"duplicate sample ids, e.g. {duplicated[0]!r}: ids must be unique")
    decisions = classify(
        samples, answerer.answer_without_search(samples, config.k, config.seed), config
    )
    required = [
        s for s, d in zip(samples, decisions, strict=True) if d.category == "search_required"
    ]
    if config.rag_k > 0 and required:
        rag = answerer.answer_with_search(required, config.rag_k, config.seed + 1)
        drop_unanswerable(samples, decisions, rag, config)
    balanced = rebalance(samples, decisions, config)
    return BalanceResult(balanced, decisions, summarize(decisions, balanced, config))


def summarize(
    decisions: Sequence[Decision], balanced: Sequence[Sample], config: BalanceConfig
) -> dict[str, Any]:
    categories = Counter(s.category for s in balanced)
    return {
        "config": dataclasses.asdict(config),
        "input": len(decisions),
        "classified": dict(Counter(d.category for d in decisions)),
        "dropped_unanswerable": sum(d.fate == "dropped_unanswerable" for d in decisions),
        "dropped_balance": sum(d.fate == "dropped_balance" for d in decisions),
        "checked_with_search": sum(d.right_with_search is not None for d in decisions),
        "unchecked": sum(d.fate == "unchecked" for d in decisions),
        "output": len(balanced),
        "output_categories": {c: categories.get(c, 0) for c in ("search_free", "search_required")},
        "output_by_taxonomy": dict(sorted(Counter(taxonomy_key(s) for s in balanced).items())),
    }


def embed_images(sample: Sample, base_dir: Path | None = None) -> Sample:
    """A copy whose images carry their bytes (paths become bare file names), so a parquet
    file written from it is self-contained (world samples point at files otherwise)."""
    images = []
    for k, image in enumerate(sample.images):
        if image.bytes is not None:
            images.append(image)
            continue
        path = Path(image.path or "")
        if not path.is_absolute() and base_dir is not None:
            path = base_dir / path
        if not path.is_file():
            raise FileNotFoundError(f"sample {sample.id}: image {k} not found at {path}")
        images.append(SampleImage(bytes=path.read_bytes(), path=path.name))
    return dataclasses.replace(sample, images=images)


def read_decisions(path: Path) -> list[Decision]:
    """The decisions of a sidecar JSON written by `write_decisions`, in input order."""
    try:
        payload = json.loads(Path(path).read_text(encoding="utf-8"))
        return [Decision(**d) for d in payload["decisions"]]
    except (json.JSONDecodeError, KeyError, TypeError) as err:
        raise ValueError(f"{path}: not the decisions file of a balancing run ({err!r})") from err


def write_decisions(result: BalanceResult, path: Path) -> None:
    """The sidecar JSON: counts and every question's decision."""
    payload = {
        "counts": result.counts,
        "decisions": [dataclasses.asdict(d) for d in result.decisions],
    }
    Path(path).write_text(json.dumps(payload, indent=2, ensure_ascii=False), encoding="utf-8")
