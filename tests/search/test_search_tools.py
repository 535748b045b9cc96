"""Tools: cache, cost, error responses, the read-and-summarise pipeline, the factory."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from mmsr.search.cache import SearchCache
from mmsr.search.config import SearchConfig
from mmsr.search.cost import CostMeter
from mmsr.search.errors import RateLimited, SearchError, SearchTimeout
from mmsr.search.fetch import PageFetcher
from mmsr.search.netguard import AddressPolicy
from mmsr.search.pipeline import PageReader, TextPipeline
from mmsr.search.summarize import ExtractiveSummarizer
from mmsr.search.tools import (
    ImageSearchTool,
    TextSearchTool,
    _local_backend,
    failure_text,
    make_tools,
)
from mmsr.search.types import SearchResult

from .conftest import Reply

PNG = b"\x89PNG\r\n\x1a\n" + b"\x01" * 16
FRANCE_PAGE = (
    "France is a country in Western Europe. Capital: Paris. "
    "The flag is a vertical tricolour of blue, white and red. Currency: euro. "
    + "Filler sentence about nothing in particular. "
    * 30
)


class FakeText:
    """An in-memory text backend: fixed hits, optional failure, call counter."""

    name = "fake_text"

    def __init__(self, results=None, error: SearchError | None = None, delay_s: float = 0.0):
        self.results = (
            results
            if results is not None
            else [
                SearchResult(
                    "France — Overview", "world://factbook/fr/overview", snippet="France…"
                ),
                SearchResult("Paris facts", "https://example.org/paris", snippet="Paris snippet."),
            ]
        )
        self.error, self.delay_s, self.calls = error, delay_s, 0
        self.page_texts = {"world://factbook/fr/overview": FRANCE_PAGE}

    def search(self, query: str, k: int = 5):
        self.calls += 1
        time.sleep(self.delay_s)
        if self.error:
            raise self.error
        return self.results[:k]

    def page_text(self, url: str) -> str:
        return self.page_texts[url]


class FakeImage:
    name = "fake_image"

    def __init__(self):
        self.calls = 0

    def search(self, image: bytes, k: int = 5):
        self.calls += 1
        return [
            SearchResult(f"hit {i}", f"world://img/{i}", thumbnail=f"t{i}.png") for i in range(k)
        ]


@pytest.fixture
def cache(tmp_path):
    return SearchCache(tmp_path / "cache.sqlite")


def test_image_tool_caches_by_image_hash(cache):
    backend, cost = FakeImage(), CostMeter({"fake_image": 0.5})
    tool = ImageSearchTool(backend, cache=cache, cost=cost, k=3)
    first = tool.search(PNG)
    assert [r.title for r in first.results] == ["hit 0", "hit 1", "hit 2"]
    assert not first.cached and first.backend == "fake_image" and first.latency_ms > 0
    second = tool.search(PNG)
    assert second.cached and second.results == first.results and backend.calls == 1
    tool.search(PNG + b"x")  # another image: a miss
    assert backend.calls == 2
    usage = cost.summary()["backends"]["fake_image"]
    assert (usage["calls"], usage["cache_hits"], usage["estimated_usd"]) == (2, 1, 1.0)


def test_text_tool_cache_normalises_the_query(cache):
    backend = FakeText()
    tool = TextSearchTool(backend, cache=cache)
    assert not tool.search("Capital of  France").cached
    assert tool.search("  capital of france ").cached
    assert backend.calls == 1
    assert not tool.search("capital of france", k=1).cached  # k is part of the key


def test_failures_become_error_responses():
    tool = TextSearchTool(FakeText(error=RateLimited("quota", backend="fake", retryable=True)))
    response = tool.search("q")
    assert response.results == [] and response.error == "[fake] quota"
    assert response.extra["error_type"] == "RateLimited" and response.extra["retryable"]
    assert "RateLimited" in failure_text(response) and "quota" in failure_text(response)
    for bad in ("", "   "):
        assert tool.search(bad).extra["error_type"] == "BadRequest"
    assert tool.search("q", k=0).extra["error_type"] == "BadRequest"
    assert tool.search("x" * 5000).extra["error_type"] == "BadRequest"
    image_tool = ImageSearchTool(FakeImage())
    assert image_tool.search(None).extra["error_type"] == "BadRequest"
    assert "URLs" in image_tool.search(image_url="https://x.org/a.png").error


def test_failures_are_not_cached(cache):
    backend = FakeText(error=SearchTimeout("slow", backend="fake", retryable=True))
    tool = TextSearchTool(backend, cache=cache)
    assert tool.search("q").error
    backend.error = None
    assert tool.search("q").results and backend.calls == 2


def test_programmer_errors_raise():
    with pytest.raises(TypeError):
        TextSearchTool(FakeText()).search(b"bytes")
    with pytest.raises(TypeError):
        ImageSearchTool(FakeImage()).search("a path, not bytes")
    with pytest.raises(TypeError):
        TextSearchTool(FakeText()).search("q", k="5")


def test_text_pipeline_reads_local_and_web_pages_and_summarises(fake_http):
    fake_http.route(
        "/paris",
        Reply(
            200,
            "<html><body><article><p>Paris is the capital of France since 987. "
            "It hosts the Louvre.</p></article></body></html>",
        ),
    )
    backend = FakeText()
    backend.results[1] = SearchResult("Paris facts", f"{fake_http.url}/paris", snippet="s")
    cost = CostMeter()
    fetcher = PageFetcher(policy=AddressPolicy(("127.0.0.0/8",)))
    pipeline = TextPipeline(
        reader=PageReader(local=backend.page_text, web=fetcher, cost=cost),
        summarizer=ExtractiveSummarizer(max_chars=80),
        cost=cost,
    )
    response = TextSearchTool(backend, pipeline=pipeline, cost=cost).search("capital of France")
    local, web = response.results
    # The query's sentences of a long page, best first, within the cap, none of the filler.
    assert local.summary == "Capital: Paris. France is a country in Western Europe."
    assert "capital of France since 987" in web.summary
    assert cost.summary()["backends"]["fetch"]["calls"] == 1
    assert "page_errors" not in response.extra


def test_unreadable_pages_fall_back_to_snippets(cache):
    backend = FakeText()
    backend.results[1] = SearchResult("Internal", "http://10.0.0.5/admin", snippet="An admin page.")
    pipeline = TextPipeline(
        reader=PageReader(local=backend.page_text, web=PageFetcher()),
        summarizer=ExtractiveSummarizer(),
        min_chars_to_summarize=100,
    )
    response = TextSearchTool(backend, pipeline=pipeline, cache=cache).search("admin")
    assert response.results[1].summary == "An admin page."
    (problem,) = response.extra["page_errors"]
    assert problem["stage"] == "read" and "private" in problem["error"]
    assert not problem["retryable"]
    assert TextSearchTool(backend, pipeline=pipeline, cache=cache).search("admin").cached


def test_asearch_runs_calls_concurrently():
    backend = FakeText(delay_s=0.3)
    tool = TextSearchTool(backend)

    async def many():
        return await asyncio.gather(*(tool.asearch(f"q{i}") for i in range(4)))

    started = time.perf_counter()
    responses = asyncio.run(many())
    elapsed = time.perf_counter() - started
    assert all(r.results for r in responses) and backend.calls == 4
    assert elapsed < 0.9  # four 0.3 s searches overlapped


def test_image_asearch():
    responses = asyncio.run(ImageSearchTool(FakeImage()).asearch(PNG, k=2))
    assert len(responses.results) == 2


def test_make_tools_with_searxng(fake_http, tmp_path):
    fake_http.route(
        "/search",
        Reply(
            200,
            {
                "query": "q",
                "results": [
                    {
                        "url": "world://factbook/fr/overview",
                        "title": "France",
                        "content": "France is…",
                    }
                ],
            },
        ),
    )
    config = SearchConfig(
        image_backend="remote",
        text_backend="searxng",
        searxng_base_url=fake_http.url,
        cache_path=str(tmp_path / "c.sqlite"),
    )
    tools = make_tools(config, image=False)
    try:
        tools.text.pipeline.reader.local = {"world://factbook/fr/overview": FRANCE_PAGE}.__getitem__
        response = tools.text.search("France flag colours")
        assert response.backend == "searxng"
        assert "tricolour" in response.results[0].summary
        assert tools.text.search("france flag colours").cached
        stats = tools.stats()
        assert stats["cache"]["hits"] == 1 and stats["cost"]["backends"]["searxng"]["calls"] == 1
    finally:
        tools.close()


def test_make_tools_serpapi_without_key_fails_clearly(monkeypatch, tmp_path):
    monkeypatch.delenv("SERPAPI_API_KEY", raising=False)
    config = SearchConfig(text_backend="serpapi", cache_path=str(tmp_path / "c.sqlite"))
    with pytest.raises(SearchError, match="SERPAPI_API_KEY"):
        make_tools(config, image=False)


def test_missing_local_backend_is_a_clear_error():
    with pytest.raises(RuntimeError, match="not available.*--backend"):
        _local_backend("mmsr.search.no_such_module", "LocalTextBackend", SearchConfig())


def test_config_validation_and_yaml(tmp_path):
    with pytest.raises(ValueError, match="text_backend='bing'"):
        SearchConfig(text_backend="bing")
    path = tmp_path / "search.yaml"
    path.write_text("search:\n  text_backend: searxng\n  prices_usd: {searxng: 0.001}\n")
    config = SearchConfig.from_yaml(path)
    assert config.text_backend == "searxng" and config.prices_usd["searxng"] == 0.001
    assert config.prices_usd["serpapi"] == 0.015  # defaults kept for the others
    path.write_text("text_backend: searxng\nserpapi_key: abc\n")
    with pytest.raises(ValueError, match=r"search.yaml: unknown option\(s\) \['serpapi_key'\]"):
        SearchConfig.from_yaml(path)
    assert SearchConfig.load(None, k=3, text_backend=None).k == 3


def test_tool_is_thread_safe_with_a_shared_cache(cache):
    backend = FakeText()
    tool = TextSearchTool(backend, cache=cache)
    errors = []

    def worker(i):
        response = tool.search(f"query {i % 5}")
        if response.error:
            errors.append(response.error)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(40)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(cache) == 5


def test_tool_identity_names_the_summariser():
    backend = FakeText()
    page = TextSearchTool(
        backend, pipeline=TextPipeline(summarizer=ExtractiveSummarizer(order="page"))
    )
    best = TextSearchTool(backend, pipeline=TextPipeline(summarizer=ExtractiveSummarizer()))
    assert page.identity.startswith("text:") and page.identity != best.identity
    assert ImageSearchTool(FakeImage()).identity.startswith("image:")
