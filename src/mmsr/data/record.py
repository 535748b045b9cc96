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
    gives back identical rows.
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
