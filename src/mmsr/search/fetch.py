"""Reading web pages as plain text: safely, with bounded size and time.

Two readers share one interface (`fetch(url) -> FetchedPage`):
- `PageFetcher`: httpx + trafilatura (HTML to main text). Only http(s); every connection,
  including each redirect hop (followed here, by hand), goes through `netguard`'s address
  policy; at most `max_bytes` are downloaded (the stream is cut there) and the whole read,
  redirects included, gets `timeout_s` (plus at most one socket read timeout).
- `JinaReader`: asks Jina Reader (`r.jina.ai`) to read the page. The URL is checked with
  the same policy first (scheme and resolved addresses), since Jina fetches what we name.
"""

from __future__ import annotations

import os
import re
import time
from dataclasses import dataclass
from typing import Protocol
from urllib.parse import urljoin, urlsplit

import httpx

from mmsr.search import web_http
from mmsr.search.errors import (
    BackendUnavailable,
    MalformedResponse,
    RateLimited,
    RefusedURL,
    SearchError,
    SearchTimeout,
)
from mmsr.search.netguard import AddressPolicy, GuardedTransport, Resolver, checked_addresses
from mmsr.search.netguard import system_resolver as _system_resolver

ALLOWED_SCHEMES = ("http", "https")
TEXT_CONTENT_TYPES = ("text/html", "application/xhtml+xml", "text/plain", "application/json")
_REDIRECT_STATUSES = (301, 302, 303, 307, 308)
_TITLE_RE = re.compile(r"<title[^>]*>(.*?)</title>", re.IGNORECASE | re.DOTALL)
USER_AGENT = "mmsr-reader/0.1 (+https://github.com/; research search agent)"


@dataclass
class FetchedPage:
    """A page read as text."""

    url: str  # as requested
    final_url: str  # after redirects
    title: str
    text: str  # main text, plain
    content_type: str
    n_bytes: int  # bytes downloaded (after content decoding)
    truncated: bool  # True when the page was longer than max_bytes and cut


class PageSource(Protocol):
    name: str

    def fetch(self, url: str) -> FetchedPage: ...


def check_scheme(url: str) -> str:
    """The URL's host, or RefusedURL unless it is an http(s) URL with a host."""
    parts = urlsplit(url)
    if parts.scheme.lower() not in ALLOWED_SCHEMES:
        raise RefusedURL(
            f"refused {url[:200]!r}: scheme {parts.scheme or '(none)'!r} is not http(s)",
            backend="fetch",
        )
    if not parts.hostname:
        raise RefusedURL(f"refused {url[:200]!r}: no host", backend="fetch")
    if parts.username or parts.password:
        raise RefusedURL(f"refused {url[:200]!r}: credentials in URL", backend="fetch")
    return parts.hostname


def check_url(
    url: str, policy: AddressPolicy | None = None, resolver: Resolver | None = None
) -> None:
    """Scheme and resolved-address checks without connecting (used before handing a URL to a
    third-party reader). `PageFetcher` does the address check at connect time instead."""
    host = check_scheme(url)
    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme.lower() == "https" else 80)
    checked_addresses(host, port, policy or AddressPolicy(), resolver or _system_resolver)


def html_to_text(html: str, url: str = "") -> str:
    """Main text of an HTML page (trafilatura); falls back to all visible text for pages too
    small or odd for main-content extraction."""
    import trafilatura

    text = trafilatura.extract(html, url=url or None, include_comments=False, include_tables=True)
    if not text:
        text = trafilatura.html2txt(html)
    return (text or "").strip()


def html_title(html: str) -> str:
    match = _TITLE_RE.search(html[:200_000])
    if not match:
        return ""
    import html as html_lib

    return " ".join(html_lib.unescape(match.group(1)).split())[:300]


