"""The text-search pipeline after retrieval: read each hit's page, summarise it for the query.

retrieve (a `TextSearchBackend`) -> `PageReader.read` (the corpus' own text for `world://`
URLs, the safe fetcher for http(s)) -> `Summarizer.summarize` -> `SearchResult.summary`.

A page that cannot be read is not an error of the search: its retrieval snippet is
summarised instead, and the failure is listed in the response's `extra["page_errors"]`.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import Any

from mmsr.search.cost import CostMeter
from mmsr.search.errors import RefusedURL, SearchError
from mmsr.search.fetch import PageSource
from mmsr.search.summarize import Summarizer
from mmsr.search.types import SearchResult

LocalPageText = Callable[[str], str]  # world:// URL -> page text (KeyError when unknown)
LOCAL_SCHEME = "world://"


def _is_web(url: str) -> bool:
    return url.startswith(("http://", "https://"))


class PageReader:
    """Full text of a result's page: local corpus for `world://`, `web` for http(s)."""

    def __init__(
        self,
        *,
        local: LocalPageText | None = None,
        web: PageSource | None = None,
        cost: CostMeter | None = None,
    ):
        self.local, self.web, self.cost = local, web, cost

    def read(self, url: str) -> str | None:
        """The page's text; None when this reader is not set up for such URLs (then the
        retrieval snippet stands in, and that is not a problem worth reporting)."""
        if self.local is not None:
            # The local corpus first: a user corpus may hold http(s) URLs of its own pages,
            # which must be read from the corpus, never fetched.
            try:
                return self.local(url)
            except KeyError as err:
                if url.startswith(LOCAL_SCHEME):
                    raise SearchError(f"no local page {url}", backend="reader") from err
        elif url.startswith(LOCAL_SCHEME):
            return None
        if _is_web(url):
            if self.web is None:
                return None
            try:
                page = self.web.fetch(url)
            except SearchError:
                self._count(ok=False)
                raise
            self._count(ok=True)
            return page.text
        raise RefusedURL(f"refused {url[:200]!r}: not a world:// or http(s) URL", backend="reader")

    def _count(self, *, ok: bool) -> None:
        if self.cost is not None and self.web is not None:
            self.cost.record_call(self.web.name, ok=ok)


@dataclass
class TextPipeline:
    """Reads and summarises the hits of one text search, pages in parallel."""

    reader: PageReader | None = None  # None: summarise the retrieval snippets only
    summarizer: Summarizer | None = None  # None: leave `summary` empty (snippets only)
    cost: CostMeter | None = None
    max_workers: int = 4
    min_chars_to_summarize: int = 0  # text this short is used as its own summary

    @property
    def cache_id(self) -> str:
        """What in this pipeline changes results (goes into the cache key)."""
        reader = "none"
        if self.reader is not None:
            web = getattr(self.reader.web, "name", None)
            reader = f"local={self.reader.local is not None},web={web}"
        summarizer = getattr(self.summarizer, "cache_id", getattr(self.summarizer, "name", "none"))
        return f"reader={reader};summarizer={summarizer}"

    def run(
        self, query: str, results: list[SearchResult]
    ) -> tuple[list[SearchResult], list[dict[str, Any]]]:
        """(results with `summary` set, per-page problems as {"url", "error"} dicts)."""
        if self.summarizer is None or not results:
            return results, []
        workers = max(1, min(self.max_workers, len(results)))
        # Threads pay off only while pages are fetched over the network; local pages are
        # read and summarised faster than a pool starts (the local tool's latency budget).
        remote = self.reader is not None and self.reader.web is not None
        if workers == 1 or not remote or not any(_is_web(r.url) for r in results):
            outcomes = [self._one(query, r) for r in results]
        else:
            with ThreadPoolExecutor(workers, thread_name_prefix="mmsr-read") as pool:
                outcomes = list(pool.map(lambda r: self._one(query, r), results))
        problems = [p for _, p in outcomes if p is not None]
        return [r for r, _ in outcomes], problems

    def _one(self, query: str, result: SearchResult) -> tuple[SearchResult, dict | None]:
        assert self.summarizer is not None
        problem = None
        text = result.snippet
        if self.reader is not None and result.url:
            try:
                text = self.reader.read(result.url) or result.snippet
            except SearchError as err:
                problem = _problem(result.url, "read", err)
        if not text.strip():
            return result, problem
        if len(text) <= self.min_chars_to_summarize:
            return replace(result, summary=text.strip()), problem
        try:
            # The snippet is the passage retrieval matched: the summary keeps it in view.
            focus = result.snippet if text != result.snippet else ""
            summary = self.summarizer.summarize(query, text, title=result.title, focus=focus)
            self._count(ok=True)
        except SearchError as err:
            self._count(ok=False)
            problem = _problem(result.url, "summarize", err)
            summary = result.snippet
        return replace(result, summary=summary), problem

    def close(self) -> None:
        """Close the HTTP clients of the web reader and the summariser."""
        for part in (getattr(self.reader, "web", None), self.summarizer):
            close = getattr(part, "close", None)
            if callable(close):
                close()

    def _count(self, *, ok: bool) -> None:
        # Only model calls cost anything; the extractive summariser is free arithmetic.
        if self.cost is not None and getattr(self.summarizer, "name", "") == "llm":
            self.cost.record_call("llm", ok=ok)


def _problem(url: str, stage: str, err: SearchError) -> dict[str, Any]:
    return {"url": url, "stage": stage, "error": str(err), "retryable": err.retryable}
