"""The page fetcher: refusals (scheme, addresses, redirects), caps, Jina Reader.

The fake server is on loopback, which the default policy refuses; tests that need to read
from it pass `AddressPolicy(allow_networks=("127.0.0.0/8",))`, and separate tests prove the
default refuses loopback.
"""

from __future__ import annotations

import ipaddress

import pytest

from mmsr.search.errors import (
    BackendUnavailable,
    MalformedResponse,
    RefusedURL,
    SearchError,
    SearchTimeout,
)
from mmsr.search.fetch import JinaReader, PageFetcher, check_url, html_to_text
from mmsr.search.netguard import AddressPolicy, GuardedTransport, refusal_reason

from .conftest import Reply

LOOPBACK_OK = AddressPolicy(allow_networks=("127.0.0.0/8",))
PAGE = (
    "<html><head><title>Paris &ndash; facts</title></head><body>"
    "<nav>Home | About | Contact</nav><article><h1>Paris</h1>"
    "<p>Paris is the capital of France. It has about 2.1 million inhabitants.</p>"
    "<p>The Eiffel Tower was finished in 1889 for the World's Fair.</p></article>"
    "<footer>Cookie settings</footer></body></html>"
)


def resolver_of(table: dict[str, list[str]]):
    """A fake DNS: host -> addresses (unknown hosts resolve to themselves: IP literals)."""
    return lambda host, port: table.get(host, [host])


# ------------------------------------------------------------------ address policy
@pytest.mark.parametrize(
    ("address", "reason"),
    [
        ("127.0.0.1", "loopback"),
        ("127.8.9.10", "loopback"),
        ("10.1.2.3", "private"),
        ("172.16.5.4", "private"),
        ("192.168.1.1", "private"),
        ("169.254.169.254", "metadata"),
        ("169.254.1.1", "link-local"),
        ("100.100.100.200", "metadata"),
        ("168.63.129.16", "metadata"),  # public address, Azure wireserver
        ("100.64.0.1", "routable"),  # carrier-grade NAT
        ("0.0.0.0", "unspecified"),
        ("224.0.0.1", "multicast"),
        ("240.0.0.1", "address"),  # reserved (Python files it under private)
        ("::1", "loopback"),
        ("::", "unspecified"),
        ("fe80::1", "link-local"),
        ("fc00::1", "private"),
        ("fd00:ec2::254", "metadata"),
        ("ff02::1", "multicast"),
        ("::ffff:127.0.0.1", "loopback"),  # IPv4-mapped
        ("::ffff:10.0.0.1", "private"),
        ("::ffff:169.254.169.254", "metadata"),
        ("2002:7f00:1::", "tunnels"),  # 6to4 of 127.0.0.1
        ("64:ff9b::a00:1", "tunnels"),  # NAT64 of 10.0.0.1
    ],
)
def test_default_policy_refuses_non_public_addresses(address, reason):
    refusal = AddressPolicy().refusal(address)
    assert refusal is not None and reason in refusal


@pytest.mark.parametrize(
    "address", ["93.184.215.14", "8.8.8.8", "2606:4700:4700::1111", "64:ff9b::5db8:d70e"]
)
def test_default_policy_allows_public_addresses(address):
    assert AddressPolicy().refusal(address) is None
    assert refusal_reason(ipaddress.ip_address(address)) is None


def test_allow_list_opens_networks_but_never_metadata():
    policy = AddressPolicy(allow_networks=("127.0.0.0/8", "169.254.0.0/16"))
    assert policy.refusal("127.0.0.1") is None
    assert policy.refusal("::ffff:127.0.0.1") is None
    assert policy.refusal("169.254.1.1") is None
    assert "metadata" in policy.refusal("169.254.169.254")
    assert "private" in policy.refusal("10.0.0.1")
    with pytest.raises(ValueError, match="allow_networks"):
        AddressPolicy(allow_networks=("not-a-cidr",))


