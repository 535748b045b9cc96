"""Search server (FastAPI + uvicorn on loopback) and its client, with in-memory backends."""

from __future__ import annotations

import base64
import threading
import time

import httpx
import pytest

from mmsr.search.cache import SearchCache
from mmsr.search.client import RemoteTextBackend, SearchClient
from mmsr.search.config import SearchConfig
from mmsr.search.cost import CostMeter
from mmsr.search.errors import BackendUnavailable, BadRequest, RateLimited, SearchError
from mmsr.search.server import (
    BackgroundServer,
    ServerConfig,
    check_bind,
    create_app,
    is_loopback_host,
)
from mmsr.search.tools import ImageSearchTool, TextSearchTool, make_tools
from mmsr.search.types import SearchResult

from .conftest import Reply

PNG = b"\x89PNG\r\n\x1a\n" + b"\x02" * 16


class SlowText:
    name = "slow_text"

    def __init__(self, delay_s: float = 0.0, error: SearchError | None = None):
        self.delay_s, self.error, self.calls = delay_s, error, 0

    def search(self, query: str, k: int = 5):
        self.calls += 1
        time.sleep(self.delay_s)
        if self.error:
            raise self.error
        return [
            SearchResult(f"{query} {i}", f"https://example.org/{i}", snippet="s") for i in range(k)
        ]


class EchoImage:
    name = "echo_image"

    def search(self, image: bytes, k: int = 5):
        return [SearchResult(f"{len(image)} bytes", "world://img/0", thumbnail="t.png")][:k]


def make_server(tmp_path, text_backend=None, **server_options):
    cache = SearchCache(tmp_path / "server-cache.sqlite")
    cost = CostMeter()
    text = TextSearchTool(text_backend or SlowText(), cache=cache, cost=cost)
    image = ImageSearchTool(EchoImage(), cache=cache, cost=cost)
    stats = lambda: {"cache": cache.summary(), "cost": cost.summary()}  # noqa: E731
    config = ServerConfig(port=0, **server_options)
    return BackgroundServer(create_app(image, text, config=config, stats=stats), config)


