"""The paper's evaluation numbers from a list of `EvalRecord`s.

- Accuracy three ways: exact match and SubEM after normalisation (`mmsr.reward`), and the
  LLM judge when one ran. `acc` is the headline: the judge's when present, else the rule
  the run was configured with.
- SR, the paper's search ratio (Sec. 4): the share of questions on which the model searched
  at least once. The RAG workflow searches on every question, so its SR is 100 %.
- `call_ratio`: search calls made / search calls the mode allows (questions × budget);
  None for the direct mode, which allows none. Per tool: `image_search_rate` and
  `text_search_rate` (share of questions that used the tool) and mean calls per question.
- The answer-behaviour breakdown (paper, Fig. 4): shares of correct without search,
  correct with search, wrong without search, wrong with search; they sum to 1.
- Every number again per question type, category, data source and tag.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from mmsr.eval.records import EvalRecord
from mmsr.reward import RewardConfig, answer_matches
from mmsr.rollout.protocol import SearchLimits

BEHAVIOURS = ("correct_no_search", "correct_search", "wrong_no_search", "wrong_search")
GROUPINGS = ("qtype", "category", "source", "tag")


def searches_allowed(mode: str, limits: SearchLimits) -> int:
    """Search calls one question may make in `mode` (the denominator of `call_ratio`)."""
    if mode == "direct":
        return 0
    if mode == "rag":
        return 2  # the workflow: one image search, then one text search
    return limits.max_image_search + limits.max_text_search


def behaviour(record: EvalRecord) -> str:
    """Which of the four answer behaviours a record shows."""
    prefix = "correct" if record.correct else "wrong"
    return f"{prefix}_{'search' if record.searched else 'no_search'}"


def _share(count: int, total: int) -> float:
    return count / total if total else 0.0


def summarize(
    records: Sequence[EvalRecord], mode: str, limits: SearchLimits, fold_accents: bool = False
) -> dict[str, Any]:
    """The numbers of one group of records (no breakdowns)."""
    n = len(records)
    em = RewardConfig(match="em", fold_accents=fold_accents)
    subem = RewardConfig(match="subem", fold_accents=fold_accents)

    def matches(record: EvalRecord, config: RewardConfig) -> bool:
        return record.prediction is not None and answer_matches(
            record.prediction, record.golds, config
        )

    judged = [r for r in records if r.correct_judge is not None]
    allowed = searches_allowed(mode, limits) * n
    calls_image = sum(r.n_image_search for r in records)
    calls_text = sum(r.n_text_search for r in records)
    behaviours = Counter(behaviour(r) for r in records)
    return {
        "n": n,
        "acc": _share(sum(r.correct for r in records), n),
        "acc_em": _share(sum(matches(r, em) for r in records), n),
        "acc_subem": _share(sum(matches(r, subem) for r in records), n),
        "acc_judge": _share(sum(bool(r.correct_judge) for r in judged), len(judged))
        if judged
        else None,
        "sr": _share(sum(r.searched for r in records), n),
        "call_ratio": (calls_image + calls_text) / allowed if allowed else None,
        "image_search_rate": _share(sum(r.n_image_search > 0 for r in records), n),
        "text_search_rate": _share(sum(r.n_text_search > 0 for r in records), n),
        "image_calls_per_question": _share(calls_image, n),
        "text_calls_per_question": _share(calls_text, n),
        "answered": _share(sum(r.prediction is not None for r in records), n),
        "behaviour": {name: _share(behaviours[name], n) for name in BEHAVIOURS},
        "behaviour_counts": {name: behaviours[name] for name in BEHAVIOURS},
    }


def _group(records: Iterable[EvalRecord], keys: Callable[[EvalRecord], Iterable[str]]):
    groups: dict[str, list[EvalRecord]] = {}
    for record in records:
        for key in keys(record):
            groups.setdefault(key, []).append(record)
    return dict(sorted(groups.items()))


_GROUP_KEYS: dict[str, Callable[[EvalRecord], Iterable[str]]] = {
    "qtype": lambda r: [r.qtype],
    "category": lambda r: [r.category],
    "source": lambda r: [r.source or "unknown"],
    "tag": lambda r: r.tags,  # a record counts once under each of its tags
}


def compute_metrics(
    records: Sequence[EvalRecord],
    mode: str,
    limits: SearchLimits | None = None,
    fold_accents: bool = False,
) -> dict[str, Any]:
    """Overall numbers plus `by_<grouping>` breakdowns; what `mmsr eval --json` prints."""
    limits = limits or SearchLimits()
    metrics: dict[str, Any] = {
        "mode": mode,
        "searches_allowed_per_question": searches_allowed(mode, limits),
        **summarize(records, mode, limits, fold_accents),
        "judge": _judge_summary(records),
        "finish_reasons": dict(Counter(r.finish_reason for r in records).most_common()),
    }
    for grouping in GROUPINGS:
        groups = _group(records, _GROUP_KEYS[grouping])
        metrics[f"by_{grouping}"] = {
            key: summarize(group, mode, limits, fold_accents) for key, group in groups.items()
        }
    return metrics


def _judge_summary(records: Sequence[EvalRecord]) -> dict[str, Any]:
    kinds = Counter(r.judge for r in records)
    return {
        "verdicts": dict(kinds.most_common()),
        "fallbacks": kinds.get("rule-fallback", 0),
        "agreement_with_rule": _share(
            sum(r.correct_judge == r.correct_rule for r in records if r.correct_judge is not None),
            sum(r.correct_judge is not None for r in records),
        )
        if any(r.correct_judge is not None for r in records)
        else None,
    }