class PageFetcher:
    """httpx + trafilatura reader with the address guard, a size cap and a time cap."""

    name = "fetch"

    def __init__(
        self,
        *,
        policy: AddressPolicy | None = None,
        resolver: Resolver | None = None,
        timeout_s: float = 10.0,
        max_bytes: int = 2_000_000,
        max_redirects: int = 5,
    ):
        self.policy = policy or AddressPolicy()
        self.timeout_s = timeout_s
        self.max_bytes = max_bytes
        self.max_redirects = max_redirects
        self._client = httpx.Client(
            transport=GuardedTransport(self.policy, resolver),
            timeout=timeout_s,
            follow_redirects=False,  # each hop is handled (and checked) below
            trust_env=False,
            headers={"User-Agent": USER_AGENT, "Accept": "text/html,text/plain;q=0.9,*/*;q=0.1"},
        )

    def fetch(self, url: str) -> FetchedPage:
        deadline = time.monotonic() + self.timeout_s
        current = url
        for _hop in range(self.max_redirects + 1):
            check_scheme(current)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise SearchTimeout(
                    f"reading {url[:200]} took over {self.timeout_s}s",
                    backend="fetch",
                    retryable=True,
                )
            request = self._client.build_request("GET", current, timeout=remaining)
            try:
                response = self._client.send(request, stream=True)
            except RefusedURL as err:
                hop = "" if current == url else f" (redirected from {url[:200]})"
                raise RefusedURL(f"{err.message}{hop}", backend="fetch") from err
            except httpx.TimeoutException as err:
                raise SearchTimeout(
                    f"no answer from {web_http.endpoint(current)} in time",
                    backend="fetch",
                    retryable=True,
                ) from err
            except httpx.HTTPError as err:
                raise BackendUnavailable(
                    f"cannot read {web_http.endpoint(current)}: {type(err).__name__}: {err}",
                    backend="fetch",
                    retryable=True,
                ) from err
            try:
                if response.status_code in _REDIRECT_STATUSES:
                    location = response.headers.get("location")
                    if not location:
                        raise MalformedResponse(
                            f"redirect {response.status_code} from {current[:200]} without "
                            "Location",
                            backend="fetch",
                        )
                    current = urljoin(current, location)
                    continue
                return self._read_body(url, current, response, deadline)
            finally:
                response.close()
        raise RefusedURL(
            f"refused {url[:200]}: more than {self.max_redirects} redirects", backend="fetch"
        )

    def _read_body(
        self, url: str, final_url: str, response: httpx.Response, deadline: float
    ) -> FetchedPage:
        status = response.status_code
        if status >= 400:
            where = web_http.endpoint(final_url)
            if status == 429:
                raise RateLimited(f"HTTP 429 from {where}", backend="fetch", retryable=True)
            if status >= 500:
                raise BackendUnavailable(
                    f"HTTP {status} from {where}", backend="fetch", retryable=True
                )
            raise SearchError(f"HTTP {status} from {where}", backend="fetch")
        content_type = response.headers.get("content-type", "").split(";")[0].strip().lower()
        if content_type and content_type not in TEXT_CONTENT_TYPES:
            raise RefusedURL(
                f"refused {final_url[:200]}: content type {content_type!r} is not a text page",
                backend="fetch",
            )
        buffer, truncated = bytearray(), False
        try:
            for chunk in response.iter_bytes():
                if time.monotonic() > deadline:
                    raise SearchTimeout(
                        f"reading {final_url[:200]} took over {self.timeout_s}s",
                        backend="fetch",
                        retryable=True,
                    )
                buffer += chunk
                if len(buffer) > self.max_bytes:  # stop downloading; keep what fits
                    truncated = True
                    break
        except httpx.TimeoutException as err:
            raise SearchTimeout(
                f"{final_url[:200]} stopped sending", backend="fetch", retryable=True
            ) from err
        except httpx.HTTPError as err:
            raise BackendUnavailable(
                f"reading {final_url[:200]} failed: {type(err).__name__}",
                backend="fetch",
                retryable=True,
            ) from err
        raw = bytes(buffer[: self.max_bytes])
        n_bytes = len(raw)
        body = raw.decode(response.encoding or "utf-8", errors="replace")
        if content_type in ("text/html", "application/xhtml+xml") or body.lstrip()[:1] == "<":
            title, text = html_title(body), html_to_text(body, final_url)
        else:
            title, text = "", body.strip()
        return FetchedPage(url, final_url, title, text, content_type, n_bytes, truncated)

    def close(self) -> None:
        self._client.close()


class JinaReader:
    """Pages read by Jina Reader: `GET <base>/<url>` with `Accept: application/json`, which
    answers {"code": 200, "data": {"title", "url", "content"}}."""

    name = "jina"

    def __init__(
        self,
        *,
        base_url: str = "https://r.jina.ai",
        api_key: str | None = None,
        key_env: str = "JINA_API_KEY",
        timeout_s: float = 20.0,
        max_bytes: int = 2_000_000,
        policy: AddressPolicy | None = None,
        resolver: Resolver | None = None,
        transport: httpx.BaseTransport | None = None,
    ):
        self.base_url = base_url.rstrip("/")
        key = api_key if api_key is not None else os.environ.get(key_env, "").strip()
        headers = {"Accept": "application/json", "X-Return-Format": "text"}
        if key:
            headers["Authorization"] = f"Bearer {key}"
        self.policy = policy or AddressPolicy()
        self.resolver = resolver
        self.timeout_s = timeout_s
        self.max_bytes = max_bytes
        self._client = httpx.Client(timeout=timeout_s, headers=headers, transport=transport)

    def fetch(self, url: str) -> FetchedPage:
        check_url(url, self.policy, self.resolver)
        endpoint = f"{self.base_url}/{url}"
        deadline = time.monotonic() + self.timeout_s
        try:
            with self._client.stream("GET", endpoint) as response:
                buffer, truncated = bytearray(), False
                for chunk in response.iter_bytes():
                    if time.monotonic() > deadline:
                        raise SearchTimeout(
                            f"Jina took over {self.timeout_s}s", backend="jina", retryable=True
                        )
                    buffer += chunk
                    if len(buffer) > self.max_bytes:
                        truncated = True
                        break
        except httpx.TimeoutException as err:
            raise SearchTimeout(
                f"Jina Reader did not answer for {url[:200]}", backend="jina", retryable=True
            ) from err
        except httpx.HTTPError as err:
            raise BackendUnavailable(
                f"cannot reach Jina Reader: {err}", backend="jina", retryable=True
            ) from err
        body = bytes(buffer[: self.max_bytes])
        # A plain response over the decoded bytes (dropping Content-Encoding, already applied).
        response = httpx.Response(
            response.status_code,
            headers={"content-type": response.headers.get("content-type", "")},
            content=body,
            request=response.request,
        )
        web_http.raise_for_status(response, backend="jina")
        if truncated:  # a cut JSON document cannot be parsed; say so instead of "malformed"
            raise RefusedURL(
                f"Jina's answer for {url[:200]} exceeds {self.max_bytes} bytes", backend="jina"
            )
        data = web_http.json_body(response, backend="jina").get("data")
        if not isinstance(data, dict) or not isinstance(data.get("content"), str):
            raise MalformedResponse("Jina answer has no data.content string", backend="jina")
        text = data["content"].strip()
        return FetchedPage(
            url=url,
            final_url=str(data.get("url") or url),
            title=str(data.get("title") or ""),
            text=text,
            content_type="text/plain",
            n_bytes=len(body),
            truncated=False,
        )

    def close(self) -> None:
        self._client.close()
