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

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SearchResult:
        """Inverse of `to_dict`; unknown keys are ignored, missing optional ones default."""
        return cls(
            title=str(data.get("title") or ""),
            url=str(data.get("url") or ""),
            snippet=str(data.get("snippet") or ""),
            summary=str(data.get("summary") or ""),
            thumbnail=str(data.get("thumbnail") or ""),
            score=float(data.get("score") or 0.0),
        )


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

    @property
    def error(self) -> str | None:
        """Why the tool could not search (then `results` is empty), else None.

        Tools never raise on a backend failure; they return a response whose `extra` holds
        `error` (message), `error_type` (the `SearchError` class name) and `retryable`.
        """
        return self.extra.get("error")

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SearchResponse:
        """Inverse of `to_dict` (e.g. a server's JSON answer)."""
        return cls(
            results=[SearchResult.from_dict(r) for r in data.get("results") or []],
            backend=str(data.get("backend") or ""),
            cached=bool(data.get("cached", False)),
            latency_ms=float(data.get("latency_ms") or 0.0),
        )


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