# ------------------------------------------------------------------ refusals
@pytest.mark.parametrize(
    ("url", "words"),
    [
        ("file:///etc/passwd", "scheme 'file'"),
        ("ftp://example.org/x", "scheme 'ftp'"),
        ("gopher://example.org/", "scheme 'gopher'"),
        ("javascript:alert(1)", "scheme 'javascript'"),
        ("http:///nohost", "no host"),
        ("http://user:pw@example.org/", "credentials"),
        ("http://127.0.0.1/", "loopback"),
        ("http://localhost/", "loopback"),
        ("http://10.0.0.8/admin", "private"),
        ("http://169.254.169.254/latest/meta-data/", "metadata"),
        ("http://[::1]/", "loopback"),
        ("http://[::ffff:127.0.0.1]/", "loopback"),
        ("http://[fd00:ec2::254]/", "metadata"),
    ],
)
def test_fetcher_refuses_by_default(url, words):
    # Nothing listens on most of these; a refusal must come before any connection attempt.
    resolver = resolver_of({"localhost": ["127.0.0.1"]})
    fetcher = PageFetcher(resolver=resolver, timeout_s=2)
    with pytest.raises(RefusedURL, match=words):
        fetcher.fetch(url)


def test_loopback_fake_server_is_refused_by_default(fake_http):
    fake_http.route("/page", Reply(200, PAGE))
    with pytest.raises(RefusedURL, match="loopback"):
        PageFetcher().fetch(f"{fake_http.url}/page")
    assert fake_http.requests == []  # the guard stopped it before connecting


def test_name_resolving_to_private_address_is_refused():
    """The check is on the resolved address, not on the name."""
    resolver = resolver_of({"innocent.example.com": ["10.9.8.7"]})
    with pytest.raises(RefusedURL, match=r"innocent\.example\.com \(10\.9\.8\.7\): private"):
        PageFetcher(resolver=resolver).fetch("http://innocent.example.com/")


def test_name_with_one_bad_address_among_good_ones_is_refused():
    resolver = resolver_of({"mixed.example.com": ["93.184.215.14", "127.0.0.1"]})
    with pytest.raises(RefusedURL, match="loopback"):
        PageFetcher(resolver=resolver).fetch("https://mixed.example.com/")
    with pytest.raises(RefusedURL, match="loopback"):
        check_url("https://mixed.example.com/", resolver=resolver)


def test_guard_is_in_the_connection_path(fake_http):
    """A name that only the injected resolver knows reaches the fake server: so the
    transport connects to the address the guard resolved and checked, not its own."""
    fake_http.route("/page", Reply(200, PAGE))
    resolver = resolver_of({"pages.example.test": ["127.0.0.1"]})
    fetcher = PageFetcher(policy=LOOPBACK_OK, resolver=resolver)
    page = fetcher.fetch(f"http://pages.example.test:{fake_http.port}/page")
    assert "capital of France" in page.text
    assert fake_http.requests[-1].headers["host"].startswith("pages.example.test")
    assert isinstance(fetcher._client._transport, GuardedTransport)


def test_redirect_from_allowed_host_to_private_address_is_refused(fake_http):
    for target in ("http://10.0.0.1/secret", "http://169.254.169.254/latest/meta-data/"):
        fake_http.route("/go", Reply(302, b"", headers={"Location": target}))
        with pytest.raises(RefusedURL, match="redirected from"):
            PageFetcher(policy=LOOPBACK_OK, timeout_s=2).fetch(f"{fake_http.url}/go")


def test_redirect_to_file_scheme_is_refused(fake_http):
    fake_http.route("/go", Reply(301, b"", headers={"Location": "file:///etc/passwd"}))
    with pytest.raises(RefusedURL, match="scheme 'file'"):
        PageFetcher(policy=LOOPBACK_OK).fetch(f"{fake_http.url}/go")


def test_redirects_are_followed_and_capped(fake_http):
    fake_http.route("/a", Reply(302, b"", headers={"Location": "/b"}))
    fake_http.route("/b", Reply(307, b"", headers={"Location": f"{fake_http.url}/page"}))
    fake_http.route("/page", Reply(200, PAGE))
    page = PageFetcher(policy=LOOPBACK_OK).fetch(f"{fake_http.url}/a")
    assert page.final_url == f"{fake_http.url}/page" and "Eiffel" in page.text
    fake_http.route("/loop", Reply(302, b"", headers={"Location": "/loop"}))
    with pytest.raises(RefusedURL, match="more than 3 redirects"):
        PageFetcher(policy=LOOPBACK_OK, max_redirects=3).fetch(f"{fake_http.url}/loop")


