"""The two tools of the paper, as the rollout, the server and the CLI call them.

`ImageSearchTool` and `TextSearchTool` wrap a backend with the cache, cost accounting and
(text) the read-and-summarise pipeline, and always return a `SearchResponse`:

- success: `results` (top-k, best first), `backend`, `cached`, `latency_ms`;
- failure of the search (timeout, rate limit, 5xx, malformed answer, refused URL, empty
  query, bad k, missing image): `results == []` and `response.error` (= `extra["error"]`),
  with `extra["error_type"]` (the `SearchError` class) and `extra["retryable"]`.

They never raise for a failed search, only for programmer errors (a query that is not a
`str`, image that is not `bytes`), so one bad tool call cannot crash a batch of rollouts.
The rollout turns a failure into the observation `failure_text(response)` inside
`<information>...</information>`: the model learns that the tool failed and that it must
answer (or search differently), exactly as it would see "no results".

`asearch` is the same call for asyncio code: the rollout engine runs many tool calls at
once; the blocking work (HTTP, SQLite, index lookups) goes to a worker thread.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

from mmsr.search.cache import SearchCache, cache_key, image_digest, normalize_query
from mmsr.search.config import SearchConfig
from mmsr.search.cost import CostMeter
from mmsr.search.errors import BadRequest, SearchError
from mmsr.search.pipeline import PageReader, TextPipeline
from mmsr.search.types import ImageSearchBackend, SearchResponse, SearchResult, TextSearchBackend

MAX_K = 50  # more results than any prompt can hold; larger k is a caller bug or abuse
MAX_QUERY_CHARS = 1_000


def failure_text(response: SearchResponse) -> str:
    """What the model reads when its search failed (put inside <information>)."""
    kind = response.extra.get("error_type", "SearchError")
    return (
        f"The search failed ({kind}): {response.error}. "
        "No results are available for this call; answer with what you know or search differently."
    )


def _error_response(backend: str, err: SearchError, started: float) -> SearchResponse:
    return SearchResponse(
        results=[],
        backend=backend,
        cached=False,
        latency_ms=(time.perf_counter() - started) * 1000,
        extra={"error": str(err), "error_type": type(err).__name__, "retryable": err.retryable},
    )


def _check_k(k: int | None, default: int) -> int:
    k = default if k is None else k
    if isinstance(k, bool) or not isinstance(k, int):
        raise TypeError(f"k must be an int, got {type(k).__name__}")
    if not 1 <= k <= MAX_K:
        raise BadRequest(f"k={k} is out of range 1..{MAX_K}")
    return k


def _backend_id(backend: Any) -> str:
    """Backend identity for the cache key: its `cache_id` (which a backend changes when its
    index or settings change), else its name."""
    return str(getattr(backend, "cache_id", None) or backend.name)


class _CachedTool:
    kind = ""

    def __init__(
        self,
        backend: Any,
        *,
        cache: SearchCache | None = None,
        cost: CostMeter | None = None,
        k: int = 5,
    ):
        self.backend = backend
        self.cache = cache
        self.cost = cost
        self.k = k
        # A backend that already returns whole responses (the remote client: the server does
        # caching and summarising) is passed through, keeping the server's `cached` flag.
        self.passthrough = hasattr(backend, "search_response")

    @property
    def name(self) -> str:
        return str(self.backend.name)

    @property
    def identity(self) -> str:
        """What decides this tool's results (backend and its index, summariser): stages
        cached on search results key on it."""
        pipeline = getattr(self, "pipeline", None)
        suffix = f"|{pipeline.cache_id}" if pipeline is not None else ""
        return f"{self.kind}:{_backend_id(self.backend)}{suffix}"

    def _lookup(self, key: str) -> list[SearchResult] | None:
        if self.cache is None:
            return None
        hit = self.cache.get(key)
        if hit is not None and self.cost is not None:
            self.cost.record_cache_hit(self.name)
        return hit

    def _call_backend(self, fn, *args) -> list[SearchResult]:
        try:
            results = fn(*args)
        except SearchError:
            if self.cost is not None:
                self.cost.record_call(self.name, ok=False)
            raise
        if self.cost is not None:
            self.cost.record_call(self.name, ok=True)
        return list(results)

    def close(self) -> None:
        for part in (self.backend, getattr(self, "pipeline", None)):
            close = getattr(part, "close", None)
            if callable(close):
                close()


class ImageSearchTool(_CachedTool):
    """Image search: the input image in, top-k pages with a thumbnail and a title out."""

    kind = "image"

    def __init__(self, backend: ImageSearchBackend, **kwargs: Any):
        super().__init__(backend, **kwargs)

    def search(
        self, image: bytes | None = None, *, image_url: str | None = None, k: int | None = None
    ) -> SearchResponse:
        """`image`: encoded PNG/JPEG bytes; `image_url`: a public URL of the same image (web
        engines that only take URLs use it). At least one is needed."""
        if image is not None and not isinstance(image, bytes | bytearray | memoryview):
            raise TypeError(f"image must be bytes, got {type(image).__name__}")
        if image_url is not None and not isinstance(image_url, str):
            raise TypeError(f"image_url must be a str, got {type(image_url).__name__}")
        started = time.perf_counter()
        try:
            k = _check_k(k, self.k)
            image = bytes(image) if image else None
            if not image and not image_url:
                raise BadRequest("image search needs an image (bytes) or an image URL")
            if self.passthrough:
                response = self.backend.search_response(image, image_url=image_url, k=k)
                response.latency_ms = (time.perf_counter() - started) * 1000
                return response
            use_url = image_url is not None and hasattr(self.backend, "search_url")
            if not use_url and not image:
                raise BadRequest(f"backend {self.name!r} searches image bytes, not URLs")
            subject = f"url:{image_url.strip()}" if use_url else f"sha256:{image_digest(image)}"
            key = cache_key("image", _backend_id(self.backend), {"k": k}, subject)
            hit = self._lookup(key)
            if hit is not None:
                latency = (time.perf_counter() - started) * 1000
                return SearchResponse(hit[:k], self.name, cached=True, latency_ms=latency)
            if use_url:
                results = self._call_backend(self.backend.search_url, image_url, k)[:k]
            else:
                results = self._call_backend(self.backend.search, image, k)[:k]
            if self.cache is not None:
                self.cache.put(key, results, kind="image", backend=self.name)
        except SearchError as err:
            return _error_response(self.name, err, started)
        latency = (time.perf_counter() - started) * 1000
        return SearchResponse(results, self.name, cached=False, latency_ms=latency)

    async def asearch(
        self, image: bytes | None = None, *, image_url: str | None = None, k: int | None = None
    ) -> SearchResponse:
        return await asyncio.to_thread(self.search, image, image_url=image_url, k=k)


class TextSearchTool(_CachedTool):
    """Text search: a query in, top-k pages with query-focused summaries out."""

    kind = "text"

    def __init__(
        self, backend: TextSearchBackend, *, pipeline: TextPipeline | None = None, **kwargs: Any
    ):
        super().__init__(backend, **kwargs)
        self.pipeline = pipeline or TextPipeline()

    def search(self, query: str, *, k: int | None = None) -> SearchResponse:
        if not isinstance(query, str):
            raise TypeError(f"query must be a str, got {type(query).__name__}")
        started = time.perf_counter()
        try:
            k = _check_k(k, self.k)
            query = " ".join(query.split())
            if not query:
                raise BadRequest("empty text search query")
            if len(query) > MAX_QUERY_CHARS:
                raise BadRequest(
                    f"query is {len(query)} characters, the limit is {MAX_QUERY_CHARS}"
                )
            if self.passthrough:
                response = self.backend.search_response(query, k=k)
                response.latency_ms = (time.perf_counter() - started) * 1000
                return response
            params = {"k": k, "pipeline": self.pipeline.cache_id}
            key = cache_key("text", _backend_id(self.backend), params, normalize_query(query))
            hit = self._lookup(key)
            if hit is not None:
                latency = (time.perf_counter() - started) * 1000
                return SearchResponse(hit[:k], self.name, cached=True, latency_ms=latency)
            results = self._call_backend(self.backend.search, query, k)[:k]
            results, problems = self.pipeline.run(query, results)
            # A page that failed for a passing reason (timeout, 5xx) would freeze a degraded
            # summary into the cache; such results are served but not stored.
            if self.cache is not None and not any(p.get("retryable") for p in problems):
                self.cache.put(key, results, kind="text", backend=self.name)
        except SearchError as err:
            return _error_response(self.name, err, started)
        latency = (time.perf_counter() - started) * 1000
        extra = {"page_errors": problems} if problems else {}
        return SearchResponse(results, self.name, cached=False, latency_ms=latency, extra=extra)

    async def asearch(self, query: str, *, k: int | None = None) -> SearchResponse:
        return await asyncio.to_thread(self.search, query, k=k)


# ---------------------------------------------------------------------------------------
# Factory: backends by name from the config
# ---------------------------------------------------------------------------------------


@dataclass
class SearchTools:
    """Both tools sharing one cache and one cost meter. Build with `make_tools(config)`."""

    image: ImageSearchTool | None
    text: TextSearchTool | None
    cache: SearchCache | None
    cost: CostMeter
    config: SearchConfig
    extra: dict[str, Any] = field(default_factory=dict)

    def identity(self) -> dict[str, str | None]:
        """Each tool's `identity` (None: no such tool)."""
        return {
            "image": self.image.identity if self.image is not None else None,
            "text": self.text.identity if self.text is not None else None,
        }

    def stats(self) -> dict[str, Any]:
        return {
            "cache": self.cache.summary() if self.cache is not None else None,
            "cost": self.cost.summary(),
        }

    def close(self) -> None:
        for tool in (self.image, self.text):
            if tool is not None:
                tool.close()
        if self.cache is not None:
            self.cache.close()


