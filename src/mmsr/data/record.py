"""The one typed sample record every part of mmsr passes around."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

Category = Literal["search_free", "search_required"]
ToolsNeeded = Literal["none", "image", "text", "both"]
CATEGORIES: tuple[str, ...] = ("search_free", "search_required")
TOOLS_NEEDED: tuple[str, ...] = ("none", "image", "text", "both")


@dataclass
class SampleImage:
    """One image of a sample: encoded bytes (PNG/JPEG as stored) and/or a file path."""

    bytes: bytes | None = None
    path: str | None = None


@dataclass
class Sample:
    """A visual question with its gold answer.

    `prompt` and `extra` keep what a source file carried beyond these fields (the FVQA
    chat messages, `image_urls`, unknown columns) so that reading and writing a file
    gives back identical rows. `extra["_fvqa"]` is bookkeeping of the FVQA reader, not a
    column: the source file's column order and the `reward_model` keys that have no field
    (e.g. `style`).
    """

    id: str
    question: str
    answer: str
    images: list[SampleImage] = field(default_factory=list)  # [n_images]
    aliases: list[str] = field(default_factory=list)  # other accepted answers
    category: Category | None = None
    tools: ToolsNeeded | None = None  # which search tools the question needs in principle
    source: str = ""  # FVQA `data_source`, e.g. "mmsearch_r1/fvqa_train" or "world/capital"
    tags: list[str] = field(default_factory=list)  # taxonomy, e.g. ["geography", "capital"]
    split: str | None = None  # "train" / "val" / "test"
    prompt: list[dict[str, Any]] | None = None  # original chat messages, when read from FVQA
    extra: dict[str, Any] = field(default_factory=dict)  # other source columns, kept verbatim


def check_sample(sample: Sample) -> None:
    """Raise ValueError naming the first field that breaks the record's invariants."""
    if not isinstance(sample.id, str) or not sample.id:
        raise ValueError(f"missing id (got {sample.id!r})")
    if not isinstance(sample.question, str) or not sample.question.strip():
        raise ValueError(f"missing question (got {sample.question!r})")
    if not isinstance(sample.answer, str) or not sample.answer.strip():
        raise ValueError(f"missing answer (got {sample.answer!r})")
    if not isinstance(sample.aliases, list) or not all(isinstance(a, str) for a in sample.aliases):
        raise ValueError(f"aliases must be a list of strings (got {sample.aliases!r})")
    if sample.category is not None and sample.category not in CATEGORIES:
        raise ValueError(f"bad category {sample.category!r} (expected one of {CATEGORIES})")
    if sample.tools is not None and sample.tools not in TOOLS_NEEDED:
        raise ValueError(f"bad tools {sample.tools!r} (expected one of {TOOLS_NEEDED})")
    if not isinstance(sample.tags, list) or not all(isinstance(t, str) for t in sample.tags):
        raise ValueError(f"tags must be a list of strings (got {sample.tags!r})")
    for k, image in enumerate(sample.images):
        if not isinstance(image, SampleImage) or (image.bytes is None and image.path is None):
            raise ValueError(f"image {k} has neither bytes nor a path")
