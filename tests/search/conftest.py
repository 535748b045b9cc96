"""Fixtures for the web side of search: a fake HTTP server on 127.0.0.1 (no network).

`fake_http` is a real `http.server` in a thread. Tests register a `Reply` (or a function of
the request returning one) per path; every request is recorded in `fake_http.requests`.
Fakes speak the documented JSON of SerpAPI, SearXNG, Jina Reader and OpenAI-compatible
chat endpoints, including their error shapes.
"""

from __future__ import annotations

import http.server
import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest


@dataclass
class Reply:
    status: int = 200
    body: bytes | str | dict | list = b""
    headers: dict[str, str] = field(default_factory=dict)
    delay_s: float = 0.0  # before the status line (a slow server -> client timeout)
    chunks: list[bytes] | None = None  # body sent in pieces, `chunk_delay_s` apart
    chunk_delay_s: float = 0.0

    def encoded(self) -> tuple[bytes, str]:
        if isinstance(self.body, dict | list):
            return json.dumps(self.body).encode(), "application/json"
        if isinstance(self.body, str):
            return self.body.encode(), "text/html; charset=utf-8"
        return self.body, "application/octet-stream"


@dataclass
class Seen:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes


class FakeHTTP:
    def __init__(self) -> None:
        self.routes: dict[str, Reply | Callable[[Seen], Reply]] = {}
        self.requests: list[Seen] = []
        self.closed = False
        fake = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _handle(self) -> None:
                parts = urlsplit(self.path)
                length = int(self.headers.get("content-length") or 0)
                seen = Seen(
                    self.command,
                    parts.path,
                    {k: v[0] for k, v in parse_qs(parts.query).items()},
                    {k.lower(): v for k, v in self.headers.items()},
                    self.rfile.read(length) if length else b"",
                )
                fake.requests.append(seen)
                route = fake.routes.get(parts.path)
                if route is None:
                    reply = Reply(404, {"error": f"no route {parts.path}"})
                else:
                    reply = route(seen) if callable(route) else route
                time.sleep(reply.delay_s)
                body, default_type = reply.encoded()
                try:
                    self.send_response(reply.status)
                    headers = {"Content-Type": default_type, **reply.headers}
                    for name, value in headers.items():
                        self.send_header(name, value)
                    if reply.chunks is None:
                        self.send_header("Content-Length", str(len(body)))
                        self.end_headers()
                        self.wfile.write(body)
                    else:
                        self.send_header("Connection", "close")
                        self.end_headers()
                        for chunk in reply.chunks:
                            self.wfile.write(chunk)
                            self.wfile.flush()
                            time.sleep(reply.chunk_delay_s)
                        self.close_connection = True
                except (BrokenPipeError, ConnectionResetError):
                    self.close_connection = True

            do_GET = do_POST = _handle

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )
        self.thread.start()

    def route(self, path: str, reply: Reply | Callable[[Seen], Reply]) -> None:
        self.routes[path] = reply

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.server.shutdown()
            self.server.server_close()


@pytest.fixture
def fake_http():
    fake = FakeHTTP()
    yield fake
    fake.close()


@pytest.fixture
def serpapi_key(monkeypatch) -> str:
    key = "test-serpapi-key-123"
    monkeypatch.setenv("SERPAPI_API_KEY", key)
    return key


def organic(n: int) -> dict[str, Any]:
    """A SerpAPI Google answer with `n` organic results."""
    return {
        "search_metadata": {"status": "Success"},
        "organic_results": [
            {
                "position": i + 1,
                "title": f"Result {i}",
                "link": f"https://example.org/page{i}",
                "snippet": f"Snippet {i} about Paris, the capital of France.",
            }
            for i in range(n)
        ],
    }


@pytest.fixture
def serp_organic() -> Callable[[int], dict[str, Any]]:
    return organic
