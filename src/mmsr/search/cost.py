"""Cost accounting: calls per backend and their estimated price, readable after a run.

Counts only what was really sent to a backend; cache hits are counted apart (they are the
calls the cache saved). Prices are estimates per call from the config (`prices_usd`).
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass
class BackendUsage:
    calls: int = 0  # requests sent to the backend (failed ones included: most APIs bill them)
    errors: int = 0  # of those, how many failed
    cache_hits: int = 0  # searches answered from the cache instead


class CostMeter:
    """Thread-safe counters; `summary()` is the readable report."""

    def __init__(self, prices_usd: dict[str, float] | None = None):
        self.prices_usd = dict(prices_usd or {})
        self._usage: dict[str, BackendUsage] = {}
        self._lock = threading.Lock()

    def _get(self, backend: str) -> BackendUsage:
        return self._usage.setdefault(backend, BackendUsage())

    def record_call(self, backend: str, *, ok: bool = True, n: int = 1) -> None:
        with self._lock:
            usage = self._get(backend)
            usage.calls += n
            usage.errors += 0 if ok else n

    def record_cache_hit(self, backend: str) -> None:
        with self._lock:
            self._get(backend).cache_hits += 1

    def summary(self) -> dict[str, Any]:
        """{"backends": {name: {calls, errors, cache_hits, price_per_call_usd,
        estimated_usd}}, "total_calls", "total_estimated_usd"}."""
        with self._lock:
            usage = {name: BackendUsage(**vars(u)) for name, u in self._usage.items()}
        backends = {}
        for name, u in sorted(usage.items()):
            price = self.prices_usd.get(name, 0.0)
            backends[name] = {
                "calls": u.calls,
                "errors": u.errors,
                "cache_hits": u.cache_hits,
                "price_per_call_usd": price,
                "estimated_usd": round(u.calls * price, 6),
            }
        return {
            "backends": backends,
            "total_calls": sum(b["calls"] for b in backends.values()),
            "total_estimated_usd": round(sum(b["estimated_usd"] for b in backends.values()), 6),
        }

    def write_json(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.summary(), indent=2) + "\n")
