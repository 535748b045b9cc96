"""SerpAPI backends: Google Lens for image search (the paper's choice) and Google for text.

API: `GET <base>/search.json?engine=...&api_key=...`. Google answers `organic_results`
[{title, link, snippet, thumbnail?}], Lens answers `visual_matches` [{title, link, source,
thumbnail}]. Failures come as HTTP 401/429/5xx with `{"error": "..."}`, or as HTTP 200 with
an `error` field; "hasn't returned any results" is SerpAPI's way of saying "no results".
The key comes only from the environment (`SERPAPI_API_KEY` by default).
"""

from __future__ import annotations

import os
from typing import Any

import httpx

from mmsr.search import web_http
from mmsr.search.errors import BadRequest, SearchError
from mmsr.search.image_host import ImageHost
from mmsr.search.types import SearchResult

_NO_RESULTS = "hasn't returned any results"


class _SerpApiBase:
    name = "serpapi"

    def __init__(
        self,
        *,
        api_key: str | None = None,
        base_url: str = "https://serpapi.com",
        timeout_s: float = 15.0,
        hl: str = "en",
        gl: str = "",
        key_env: str = "SERPAPI_API_KEY",
        transport: httpx.BaseTransport | None = None,
    ):
        key = api_key if api_key is not None else os.environ.get(key_env, "").strip()
        if not key:
            raise SearchError(
                f"no SerpAPI key: set the environment variable {key_env} "
                "(https://serpapi.com/manage-api-key)",
                backend=self.name,
            )
        self._api_key = key
        self.base_url = base_url.rstrip("/")
        self.hl, self.gl = hl, gl
        self._client = httpx.Client(timeout=timeout_s, transport=transport)
        # Results depend on these, so the cache key does too (never the key itself).
        self.cache_id = f"{self.name}:{self.base_url}:hl={hl}:gl={gl}"

    def _call(self, params: dict[str, Any]) -> dict[str, Any]:
        url = f"{self.base_url}/search.json"
        query = {k: v for k, v in params.items() if v not in ("", None)}
        query["api_key"] = self._api_key
        response = web_http.send(self._client, "GET", url, backend=self.name, params=query)
        web_http.raise_for_status(response, backend=self.name)
        data = web_http.json_body(response, backend=self.name)
        error = data.get("error")
        if isinstance(error, str) and error:
            if _NO_RESULTS in error:
                return {}
            raise SearchError(f"SerpAPI error: {error}", backend=self.name)
        status = (data.get("search_metadata") or {}).get("status")
        if status == "Error":
            raise SearchError("SerpAPI reports status 'Error' without a message", backend=self.name)
        return data

    def close(self) -> None:
        self._client.close()


class SerpApiGoogleBackend(_SerpApiBase):
    """Text search through SerpAPI's Google engine (`organic_results`)."""

    name = "serpapi"

    def search(self, query: str, k: int = 5) -> list[SearchResult]:
        data = self._call(
            {"engine": "google", "q": query, "num": max(k, 10), "hl": self.hl, "gl": self.gl}
        )
        items = web_http.list_field(
            data, "organic_results", backend=self.name, where="SerpAPI Google"
        )
        results = []
        for item in items:
            if not item.get("link"):
                continue
            results.append(
                SearchResult(
                    title=str(item.get("title") or ""),
                    url=str(item["link"]),
                    snippet=str(item.get("snippet") or ""),
                    thumbnail=str(item.get("thumbnail") or ""),
                    score=1.0 / (1 + len(results)),  # rank-based: SerpAPI gives no score
                )
            )
        return results[:k]


class SerpApiLensBackend(_SerpApiBase):
    """Image search through SerpAPI's Google Lens engine (`visual_matches`).

    Lens reads the image from a public URL. `search_url(url)` uses one directly; `search(bytes)`
    first asks `image_host` to publish the bytes (see `image_host.py`).
    """

    name = "serpapi_lens"

    def __init__(self, *, image_host: ImageHost | None = None, **kwargs: Any):
        super().__init__(**kwargs)
        self.image_host = image_host

    def search(self, image: bytes, k: int = 5) -> list[SearchResult]:
        if self.image_host is None:
            raise BadRequest(
                "SerpAPI Google Lens needs a public image URL, and this image is local bytes: "
                "pass image_url=..., or set lens_upload_dir and lens_public_base_url in the "
                "search config (a folder your web server publishes at that URL)",
                backend=self.name,
            )
        return self.search_url(self.image_host.publish(image), k)

    def search_url(self, image_url: str, k: int = 5) -> list[SearchResult]:
        if not image_url.startswith(("http://", "https://")):
            raise BadRequest(
                f"Lens needs an http(s) image URL, got {image_url!r}", backend=self.name
            )
        data = self._call(
            {"engine": "google_lens", "url": image_url, "hl": self.hl, "country": self.gl}
        )
        items = web_http.list_field(
            data, "visual_matches", backend=self.name, where="SerpAPI Google Lens"
        )
        results = []
        for item in items:
            if not item.get("link"):
                continue
            source = str(item.get("source") or "")
            results.append(
                SearchResult(
                    title=str(item.get("title") or ""),
                    url=str(item["link"]),
                    snippet=f"Source: {source}" if source else "",
                    thumbnail=str(item.get("thumbnail") or item.get("image") or ""),
                    score=1.0 / (1 + len(results)),
                )
            )
        return results[:k]
