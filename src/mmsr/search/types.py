"""The records and interfaces every search backend shares.

A backend is any object with the `search` method of its protocol; tools, the server and
the cache only see these types, so local, remote and web backends are interchangeable.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Protocol, runtime_checkable


@dataclass
class SearchResult:
    """One hit. `thumbnail` is a URL, a `world://` asset URL or a local path; may be empty."""

    title: str
    url: str
    snippet: str = ""  # page excerpt as returned by retrieval
    summary: str = ""  # query-focused summary written by the text pipeline
    thumbnail: str = ""
    score: float = 0.0  # backend-specific relevance, higher is better

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class SearchResponse:
    """What a tool returns: the JSON contract of `mmsr search ... --json`."""

    results: list[SearchResult]
    backend: str
    cached: bool = False
    latency_ms: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)  # backend diagnostics, not contract

    def to_dict(self) -> dict[str, Any]:
        return {
            "results": [r.to_dict() for r in self.results],
            "backend": self.backend,
            "cached": self.cached,
            "latency_ms": round(self.latency_ms, 3),
        }


@runtime_checkable
class ImageSearchBackend(Protocol):
    name: str

    def search(self, image: bytes, k: int = 5) -> list[SearchResult]:
        """Pages whose images look like `image` (encoded PNG/JPEG bytes), best first."""
        ...


@runtime_checkable
class TextSearchBackend(Protocol):
    name: str

    def search(self, query: str, k: int = 5) -> list[SearchResult]:
        """Pages relevant to `query`, best first (snippets, not yet summarised)."""
        ...