def wait_for_in_flight(url: str, n: int, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while httpx.get(f"{url}/stats").json()["server"]["in_flight"] != n:
        assert time.monotonic() < deadline, f"in_flight never reached {n}"
        time.sleep(0.01)


def test_bind_policy():
    assert is_loopback_host("127.0.0.1") and is_loopback_host("::1")
    assert is_loopback_host("localhost") and is_loopback_host("127.3.4.5")
    assert not is_loopback_host("0.0.0.0") and not is_loopback_host("example.org")
    check_bind("127.0.0.1", None)
    check_bind("0.0.0.0", "s3cret")
    with pytest.raises(ValueError, match="without a token"):
        check_bind("0.0.0.0", None)
    with pytest.raises(ValueError, match="without a token"):
        BackgroundServer(create_app(None, None), ServerConfig(host="0.0.0.0", port=0))


def test_text_and_image_endpoints(tmp_path):
    with make_server(tmp_path) as server:
        http = httpx.Client(base_url=server.url, timeout=10)
        assert http.get("/health").json() == {"status": "ok"}
        body = http.post("/search/text", json={"query": "capital", "k": 2}).json()
        assert set(body) == {"results", "backend", "cached", "latency_ms"}
        assert [r["title"] for r in body["results"]] == ["capital 0", "capital 1"]
        assert set(body["results"][0]) >= {"title", "url", "snippet", "summary", "thumbnail"}
        assert http.post("/search/text", json={"query": "CAPITAL", "k": 2}).json()["cached"]
        b64 = base64.b64encode(PNG).decode()
        body = http.post("/search/image", json={"image_b64": b64, "k": 1}).json()
        assert body["results"][0]["title"] == f"{len(PNG)} bytes"
        body = http.post(
            "/search/image", files={"image": ("x.png", PNG, "image/png")}, data={"k": "1"}
        ).json()
        assert body["cached"] and body["results"][0]["thumbnail"] == "t.png"
        stats = http.get("/stats").json()
        assert stats["cache"]["hits"] == 2 and stats["server"]["served"] == 4
        # Bad requests are answered 400 with a typed error, not 500.
        assert http.post("/search/text", json={"k": 2}).status_code == 400
        assert http.post("/search/text", content=b"{nope").status_code == 400
        bad = http.post("/search/text", json={"query": "q", "k": 999})
        assert bad.status_code == 400 and bad.json()["error"]["type"] == "BadRequest"
        assert http.post("/search/image", json={"image_b64": "@@@"}).status_code == 400
        assert http.post("/search/image", json={}).json()["error"]["type"] == "BadRequest"


def test_token_is_checked(tmp_path):
    with make_server(tmp_path, token="s3cret") as server:
        http = httpx.Client(base_url=server.url, timeout=10)
        assert http.get("/health").status_code == 200  # liveness needs no token
        assert http.post("/search/text", json={"query": "q"}).status_code == 401
        wrong = {"Authorization": "Bearer nope"}
        assert http.post("/search/text", json={"query": "q"}, headers=wrong).status_code == 401
        assert http.get("/stats").status_code == 401
        good = {"Authorization": "Bearer s3cret"}
        assert http.post("/search/text", json={"query": "q"}, headers=good).status_code == 200
        with pytest.raises(SearchError, match="MMSR_SEARCH_TOKEN"):
            SearchClient(server.url, retries=0).search_text("q")
        assert SearchClient(server.url, token="s3cret").search_text("q").results


def test_overload_answers_503_at_once(tmp_path):
    with make_server(tmp_path, text_backend=SlowText(delay_s=1.0), max_concurrency=1) as server:
        outcome = {}

        def slow_request():
            outcome["first"] = httpx.post(
                f"{server.url}/search/text", json={"query": "a"}, timeout=10
            )

        first = threading.Thread(target=slow_request)
        first.start()
        wait_for_in_flight(server.url, 1)  # the first search now holds the only slot
        started = time.perf_counter()
        busy = httpx.post(f"{server.url}/search/text", json={"query": "b"}, timeout=10)
        waited = time.perf_counter() - started
        first.join()
        assert busy.status_code == 503 and waited < 0.5
        assert busy.headers["retry-after"] == "1"
        assert busy.json()["error"] == {
            "type": "BackendUnavailable",
            "message": "server busy: 1 searches running (max 1)",
            "retryable": True,
        }
        assert outcome["first"].status_code == 200
        stats = httpx.get(f"{server.url}/stats").json()["server"]
        assert stats["rejected_busy"] == 1 and stats["in_flight"] == 0


def test_slow_search_gets_504_and_frees_its_slot_later(tmp_path):
    backend = SlowText(delay_s=0.6)
    with make_server(
        tmp_path, text_backend=backend, request_timeout_s=0.2, max_concurrency=1
    ) as server:
        response = httpx.post(f"{server.url}/search/text", json={"query": "a"}, timeout=10)
        assert response.status_code == 504 and response.json()["error"]["type"] == "SearchTimeout"
        wait_for_in_flight(server.url, 0)  # the thread finishes; its slot frees
        backend.delay_s = 0.0
        assert (
            httpx.post(f"{server.url}/search/text", json={"query": "b"}, timeout=10).status_code
            == 200
        )


def test_backend_errors_keep_their_type_through_the_client(tmp_path):
    backend = SlowText(error=RateLimited("quota gone", backend="serpapi", retryable=True))
    with make_server(tmp_path, text_backend=backend) as server:
        response = httpx.post(f"{server.url}/search/text", json={"query": "a"}, timeout=10)
        assert response.status_code == 429
        sleeps: list[float] = []
        client = SearchClient(server.url, retries=2, sleep=sleeps.append)
        with pytest.raises(RateLimited, match="quota gone"):
            client.search_text("a")
        assert client.attempts == 3 and len(sleeps) == 2
        backend.error = BadRequest("bad", backend="x")
        client = SearchClient(server.url, retries=2, sleep=sleeps.append)
        with pytest.raises(BadRequest):
            client.search_text("a")
        assert client.attempts == 1  # not retryable


def test_client_retries_with_backoff_then_succeeds(fake_http):
    calls = {"n": 0}

    def flaky(_seen):
        calls["n"] += 1
        if calls["n"] <= 2:
            return Reply(
                503,
                {"error": {"type": "BackendUnavailable", "message": "busy", "retryable": True}},
                headers={"Retry-After": "0"},
            )
        return Reply(
            200,
            {
                "results": [{"title": "t", "url": "u"}],
                "backend": "local",
                "cached": True,
                "latency_ms": 1.0,
            },
        )

    fake_http.route("/search/text", flaky)
    sleeps: list[float] = []
    client = SearchClient(
        fake_http.url, retries=3, backoff_s=0.1, max_backoff_s=1.0, sleep=sleeps.append
    )
    response = client.search_text("q")
    assert response.results[0].title == "t" and response.cached and response.backend == "local"
    assert client.attempts == 3 and len(sleeps) == 2
    assert 0 <= sleeps[0] <= 0.1 and 0 <= sleeps[1] <= 0.2  # full jitter under 0.1 * 2^attempt


def test_client_backoff_bounds():
    client = SearchClient("http://127.0.0.1:9", backoff_s=0.5, max_backoff_s=2.0)
    for attempt in range(8):
        assert 0 <= client._delay(attempt) <= min(2.0, 0.5 * 2**attempt)
    assert client._delay(0, retry_after="1.5") >= 1.5
    assert client._delay(0, retry_after="3600") <= 2.0  # a server cannot stall us for an hour
    assert client._delay(0, retry_after="soon") <= 0.5


def test_client_gives_up_on_a_dead_server(fake_http):
    url = fake_http.url
    fake_http.close()
    sleeps: list[float] = []
    client = SearchClient(url, retries=2, sleep=sleeps.append, timeout_s=2)
    with pytest.raises(BackendUnavailable, match="cannot reach"):
        client.search_text("q")
    assert client.attempts == 3 and len(sleeps) == 2


def test_client_rejects_malformed_answers(fake_http):
    fake_http.route("/search/text", Reply(200, {"backend": "x"}))
    with pytest.raises(SearchError, match="no 'results'"):
        SearchClient(fake_http.url, retries=0).search_text("q")


def test_remote_backend_through_make_tools(tmp_path, monkeypatch):
    monkeypatch.setenv("MMSR_SEARCH_TOKEN", "tok")
    with make_server(tmp_path, token="tok") as server:
        config = SearchConfig(
            image_backend="remote",
            text_backend="remote",
            remote_url=server.url,
            cache_path=str(tmp_path / "client-cache.sqlite"),
        )
        tools = make_tools(config)
        try:
            assert isinstance(tools.text.backend, RemoteTextBackend)
            first = tools.text.search("remote query", k=3)
            assert len(first.results) == 3 and not first.cached and first.backend == "slow_text"
            assert tools.text.search("Remote  query", k=3).cached  # the server's cache
            image = tools.image.search(PNG, k=1)
            assert image.results[0].title == f"{len(PNG)} bytes"
            assert len(tools.cache) == 0  # the client keeps no copy: one shared cache
            failed = tools.text.search("", k=3)
            assert failed.extra["error_type"] == "BadRequest"
        finally:
            tools.close()
