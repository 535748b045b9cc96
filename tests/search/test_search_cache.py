"""SQLite search cache: keys, hits/misses, TTL, several processes at once; cost meter."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import time

from mmsr.search.cache import SearchCache, cache_key, image_digest, normalize_query
from mmsr.search.cost import CostMeter
from mmsr.search.types import SearchResult

RESULTS = [
    SearchResult("Paris", "world://factbook/fr/overview", snippet="Capital: Paris", score=1.5)
]


def test_normalize_query():
    assert normalize_query("  Capital of\tFRANCE \n") == "capital of france"


def test_keys_depend_on_every_part():
    base = cache_key("text", "searxng", {"k": 5}, "capital of france")
    assert base == cache_key("text", "searxng", {"k": 5}, "capital of france")
    assert base != cache_key("text", "serpapi", {"k": 5}, "capital of france")
    assert base != cache_key("text", "searxng", {"k": 3}, "capital of france")
    assert base != cache_key("image", "searxng", {"k": 5}, "capital of france")
    assert base != cache_key("text", "searxng", {"k": 5}, "capital of spain")
    assert image_digest(b"a") != image_digest(b"b")


def test_hits_misses_and_round_trip(tmp_path):
    cache = SearchCache(tmp_path / "c.sqlite")
    assert cache.get("k1") is None
    cache.put("k1", RESULTS, kind="text", backend="local")
    assert cache.get("k1") == RESULTS
    summary = cache.summary()
    assert (summary["hits"], summary["misses"], summary["writes"], summary["entries"]) == (
        1,
        1,
        1,
        1,
    )
    assert summary["hit_rate"] == 0.5
    # Persistent: a new object on the same file sees the entry.
    assert SearchCache(tmp_path / "c.sqlite").get("k1") == RESULTS


def test_ttl_expires_entries(tmp_path):
    cache = SearchCache(tmp_path / "c.sqlite", ttl_s=0.05)
    cache.put("k", RESULTS, kind="text", backend="local")
    assert cache.get("k") == RESULTS
    time.sleep(0.1)
    assert cache.get("k") is None
    assert cache.prune() == 1 and len(cache) == 0


def test_cache_is_safe_across_threads(tmp_path):
    from concurrent.futures import ThreadPoolExecutor

    cache = SearchCache(tmp_path / "c.sqlite")

    def work(i: int) -> None:
        cache.put(f"k{i % 7}", RESULTS, kind="text", backend="local")
        assert cache.get(f"k{i % 7}") == RESULTS

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(work, range(200)))
    assert len(cache) == 7 and cache.stats.hits == 200


WORKER = textwrap.dedent(
    """
    import json, sys, time
    from mmsr.search.cache import SearchCache
    from mmsr.search.types import SearchResult
    path, worker, n, start_at = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
    while time.time() < start_at:  # a barrier: all processes start together
        time.sleep(0.001)
    cache = SearchCache(path)  # every process creates the schema at the same moment too
    for i in range(n):
        key = f"shared-{i % 20}"
        if cache.get(key) is None:
            cache.put(key, [SearchResult(f"t{i}", f"u{worker}")], kind="text", backend="fake")
        cache.put(f"own-{worker}-{i}", [SearchResult("x", "y")], kind="text", backend="fake")
    print(json.dumps(cache.summary()))
    """
)


def test_cache_shared_by_several_processes(tmp_path):
    """Four processes hammer one file at once: no "database is locked", all writes land."""
    path = tmp_path / "shared.sqlite"
    start_at = time.time() + 1.0
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", WORKER, str(path), str(w), "150", str(start_at)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for w in range(4)
    ]
    summaries = []
    for proc in procs:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
        assert "locked" not in err
        summaries.append(json.loads(out))
    assert SearchCache(path).summary()["entries"] == 20 + 4 * 150
    total_hits = sum(s["hits"] for s in summaries)
    total_misses = sum(s["misses"] for s in summaries)
    assert total_hits + total_misses == 4 * 150
    assert total_misses >= 20 and total_hits >= 4 * 150 - 4 * 20  # at most 20 misses each


def test_cost_meter_summary():
    meter = CostMeter({"serpapi": 0.015})
    meter.record_call("serpapi")
    meter.record_call("serpapi", ok=False)
    meter.record_cache_hit("serpapi")
    meter.record_call("local")
    summary = meter.summary()
    assert summary["backends"]["serpapi"] == {
        "calls": 2,
        "errors": 1,
        "cache_hits": 1,
        "price_per_call_usd": 0.015,
        "estimated_usd": 0.03,
    }
    assert summary["backends"]["local"]["estimated_usd"] == 0.0
    assert summary["total_calls"] == 3 and summary["total_estimated_usd"] == 0.03