# ------------------------------------------------------------------ reading and caps
def test_fetch_extracts_main_text_and_title(fake_http):
    fake_http.route("/page", Reply(200, PAGE))
    page = PageFetcher(policy=LOOPBACK_OK).fetch(f"{fake_http.url}/page")
    assert page.title == "Paris – facts"
    assert "capital of France" in page.text and "1889" in page.text
    assert "Cookie settings" not in page.text  # boilerplate dropped by trafilatura
    assert not page.truncated and page.content_type == "text/html"


def test_size_cap_stops_the_download(fake_http):
    chunks = [b"<html><body><p>" + b"word " * 2000 + b"</p>"] * 50  # ~500 kB
    fake_http.route("/big", Reply(200, "", headers={"Content-Type": "text/html"}, chunks=chunks))
    page = PageFetcher(policy=LOOPBACK_OK, max_bytes=30_000).fetch(f"{fake_http.url}/big")
    assert page.truncated and page.n_bytes == 30_000
    assert "word" in page.text


def test_time_cap_covers_a_slow_drip(fake_http):
    chunks = [b"<html><body><p>drip</p>"] * 40
    fake_http.route("/drip", Reply(200, "", chunks=chunks, chunk_delay_s=0.1))
    with pytest.raises(SearchTimeout) as caught:
        PageFetcher(policy=LOOPBACK_OK, timeout_s=0.5).fetch(f"{fake_http.url}/drip")
    assert caught.value.retryable


def test_slow_server_times_out(fake_http):
    fake_http.route("/slow", Reply(200, PAGE, delay_s=1.0))
    with pytest.raises(SearchTimeout):
        PageFetcher(policy=LOOPBACK_OK, timeout_s=0.3).fetch(f"{fake_http.url}/slow")


def test_binary_content_and_http_errors(fake_http):
    fake_http.route("/img", Reply(200, b"\x89PNG....", headers={"Content-Type": "image/png"}))
    fake_http.route("/gone", Reply(404, "<html>not found</html>"))
    fake_http.route("/down", Reply(503, "<html>down</html>"))
    fetcher = PageFetcher(policy=LOOPBACK_OK)
    with pytest.raises(RefusedURL, match="image/png"):
        fetcher.fetch(f"{fake_http.url}/img")
    with pytest.raises(SearchError, match="HTTP 404"):
        fetcher.fetch(f"{fake_http.url}/gone")
    with pytest.raises(BackendUnavailable, match="HTTP 503"):
        fetcher.fetch(f"{fake_http.url}/down")


def test_html_to_text_falls_back_on_tiny_pages():
    assert html_to_text("<html><body>Just one line.</body></html>") == "Just one line."


# ------------------------------------------------------------------ Jina Reader
def test_jina_reader_reads_through_the_service(fake_http, monkeypatch):
    monkeypatch.setenv("JINA_API_KEY", "jina-secret")
    body = {
        "code": 200,
        "status": 20000,
        "data": {"title": "Paris", "url": "https://x.org/p", "content": "Paris is the capital."},
    }
    fake_http.route("/https://x.org/p", Reply(200, body))
    reader = JinaReader(base_url=fake_http.url, resolver=resolver_of({"x.org": ["93.184.215.14"]}))
    page = reader.fetch("https://x.org/p")
    assert page.text == "Paris is the capital." and page.title == "Paris"
    seen = fake_http.requests[-1]
    assert seen.headers["authorization"] == "Bearer jina-secret"
    assert seen.headers["accept"] == "application/json"


def test_jina_reader_refuses_private_targets_and_maps_errors(fake_http):
    reader = JinaReader(base_url=fake_http.url, resolver=resolver_of({}))
    with pytest.raises(RefusedURL, match="metadata"):
        reader.fetch("http://169.254.169.254/latest/")
    with pytest.raises(RefusedURL, match="scheme"):
        reader.fetch("file:///etc/passwd")
    assert fake_http.requests == []
    public = resolver_of({"x.org": ["93.184.215.14"]})
    reader = JinaReader(base_url=fake_http.url, resolver=public)
    fake_http.route("/https://x.org/a", Reply(200, {"code": 200, "data": {}}))
    with pytest.raises(MalformedResponse, match="data.content"):
        reader.fetch("https://x.org/a")
    fake_http.route("/https://x.org/b", Reply(429, {"code": 429, "message": "slow down"}))
    with pytest.raises(SearchError, match="slow down"):
        reader.fetch("https://x.org/b")
