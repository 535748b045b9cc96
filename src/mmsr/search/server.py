"""`mmsr serve search`: both tools over HTTP, so many rollout workers share one index and
one cache (FastAPI + uvicorn).

Endpoints:
- `POST /search/text`  JSON {"query": str, "k": int?}
- `POST /search/image` JSON {"image_b64": str?, "image_url": str?, "k": int?}, or
  multipart with a file field `image` (and form fields `k`, `image_url`)
- `GET /health` (no token needed; says only "ok"), `GET /stats` (cache + cost + server)

Success: 200 with `SearchResponse.to_dict()`. Failure: 4xx/5xx with
{"error": {"type", "message", "retryable"}} (`client.py` turns it back into the typed error).

Bounded concurrency: at most `max_concurrency` searches run (each in a worker thread); one
more is answered 503 + `Retry-After` at once, never queued, so an overloaded server stays
responsive. A search that exceeds `request_timeout_s` is answered 504; its slot frees when
its thread really finishes, so timeouts cannot pile up unbounded work.

Security: binds to 127.0.0.1 by default; refuses a non-loopback host without a token; when
a token is set every endpoint but /health needs `Authorization: Bearer <token>`.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import ipaddress
import secrets
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

# Module-level on purpose: FastAPI resolves the endpoints' `Request` annotations (strings,
# under `from __future__ import annotations`) in this module's namespace.
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from mmsr.search.types import SearchResponse

DEFAULT_PORT = 8765
MAX_BODY_BYTES = 20 * 1024 * 1024  # an image upload larger than this is a mistake
_ERROR_STATUS = {
    "BadRequest": 400,
    "RefusedURL": 400,
    "RateLimited": 429,
    "SearchTimeout": 504,
    "BackendUnavailable": 502,
    "MalformedResponse": 502,
    "SearchError": 502,
}


@dataclass
class ServerConfig:
    """Options of `mmsr serve search`."""

    host: str = "127.0.0.1"
    """Interface to bind; anything but loopback requires a token."""
    port: int = DEFAULT_PORT
    """TCP port (0: any free port)."""
    token: str | None = None
    """Bearer token clients must send (from --token or MMSR_SEARCH_TOKEN)."""
    max_concurrency: int = 8
    """Searches running at once; one more is answered 503 immediately."""
    request_timeout_s: float = 60.0
    """A search running longer is answered 504."""
    max_body_bytes: int = MAX_BODY_BYTES
    """Largest request body accepted (413 above)."""


def is_loopback_host(host: str) -> bool:
    if host.strip("[]").lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name: it may resolve anywhere


def check_bind(host: str, token: str | None) -> None:
    """Refuse to expose the search server beyond this machine without a token."""
    if not is_loopback_host(host) and not token:
        raise ValueError(
            f"refusing to serve on {host!r} without a token: anyone who can reach it could "
            "spend your search quota. Pass --token or set MMSR_SEARCH_TOKEN, or bind to "
            "127.0.0.1."
        )


def _error(status: int, kind: str, message: str, *, retryable: bool = False, headers=None):
    body = {"error": {"type": kind, "message": message, "retryable": retryable}}
    return JSONResponse(body, status_code=status, headers=headers)


class _Slots:
    """Counters of the bounded-concurrency gate (touched only on the event loop thread)."""

    def __init__(self, limit: int):
        self.limit = limit
        self.in_flight = 0
        self.served = 0
        self.rejected = 0
        self.timed_out = 0

    def try_acquire(self) -> bool:
        if self.in_flight >= self.limit:
            self.rejected += 1
            return False
        self.in_flight += 1
        return True

    def release(self) -> None:
        self.in_flight -= 1
        self.served += 1


def create_app(
    image_tool: Any | None,
    text_tool: Any | None,
    *,
    config: ServerConfig | None = None,
    stats: Callable[[], dict[str, Any]] | None = None,
    backend_names: dict[str, str] | None = None,
):
    """The FastAPI app over two tools (objects with the tools' `search` signatures)."""
    config = config or ServerConfig()
    if config.max_concurrency < 1:
        raise ValueError(f"max_concurrency={config.max_concurrency}, expected >= 1")
    app = FastAPI(title="mmsr search", docs_url=None, redoc_url=None, openapi_url=None)
    slots = _Slots(config.max_concurrency)
    executor = ThreadPoolExecutor(config.max_concurrency, thread_name_prefix="mmsr-search")
    started_at = time.time()
    app.state.slots = slots
    app.state.executor = executor

    def unauthorized(request: Request):
        if not config.token:
            return None
        header = request.headers.get("authorization", "")
        scheme, _, given = header.partition(" ")
        if scheme.lower() == "bearer" and secrets.compare_digest(given.strip(), config.token):
            return None
        return _error(401, "SearchError", "missing or wrong bearer token")

    async def run_search(fn: Callable[[], SearchResponse]):
        if not slots.try_acquire():
            return _error(
                503,
                "BackendUnavailable",
                f"server busy: {slots.in_flight} searches running (max {slots.limit})",
                retryable=True,
                headers={"Retry-After": "1"},
            )
        loop = asyncio.get_running_loop()
        future = loop.run_in_executor(executor, fn)
        # The slot is freed when the thread finishes, not when we stop waiting for it.
        future.add_done_callback(lambda _f: slots.release())
        try:
            response = await asyncio.wait_for(asyncio.shield(future), config.request_timeout_s)
        except asyncio.TimeoutError:  # not the builtin on Python 3.10
            slots.timed_out += 1
            return _error(
                504,
                "SearchTimeout",
                f"search took over {config.request_timeout_s}s",
                retryable=True,
            )
        if response.error:
            kind = response.extra.get("error_type", "SearchError")
            return _error(
                _ERROR_STATUS.get(kind, 502),
                kind,
                response.error,
                retryable=bool(response.extra.get("retryable")),
            )
        return JSONResponse(response.to_dict())

    async def read_json(request: Request) -> dict[str, Any] | JSONResponse:
        length = request.headers.get("content-length")
        if length and length.isdigit() and int(length) > config.max_body_bytes:
            return _error(413, "BadRequest", f"body over {config.max_body_bytes} bytes")
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
            if len(body) > config.max_body_bytes:
                return _error(413, "BadRequest", f"body over {config.max_body_bytes} bytes")
        try:
            import json

            data = json.loads(bytes(body) or b"{}")
        except ValueError:
            return _error(400, "BadRequest", "body is not JSON")
        if not isinstance(data, dict):
            return _error(400, "BadRequest", "body must be a JSON object")
        return data

    def parse_k(value: Any):
        if value is None or value == "":
            return None
        try:
            return int(value)
        except (TypeError, ValueError):
            return _error(400, "BadRequest", f"k must be an integer, got {value!r}")

    @app.get("/health")
    async def health():
        return {"status": "ok"}

    @app.get("/stats")
    async def get_stats(request: Request):
        if (denied := unauthorized(request)) is not None:
            return denied
        return {
            **(stats() if stats else {}),
            "server": {
                "in_flight": slots.in_flight,
                "max_concurrency": slots.limit,
                "served": slots.served,
                "rejected_busy": slots.rejected,
                "timed_out": slots.timed_out,
                "uptime_s": round(time.time() - started_at, 1),
                "backends": backend_names or {},
            },
        }

    @app.post("/search/text")
    async def search_text(request: Request):
        if (denied := unauthorized(request)) is not None:
            return denied
        if text_tool is None:
            return _error(404, "BadRequest", "this server has no text search tool")
        data = await read_json(request)
        if isinstance(data, JSONResponse):
            return data
        query = data.get("query")
        if not isinstance(query, str):
            return _error(400, "BadRequest", "field 'query' (string) is required")
        k = parse_k(data.get("k"))
        if isinstance(k, JSONResponse):
            return k
        return await run_search(lambda: text_tool.search(query, k=k))

    @app.post("/search/image")
    async def search_image(request: Request):
        if (denied := unauthorized(request)) is not None:
            return denied
        if image_tool is None:
            return _error(404, "BadRequest", "this server has no image search tool")
        content_type = request.headers.get("content-type", "")
        if content_type.startswith("multipart/form-data"):
            length = request.headers.get("content-length")
            if length and length.isdigit() and int(length) > config.max_body_bytes:
                return _error(413, "BadRequest", f"body over {config.max_body_bytes} bytes")
            form = await request.form(max_files=1, max_fields=8, max_part_size=1 << 20)
            upload = form.get("image")
            image = await upload.read() if hasattr(upload, "read") else None
            if image is not None and len(image) > config.max_body_bytes:
                return _error(413, "BadRequest", f"image over {config.max_body_bytes} bytes")
            image_url, k = form.get("image_url"), parse_k(form.get("k"))
        else:
            data = await read_json(request)
            if isinstance(data, JSONResponse):
                return data
            image = None
            if data.get("image_b64"):
                try:
                    image = base64.b64decode(str(data["image_b64"]), validate=True)
                except (binascii.Error, ValueError):
                    return _error(400, "BadRequest", "field 'image_b64' is not valid base64")
            image_url, k = data.get("image_url"), parse_k(data.get("k"))
        if isinstance(k, JSONResponse):
            return k
        if image_url is not None and not isinstance(image_url, str):
            return _error(400, "BadRequest", "field 'image_url' must be a string")
        return await run_search(lambda: image_tool.search(image, image_url=image_url, k=k))

    return app


def _shutdown_executor(app) -> None:
    executor = getattr(app.state, "executor", None)
    if executor is not None:
        executor.shutdown(wait=False, cancel_futures=True)


def _uvicorn_server(app, config: ServerConfig):
    import uvicorn

    uv_config = uvicorn.Config(
        app,
        host=config.host,
        port=config.port,
        log_level="warning",
        access_log=False,
        # A second, coarse gate in uvicorn itself (503 past this many open requests), so
        # even a flood of connections cannot exhaust the process.
        limit_concurrency=config.max_concurrency * 8 + 32,
        timeout_keep_alive=5,
    )
    return uvicorn.Server(uv_config)


def serve(app, config: ServerConfig) -> None:
    """Run the server in the foreground until interrupted."""
    check_bind(config.host, config.token)
    try:
        _uvicorn_server(app, config).run()
    finally:
        _shutdown_executor(app)


class BackgroundServer:
    """The server in a daemon thread (tests, benchmarks): `with BackgroundServer(app) as s:`
    then `s.url`."""

    def __init__(self, app, config: ServerConfig | None = None):
        self.config = config or ServerConfig(port=0)
        check_bind(self.config.host, self.config.token)
        self.app = app
        self._server = _uvicorn_server(app, self.config)
        self._thread = threading.Thread(target=self._server.run, daemon=True)
        self.url = ""

    def __enter__(self) -> BackgroundServer:
        self._thread.start()
        deadline = time.monotonic() + 20
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"search server did not start on {self.config.host}")
            time.sleep(0.01)
        port = self._server.servers[0].sockets[0].getsockname()[1]
        host = self.config.host if ":" not in self.config.host else f"[{self.config.host}]"
        self.url = f"http://{host}:{port}"
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=10)
        _shutdown_executor(self.app)
