"""One evaluated question: the sample's facts, the trajectory's outcome and the verdicts.

Records are plain data (JSON round-trip), so metrics, reports and the viewer can be
computed again from a saved `trajectories.jsonl` without a model.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from mmsr.data.record import Sample

Mode = Literal["direct", "rag", "ondemand"]
MODES: tuple[str, ...] = ("direct", "rag", "ondemand")


@dataclass
class EvalRecord:
    """The evaluation of one question in one mode."""

    sample_id: str
    mode: str  # one of MODES
    question: str
    golds: list[str]  # accepted answers, the main one first
    source: str  # FVQA data_source, e.g. "world/capital"
    qtype: str  # question type: world `qtype`, else the source's last path part
    category: str  # "search_free" | "search_required" | "unknown"
    tags: list[str]  # taxonomy
    prediction: str | None  # the parsed <answer>, None when the trajectory gave none
    finish_reason: str  # the engine's reason ("answer", "max_turns", ...)
    n_image_search: int
    n_text_search: int
    correct_rule: bool  # EM / SubEM verdict (mmsr.reward.answer_matches)
    correct_judge: bool | None = None  # LLM-judge verdict; None when no LLM judge ran
    judge: str = "rule"  # which verdict `correct` is: "rule", "llm:<model>" or "rule-fallback"
    judge_note: str = ""  # why the judge decided / why it fell back
    image: str | None = None  # question image: a file path, or "" when it only has bytes
    trajectory: dict[str, Any] = field(default_factory=dict)  # Trajectory.to_json()

    @property
    def n_search(self) -> int:
        return self.n_image_search + self.n_text_search

    @property
    def searched(self) -> bool:
        return self.n_search > 0

    @property
    def correct(self) -> bool:
        """The headline verdict: the LLM judge's when one ran, else the rule's."""
        return self.correct_rule if self.correct_judge is None else self.correct_judge

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> EvalRecord:
        return cls(**data)


def question_type(sample: Sample) -> str:
    """The question type used to group metrics: the world's `qtype`, else the last part of
    the data source ("mmsearch_r1/fvqa_test" -> "fvqa_test"), else "unknown"."""
    qtype = sample.extra.get("qtype") if isinstance(sample.extra, dict) else None
    if isinstance(qtype, str) and qtype:
        return qtype
    return sample.source.rsplit("/", 1)[-1] if sample.source else "unknown"


def sample_golds(sample: Sample) -> list[str]:
    return list(dict.fromkeys([sample.answer, *sample.aliases]))


def record_from_trajectory(
    sample: Sample, mode: str, trajectory: dict[str, Any], correct_rule: bool
) -> EvalRecord:
    """A record from a sample and its trajectory's `to_json()` dict (verdict added later by
    the judges when an LLM judge runs)."""
    image = None
    if sample.images:
        image = sample.images[0].path or ""
    answer = trajectory.get("answer")
    return EvalRecord(
        sample_id=sample.id,
        mode=mode,
        question=sample.question,
        golds=sample_golds(sample),
        source=sample.source,
        qtype=question_type(sample),
        category=sample.category or "unknown",
        tags=list(sample.tags),
        prediction=answer if isinstance(answer, str) else None,
        finish_reason=str(trajectory.get("finish_reason", "")),
        n_image_search=int(trajectory.get("n_image_search", 0)),
        n_text_search=int(trajectory.get("n_text_search", 0)),
        correct_rule=bool(correct_rule),
        image=image,
        trajectory=trajectory,
    )
