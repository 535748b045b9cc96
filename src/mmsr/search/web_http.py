"""One place that turns HTTP outcomes into typed `SearchError`s for every web backend.

Web APIs fail in many shapes (timeouts, refused connections, 429, 5xx, HTML error pages,
JSON with an `error` field); callers only ever see one of the classes in `errors.py`, with
a message that names the backend and the endpoint, never the API key.
"""

from __future__ import annotations

import json
import re
from typing import Any

import httpx

from mmsr.search.errors import (
    BackendUnavailable,
    BadRequest,
    MalformedResponse,
    RateLimited,
    SearchError,
    SearchTimeout,
)

_SECRET_PARAMS = re.compile(r"(api_key|key|token)=[^&\s]+", re.IGNORECASE)


def redact(url: str | httpx.URL) -> str:
    """The URL without secret query values (API keys must never reach logs or messages)."""
    return _SECRET_PARAMS.sub(lambda m: f"{m.group(1)}=***", str(url))


def endpoint(url: str | httpx.URL) -> str:
    """scheme://host/path of a URL, for messages (the query may hold the search itself)."""
    parsed = httpx.URL(str(url))
    return f"{parsed.scheme}://{parsed.netloc.decode('ascii', 'replace')}{parsed.path}"


def send(
    client: httpx.Client,
    method: str,
    url: str,
    *,
    backend: str,
    **kwargs: Any,
) -> httpx.Response:
    """`client.request(...)` with transport failures mapped to typed errors."""
    try:
        return client.request(method, url, **kwargs)
    except httpx.TimeoutException as err:
        raise SearchTimeout(
            f"no answer from {endpoint(url)} in time ({type(err).__name__})",
            backend=backend,
            retryable=True,
        ) from err
    except httpx.HTTPError as err:
        raise BackendUnavailable(
            f"cannot reach {endpoint(url)}: {type(err).__name__}: {redact(str(err))}",
            backend=backend,
            retryable=True,
        ) from err


def body_error_message(response: httpx.Response) -> str:
    """The API's own error text when the body is JSON with `error`/`message`, else a preview."""
    try:
        data = response.json()
    except (json.JSONDecodeError, UnicodeDecodeError, ValueError):
        return _preview(response.text)
    if isinstance(data, dict):
        for key in ("error", "message", "detail"):
            value = data.get(key)
            if isinstance(value, str) and value:
                return value
            if isinstance(value, dict) and isinstance(value.get("message"), str):
                return value["message"]
    return _preview(response.text)


def raise_for_status(response: httpx.Response, *, backend: str) -> None:
    """Map a non-2xx status to the matching typed error (with the API's own message)."""
    status = response.status_code
    if status < 400:
        return
    where = endpoint(response.request.url)
    message = f"HTTP {status} from {where}: {body_error_message(response)}"
    if status == 429:
        raise RateLimited(message, backend=backend, retryable=True)
    if status >= 500:
        raise BackendUnavailable(message, backend=backend, retryable=True)
    if status in (401, 403):
        raise SearchError(f"{message} (check the API key / access settings)", backend=backend)
    if status in (400, 404, 422):
        raise BadRequest(message, backend=backend)
    raise SearchError(message, backend=backend)


def json_body(response: httpx.Response, *, backend: str) -> dict[str, Any]:
    """The body as a JSON object, or MalformedResponse naming the endpoint."""
    try:
        data = response.json()
    except (json.JSONDecodeError, UnicodeDecodeError, ValueError) as err:
        raise MalformedResponse(
            f"body from {endpoint(response.request.url)} is not JSON "
            f"(content-type {response.headers.get('content-type', '?')!r}): "
            f"{_preview(response.text)!r}",
            backend=backend,
        ) from err
    if not isinstance(data, dict):
        raise MalformedResponse(
            f"body from {endpoint(response.request.url)} is JSON {type(data).__name__}, "
            "expected an object",
            backend=backend,
        )
    return data


def list_field(data: dict[str, Any], key: str, *, backend: str, where: str) -> list[dict]:
    """`data[key]` as a list of objects (missing: empty); anything else is malformed."""
    value = data.get(key)
    if value is None:
        return []
    if not isinstance(value, list):
        raise MalformedResponse(
            f"{where}: field {key!r} is {type(value).__name__}, expected a list", backend=backend
        )
    return [item for item in value if isinstance(item, dict)]


def _preview(text: str, limit: int = 200) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit] + "…"
