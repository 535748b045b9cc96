"""SerpAPI (Google, Google Lens) and SearXNG backends against fake local servers."""

from __future__ import annotations

import pytest

from mmsr.search.errors import (
    BackendUnavailable,
    BadRequest,
    MalformedResponse,
    RateLimited,
    SearchError,
    SearchTimeout,
)
from mmsr.search.image_host import DirectoryImageHost
from mmsr.search.web_searxng import SearxngBackend
from mmsr.search.web_serpapi import SerpApiGoogleBackend, SerpApiLensBackend

from .conftest import Reply

PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 32


# ------------------------------------------------------------------ SerpAPI Google
def test_serpapi_google_parses_organic_results(fake_http, serpapi_key, serp_organic):
    fake_http.route("/search.json", Reply(200, serp_organic(7)))
    backend = SerpApiGoogleBackend(base_url=fake_http.url)
    results = backend.search("capital of France", k=5)
    assert [r.url for r in results] == [f"https://example.org/page{i}" for i in range(5)]
    assert results[0].title == "Result 0" and "Paris" in results[0].snippet
    assert results[0].score > results[1].score
    sent = fake_http.requests[-1].query
    assert sent["engine"] == "google" and sent["q"] == "capital of France"
    assert sent["api_key"] == serpapi_key


def test_serpapi_no_results_message_is_an_empty_list(fake_http, serpapi_key):
    body = {
        "search_metadata": {"status": "Success"},
        "error": "Google hasn't returned any results for this query.",
    }
    fake_http.route("/search.json", Reply(200, body))
    assert SerpApiGoogleBackend(base_url=fake_http.url).search("zzqx") == []


@pytest.mark.parametrize(
    ("reply", "error", "retryable", "words"),
    [
        (Reply(401, {"error": "Invalid API key."}), SearchError, False, "Invalid API key"),
        (
            Reply(429, {"error": "Your account has run out of searches."}),
            RateLimited,
            True,
            "run out of searches",
        ),
        (Reply(503, "<html>Service Unavailable</html>"), BackendUnavailable, True, "HTTP 503"),
        (Reply(200, "<html>not json</html>"), MalformedResponse, False, "not JSON"),
        (Reply(200, ["a", "list"]), MalformedResponse, False, "expected an object"),
        (Reply(200, {"organic_results": "oops"}), MalformedResponse, False, "expected a list"),
        (Reply(200, {"error": "Failed to retrieve results."}), SearchError, False, "Failed"),
    ],
)
def test_serpapi_failures_are_typed(fake_http, serpapi_key, reply, error, retryable, words):
    fake_http.route("/search.json", reply)
    with pytest.raises(error) as caught:
        SerpApiGoogleBackend(base_url=fake_http.url).search("q")
    assert caught.type is error  # exactly this class, not a parent
    assert caught.value.retryable is retryable
    assert words in str(caught.value) and "[serpapi]" in str(caught.value)
    assert serpapi_key not in str(caught.value)


def test_serpapi_slow_server_times_out(fake_http, serpapi_key, serp_organic):
    fake_http.route("/search.json", Reply(200, serp_organic(1), delay_s=1.0))
    backend = SerpApiGoogleBackend(base_url=fake_http.url, timeout_s=0.2)
    with pytest.raises(SearchTimeout) as caught:
        backend.search("q")
    assert caught.value.retryable


def test_serpapi_refused_connection_is_unavailable(fake_http, serpapi_key):
    url = fake_http.url
    fake_http.close()  # nothing listens there any more
    with pytest.raises(BackendUnavailable, match="cannot reach"):
        SerpApiGoogleBackend(base_url=url, timeout_s=2).search("q")


def test_serpapi_key_comes_from_the_environment(monkeypatch):
    monkeypatch.delenv("SERPAPI_API_KEY", raising=False)
    with pytest.raises(SearchError, match="SERPAPI_API_KEY"):
        SerpApiGoogleBackend(base_url="http://127.0.0.1:9")


# ------------------------------------------------------------------ SerpAPI Google Lens
LENS_BODY = {
    "search_metadata": {"status": "Success"},
    "visual_matches": [
        {
            "position": 1,
            "title": "Flag of France - Wikipedia",
            "link": "https://en.wikipedia.org/wiki/Flag_of_France",
            "source": "Wikipedia",
            "thumbnail": "https://serpapi.com/thumb1.jpg",
        },
        {"position": 2, "title": "No link, skipped"},
        {
            "position": 3,
            "title": "French flag",
            "link": "https://example.org/fr",
            "source": "example.org",
            "thumbnail": "https://serpapi.com/thumb3.jpg",
        },
    ],
}