def make_tools(
    config: SearchConfig | None = None, *, image: bool = True, text: bool = True
) -> SearchTools:
    """Tools for `config` (default config: local backends). `image=False` / `text=False`
    skip building a tool (and loading its index) when a caller needs only one."""
    config = config or SearchConfig()
    cost = CostMeter(config.prices_usd)
    cache = SearchCache(config.cache_path, ttl_s=config.cache_ttl_s) if config.cache else None
    image_tool = text_tool = None
    if image:
        image_tool = ImageSearchTool(make_image_backend(config), cache=cache, cost=cost, k=config.k)
    if text:
        backend = make_text_backend(config)
        pipeline = (
            TextPipeline()
            if config.text_backend == "remote"
            else make_pipeline(config, backend, cost)
        )
        text_tool = TextSearchTool(backend, pipeline=pipeline, cache=cache, cost=cost, k=config.k)
    return SearchTools(image_tool, text_tool, cache, cost, config)


def make_image_backend(config: SearchConfig) -> ImageSearchBackend:
    name = config.image_backend
    if name == "local":
        return _local_backend("mmsr.search.local_image", "LocalImageBackend", config)
    if name == "serpapi":
        from mmsr.search.image_host import DirectoryImageHost
        from mmsr.search.web_serpapi import SerpApiLensBackend

        host = None
        if config.lens_upload_dir or config.lens_public_base_url:
            if not (config.lens_upload_dir and config.lens_public_base_url):
                raise ValueError(
                    "search config: set both lens_upload_dir and lens_public_base_url, or neither"
                )
            host = DirectoryImageHost(config.lens_upload_dir, config.lens_public_base_url)
        return SerpApiLensBackend(
            image_host=host,
            base_url=config.serpapi_base_url,
            timeout_s=config.timeout_s,
            hl=config.serpapi_hl,
            gl=config.serpapi_gl,
            key_env=config.serpapi_key_env,
        )
    if name == "remote":
        from mmsr.search.client import RemoteImageBackend

        return RemoteImageBackend(_remote_client(config))
    raise ValueError(f"unknown image_backend {name!r}")


