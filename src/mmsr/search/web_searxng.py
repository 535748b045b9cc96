"""SearXNG backend: free, self-hosted meta-search for text queries.

API: `GET <base>/search?q=...&format=json` answers {"query", "number_of_results",
"results": [{"url", "title", "content", "engine", "score", "thumbnail"?, "img_src"?}],
"answers", "infoboxes", "unresponsive_engines"}. An instance answers 403 to `format=json`
unless `json` is listed under `search.formats` in its settings.yml.
"""

from __future__ import annotations

import httpx

from mmsr.search import web_http
from mmsr.search.errors import MalformedResponse, SearchError
from mmsr.search.types import SearchResult


class SearxngBackend:
    name = "searxng"

    def __init__(
        self,
        base_url: str = "http://127.0.0.1:8080",
        *,
        timeout_s: float = 15.0,
        language: str = "en",
        transport: httpx.BaseTransport | None = None,
    ):
        self.base_url = base_url.rstrip("/")
        self.language = language
        self._client = httpx.Client(timeout=timeout_s, transport=transport)
        self.cache_id = f"{self.name}:{self.base_url}:{language}"

    def search(self, query: str, k: int = 5) -> list[SearchResult]:
        url = f"{self.base_url}/search"
        params = {"q": query, "format": "json", "language": self.language}
        response = web_http.send(self._client, "GET", url, backend=self.name, params=params)
        if response.status_code == 403:
            raise SearchError(
                f"HTTP 403 from {web_http.endpoint(url)}: the instance refuses format=json; "
                "add `json` to `search.formats` in its settings.yml",
                backend=self.name,
            )
        web_http.raise_for_status(response, backend=self.name)
        data = web_http.json_body(response, backend=self.name)
        if "results" not in data:
            raise MalformedResponse(
                f"body from {web_http.endpoint(url)} has no 'results' field "
                f"(keys: {sorted(data)[:8]})",
                backend=self.name,
            )
        items = web_http.list_field(data, "results", backend=self.name, where="SearXNG")
        results = []
        for rank, item in enumerate(items):
            if not item.get("url"):
                continue
            score = item.get("score")
            results.append(
                SearchResult(
                    title=str(item.get("title") or ""),
                    url=str(item["url"]),
                    snippet=str(item.get("content") or ""),
                    thumbnail=str(item.get("thumbnail") or item.get("img_src") or ""),
                    score=float(score) if isinstance(score, int | float) else 1.0 / (1 + rank),
                )
            )
        return results[:k]

    def close(self) -> None:
        self._client.close()