def test_lens_searches_an_image_url(fake_http, serpapi_key):
    fake_http.route("/search.json", Reply(200, LENS_BODY))
    backend = SerpApiLensBackend(base_url=fake_http.url)
    results = backend.search_url("https://img.example.org/flag.png", k=5)
    assert [r.title for r in results] == ["Flag of France - Wikipedia", "French flag"]
    assert results[0].thumbnail == "https://serpapi.com/thumb1.jpg"
    assert results[0].snippet == "Source: Wikipedia"
    sent = fake_http.requests[-1].query
    assert sent["engine"] == "google_lens" and sent["url"] == "https://img.example.org/flag.png"


def test_lens_with_local_bytes_needs_a_host(fake_http, serpapi_key):
    backend = SerpApiLensBackend(base_url=fake_http.url)
    with pytest.raises(BadRequest, match="public image URL"):
        backend.search(PNG)
    assert fake_http.requests == []  # nothing was sent


def test_lens_publishes_local_bytes_through_the_host(fake_http, serpapi_key, tmp_path):
    fake_http.route("/search.json", Reply(200, LENS_BODY))
    host = DirectoryImageHost(tmp_path / "public", "https://cdn.example.org/mmsr")
    results = SerpApiLensBackend(base_url=fake_http.url, image_host=host).search(PNG, k=1)
    assert len(results) == 1
    sent_url = fake_http.requests[-1].query["url"]
    assert sent_url.startswith("https://cdn.example.org/mmsr/") and sent_url.endswith(".png")
    published = tmp_path / "public" / sent_url.rsplit("/", 1)[1]
    assert published.read_bytes() == PNG


def test_image_host_rejects_non_images(tmp_path):
    host = DirectoryImageHost(tmp_path, "https://cdn.example.org")
    with pytest.raises(BadRequest, match="not PNG"):
        host.publish(b"plain text")
    with pytest.raises(ValueError, match="http"):
        DirectoryImageHost(tmp_path, "ftp://x")


# ------------------------------------------------------------------ SearXNG
SEARXNG_BODY = {
    "query": "capital of france",
    "number_of_results": 0,
    "results": [
        {
            "url": "https://en.wikipedia.org/wiki/Paris",
            "title": "Paris - Wikipedia",
            "content": "Paris is the capital and largest city of France.",
            "engine": "wikipedia",
            "score": 3.5,
            "thumbnail": "https://upload.example/paris.jpg",
        },
        {"url": "https://example.org/", "title": "Example", "content": "", "score": 1.0},
        {"title": "no url: skipped", "content": "x"},
    ],
    "answers": [],
    "infoboxes": [],
    "suggestions": [],
    "unresponsive_engines": [],
}


def test_searxng_parses_results(fake_http):
    fake_http.route("/search", Reply(200, SEARXNG_BODY))
    results = SearxngBackend(fake_http.url).search("capital of France", k=5)
    assert [r.url for r in results] == [
        "https://en.wikipedia.org/wiki/Paris",
        "https://example.org/",
    ]
    assert results[0].score == 3.5 and results[0].thumbnail.endswith("paris.jpg")
    sent = fake_http.requests[-1].query
    assert sent["format"] == "json" and sent["q"] == "capital of France"


@pytest.mark.parametrize(
    ("reply", "error", "words"),
    [
        (Reply(403, "<html>Forbidden</html>"), SearchError, "search.formats"),
        (Reply(429, "Too Many Requests"), RateLimited, "HTTP 429"),
        (Reply(502, "Bad Gateway"), BackendUnavailable, "HTTP 502"),
        (Reply(200, "<html><body>results</body></html>"), MalformedResponse, "not JSON"),
        (Reply(200, {"query": "x"}), MalformedResponse, "no 'results'"),
        (Reply(200, {"results": {"a": 1}}), MalformedResponse, "expected a list"),
    ],
)
def test_searxng_failures_are_typed(fake_http, reply, error, words):
    fake_http.route("/search", reply)
    with pytest.raises(error) as caught:
        SearxngBackend(fake_http.url).search("q")
    assert caught.type is error
    assert words in str(caught.value) and "[searxng]" in str(caught.value)


def test_searxng_timeout(fake_http):
    fake_http.route("/search", Reply(200, SEARXNG_BODY, delay_s=1.0))
    with pytest.raises(SearchTimeout):
        SearxngBackend(fake_http.url, timeout_s=0.2).search("q")