def make_text_backend(config: SearchConfig) -> TextSearchBackend:
    name = config.text_backend
    if name == "local":
        return _local_backend("mmsr.search.local_text", "LocalTextBackend", config)
    if name == "serpapi":
        from mmsr.search.web_serpapi import SerpApiGoogleBackend

        return SerpApiGoogleBackend(
            base_url=config.serpapi_base_url,
            timeout_s=config.timeout_s,
            hl=config.serpapi_hl,
            gl=config.serpapi_gl,
            key_env=config.serpapi_key_env,
        )
    if name == "searxng":
        from mmsr.search.web_searxng import SearxngBackend

        return SearxngBackend(config.searxng_base_url, timeout_s=config.timeout_s)
    if name == "remote":
        from mmsr.search.client import RemoteTextBackend

        return RemoteTextBackend(_remote_client(config))
    raise ValueError(f"unknown text_backend {name!r}")


def make_pipeline(config: SearchConfig, backend: Any, cost: CostMeter) -> TextPipeline:
    """Reader + summariser for a text backend. Local pages are read through the backend's
    `page_text(url)` when it has one, else from the embedded world."""
    from mmsr.search.fetch import JinaReader, PageFetcher
    from mmsr.search.netguard import AddressPolicy
    from mmsr.search.summarize import ExtractiveSummarizer, LLMSummarizer

    policy = AddressPolicy(tuple(config.fetch_allow_networks))
    web = None
    if config.reader == "trafilatura":
        web = PageFetcher(
            policy=policy, timeout_s=config.fetch_timeout_s, max_bytes=config.fetch_max_bytes
        )
    elif config.reader == "jina":
        web = JinaReader(
            base_url=config.jina_base_url,
            key_env=config.jina_key_env,
            timeout_s=config.fetch_timeout_s,
            max_bytes=config.fetch_max_bytes,
            policy=policy,
        )
    local = getattr(backend, "page_text", None) or _world_page_text
    summarizer = None
    if config.summarizer == "extractive":
        summarizer = ExtractiveSummarizer(
            config.summary_max_chars,
            order=config.summary_order,
            join_labels=config.summary_join_labels,
        )
    elif config.summarizer == "llm":
        summarizer = LLMSummarizer(
            base_url=config.llm_base_url,
            model=config.llm_model,
            key_env=config.llm_key_env,
            max_chars=config.summary_max_chars,
        )
    return TextPipeline(
        reader=PageReader(local=local, web=web, cost=cost),
        summarizer=summarizer,
        cost=cost,
        max_workers=config.fetch_workers,
        min_chars_to_summarize=config.summary_max_chars,
    )


def _world_page_text(url: str) -> str:
    from mmsr.world.load import load_world

    return load_world().page(url).text


def _remote_client(config: SearchConfig):
    from mmsr.search.client import SearchClient

    return SearchClient(
        config.remote_url,
        token=config.env_secret(config.remote_token_env) or None,
        timeout_s=config.timeout_s,
        retries=config.remote_retries,
    )


def _local_backend(module_name: str, class_name: str, config: SearchConfig) -> Any:
    import importlib

    try:
        module = importlib.import_module(module_name)
        cls = getattr(module, class_name)
    except (ImportError, AttributeError) as err:
        raise RuntimeError(
            f"the local search backend {module_name}.{class_name} is not available ({err}); "
            "choose a web backend (--backend serpapi|searxng) or a server (--backend remote)"
        ) from err
    from_config = getattr(cls, "from_config", None)
    return from_config(config) if callable(from_config) else cls()
