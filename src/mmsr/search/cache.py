"""Persistent search cache (SQLite), shared by every process and thread on a machine.

Keyed by a SHA-256 over (tool kind, backend identity, parameters, normalised query or the
image's SHA-256). Several rollout workers, the server and the CLI may use one file at once:
WAL journal (readers never block the writer), a busy timeout instead of "database is
locked", one connection per thread and per process (connections are never shared across a
fork), and single-statement transactions so locks are held for microseconds.

Only successful searches are stored; failures are retried next time.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mmsr.search.types import SearchResult

_SCHEMA = """
CREATE TABLE IF NOT EXISTS entries (
    key TEXT PRIMARY KEY,
    kind TEXT NOT NULL,          -- "image" or "text"
    backend TEXT NOT NULL,
    created REAL NOT NULL,       -- unix time, seconds
    results TEXT NOT NULL        -- JSON list of SearchResult dicts
)
"""


def normalize_query(query: str) -> str:
    """Lower-cased, whitespace collapsed: "  Capital of  FRANCE " -> "capital of france"."""
    return " ".join(query.lower().split())


def image_digest(image: bytes) -> str:
    return hashlib.sha256(image).hexdigest()


def cache_key(kind: str, backend: str, params: dict[str, Any], subject: str) -> str:
    """Key of one search. `subject` is the normalised query or `sha256:<image digest>`."""
    blob = json.dumps(
        {"kind": kind, "backend": backend, "params": params, "subject": subject},
        sort_keys=True,
        ensure_ascii=False,
        default=str,
    )
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


@dataclass
class CacheStats:
    hits: int = 0
    misses: int = 0
    writes: int = 0

    @property
    def hit_rate(self) -> float:
        total = self.hits + self.misses
        return self.hits / total if total else 0.0


class SearchCache:
    """`get(key)` / `put(key, ...)` of result lists; counters count this process's lookups."""

    def __init__(self, path: str | Path, *, ttl_s: float | None = None, busy_timeout_s=30.0):
        self.path = Path(path).expanduser()
        self.ttl_s = ttl_s
        self.busy_timeout_s = busy_timeout_s
        self.stats = CacheStats()
        self._stats_lock = threading.Lock()
        self._local = threading.local()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._connection()  # create the schema now, so errors name the file early

    def _connection(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is not None and self._local.pid == os.getpid():
            return conn
        try:
            conn = sqlite3.connect(
                self.path,
                timeout=self.busy_timeout_s,  # sqlite waits this long for a lock
                isolation_level=None,  # autocommit: every statement its own short transaction
                check_same_thread=True,
            )
            conn.execute(f"PRAGMA busy_timeout = {int(self.busy_timeout_s * 1000)}")
            self._use_wal(conn)
            conn.execute("PRAGMA synchronous = NORMAL")  # WAL + NORMAL: durable enough, fast
            conn.execute(_SCHEMA)
        except sqlite3.Error as err:
            raise RuntimeError(f"search cache {self.path}: cannot open: {err}") from err
        self._local.conn, self._local.pid = conn, os.getpid()
        return conn

    def _use_wal(self, conn: sqlite3.Connection) -> None:
        """Switch the file to WAL (persistent, so usually already done). Several processes
        opening a new file at once race for it, and SQLite answers the loser "database is
        locked" at once, without waiting on the busy timeout: retry until the timeout."""
        deadline = time.monotonic() + self.busy_timeout_s
        while True:
            try:
                if conn.execute("PRAGMA journal_mode").fetchone()[0].lower() != "wal":
                    conn.execute("PRAGMA journal_mode = WAL")
                return
            except sqlite3.OperationalError as err:
                if "locked" not in str(err) or time.monotonic() > deadline:
                    raise
                time.sleep(0.02)

    def get(self, key: str) -> list[SearchResult] | None:
        row = (
            self._connection()
            .execute("SELECT created, results FROM entries WHERE key = ?", (key,))
            .fetchone()
        )
        fresh = row is not None and (self.ttl_s is None or time.time() - row[0] <= self.ttl_s)
        with self._stats_lock:
            if fresh:
                self.stats.hits += 1
            else:
                self.stats.misses += 1
        if not fresh:
            return None
        return [SearchResult.from_dict(r) for r in json.loads(row[1])]

    def put(self, key: str, results: list[SearchResult], *, kind: str, backend: str) -> None:
        payload = json.dumps([r.to_dict() for r in results], ensure_ascii=False)
        self._connection().execute(
            "INSERT OR REPLACE INTO entries (key, kind, backend, created, results) "
            "VALUES (?, ?, ?, ?, ?)",
            (key, kind, backend, time.time(), payload),
        )
        with self._stats_lock:
            self.stats.writes += 1

    def prune(self) -> int:
        """Delete entries older than the TTL; returns how many."""
        if self.ttl_s is None:
            return 0
        cursor = self._connection().execute(
            "DELETE FROM entries WHERE created < ?", (time.time() - self.ttl_s,)
        )
        return cursor.rowcount

    def __len__(self) -> int:
        return self._connection().execute("SELECT COUNT(*) FROM entries").fetchone()[0]

    def summary(self) -> dict[str, Any]:
        with self._stats_lock:
            stats = CacheStats(self.stats.hits, self.stats.misses, self.stats.writes)
        return {
            "path": str(self.path),
            "entries": len(self),
            "hits": stats.hits,
            "misses": stats.misses,
            "writes": stats.writes,
            "hit_rate": round(stats.hit_rate, 4),
            "ttl_s": self.ttl_s,
        }

    def close(self) -> None:
        """Close this thread's connection (other threads' close when they exit)."""
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None
