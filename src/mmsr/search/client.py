"""Client of `mmsr serve search`: the same tool interface, served by another process.

`SearchClient` speaks the server's JSON with timeouts and retries (exponential backoff with
full jitter, honouring `Retry-After`) on retryable failures: connection errors, timeouts,
429, 502/503/504. `RemoteImageBackend` / `RemoteTextBackend` make it a backend, so
`make_tools` (backend `remote`) gives rollout workers the server's index and shared cache.
"""

from __future__ import annotations

import base64
import contextlib
import random
import time
from collections.abc import Callable
from typing import Any

import httpx

from mmsr.search import errors as search_errors
from mmsr.search import web_http
from mmsr.search.errors import BackendUnavailable, RateLimited, SearchError, SearchTimeout
from mmsr.search.types import SearchResponse, SearchResult

RETRY_STATUSES = (429, 502, 503, 504)
_ERROR_CLASSES = {
    cls.__name__: cls
    for cls in (
        search_errors.SearchError,
        search_errors.SearchTimeout,
        search_errors.RateLimited,
        search_errors.BackendUnavailable,
        search_errors.MalformedResponse,
        search_errors.RefusedURL,
        search_errors.BadRequest,
    )
}


class SearchClient:
    """HTTP client of the search server."""

    name = "remote"

    def __init__(
        self,
        base_url: str = "http://127.0.0.1:8765",
        *,
        token: str | None = None,
        timeout_s: float = 30.0,
        retries: int = 3,
        backoff_s: float = 0.2,
        max_backoff_s: float = 5.0,
        sleep: Callable[[float], None] = time.sleep,
        transport: httpx.BaseTransport | None = None,
    ):
        self.base_url = base_url.rstrip("/")
        self.retries, self.backoff_s, self.max_backoff_s = retries, backoff_s, max_backoff_s
        self.sleep = sleep
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._client = httpx.Client(
            base_url=self.base_url, timeout=timeout_s, headers=headers, transport=transport
        )
        self.attempts = 0  # requests sent, retries included (for tests and diagnostics)

    # ----------------------------------------------------------------- public calls
    def search_text(self, query: str, k: int = 5) -> SearchResponse:
        return self._search("/search/text", {"query": query, "k": k})

    def search_image(
        self, image: bytes | None = None, *, image_url: str | None = None, k: int = 5
    ) -> SearchResponse:
        body: dict[str, Any] = {"k": k}
        if image:
            body["image_b64"] = base64.b64encode(image).decode("ascii")
        if image_url:
            body["image_url"] = image_url
        return self._search("/search/image", body)

    def health(self) -> dict[str, Any]:
        return web_http.json_body(self._request("GET", "/health"), backend=self.name)

    def stats(self) -> dict[str, Any]:
        return web_http.json_body(self._request("GET", "/stats"), backend=self.name)

    def close(self) -> None:
        self._client.close()

    # ----------------------------------------------------------------- internals
    def _search(self, path: str, body: dict[str, Any]) -> SearchResponse:
        data = web_http.json_body(self._request("POST", path, json=body), backend=self.name)
        if not isinstance(data.get("results"), list):
            raise search_errors.MalformedResponse(
                f"{self.base_url}{path}: answer has no 'results' list", backend=self.name
            )
        return SearchResponse.from_dict(data)

    def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """Send with retries; return a 2xx response or raise the typed error."""
        for attempt in range(self.retries + 1):
            last = attempt == self.retries
            self.attempts += 1
            try:
                response = web_http.send(self._client, method, path, backend=self.name, **kwargs)
            except (SearchTimeout, BackendUnavailable):
                if last:
                    raise
                self.sleep(self._delay(attempt))
                continue
            if response.status_code < 400:
                return response
            error = self._error_from(response)
            if last or response.status_code not in RETRY_STATUSES or not error.retryable:
                raise error
            self.sleep(self._delay(attempt, response.headers.get("retry-after")))
        raise AssertionError("unreachable")

    def _delay(self, attempt: int, retry_after: str | None = None) -> float:
        """Full jitter: uniform in [0, backoff * 2^attempt], capped; a server's Retry-After
        (seconds) is a floor, capped too, so a client never sleeps unboundedly."""
        ceiling = min(self.max_backoff_s, self.backoff_s * (2**attempt))
        delay = random.uniform(0, ceiling)
        if retry_after:
            with contextlib.suppress(ValueError):
                delay = max(delay, min(float(retry_after), self.max_backoff_s))
        return delay

    def _error_from(self, response: httpx.Response) -> SearchError:
        """The server's typed error ({"error": {"type", "message", "retryable"}}), else one
        mapped from the status code."""
        status = response.status_code
        if status == 401:
            return SearchError(
                f"HTTP 401 from {self.base_url}: {web_http.body_error_message(response)} "
                "(set the server's token in MMSR_SEARCH_TOKEN)",
                backend=self.name,
            )
        try:
            payload = response.json().get("error")
        except (ValueError, AttributeError):
            payload = None
        if isinstance(payload, dict) and payload.get("type") in _ERROR_CLASSES:
            cls = _ERROR_CLASSES[payload["type"]]
            retryable = bool(payload.get("retryable")) or status in (429, 503)
            return cls(
                f"server: {payload.get('message', '')}", backend=self.name, retryable=retryable
            )
        message = f"HTTP {status} from {self.base_url}: {web_http.body_error_message(response)}"
        if status == 429:
            return RateLimited(message, backend=self.name, retryable=True)
        if status in (502, 503, 504):
            return BackendUnavailable(message, backend=self.name, retryable=True)
        return SearchError(message, backend=self.name)


class RemoteImageBackend:
    """Image search on the server (its backend, cache and cost meter)."""

    name = "remote"

    def __init__(self, client: SearchClient):
        self.client = client

    def search(self, image: bytes, k: int = 5) -> list[SearchResult]:
        return self.search_response(image, k=k).results

    def search_url(self, image_url: str, k: int = 5) -> list[SearchResult]:
        return self.search_response(None, image_url=image_url, k=k).results

    def search_response(
        self, image: bytes | None, *, image_url: str | None = None, k: int = 5
    ) -> SearchResponse:
        return self.client.search_image(image, image_url=image_url, k=k)

    def close(self) -> None:
        self.client.close()


class RemoteTextBackend:
    """Text search on the server: results come back already read and summarised."""

    name = "remote"

    def __init__(self, client: SearchClient):
        self.client = client

    def search(self, query: str, k: int = 5) -> list[SearchResult]:
        return self.search_response(query, k=k).results

    def search_response(self, query: str, *, k: int = 5) -> SearchResponse:
        return self.client.search_text(query, k=k)

    def close(self) -> None:
        self.client.close()
