"""On-disk cache of built search indexes (image vectors, text embeddings), keyed by content.

A key is the SHA-256 of everything the vectors depend on (the corpus content, the encoder
name and the build settings), so a changed world or encoder misses and rebuilds, and an
unchanged one loads in milliseconds on the second start. Files live under
`cache_root()/search/index/` and are written atomically (temp file + rename), so several
processes starting at once never read a half-written array.
"""

from __future__ import annotations

import hashlib
import json
import os
import uuid
from pathlib import Path
from typing import Any

import numpy as np

from mmsr.models.cache import cache_root


def content_key(*parts: Any) -> str:
    """Stable hex digest of JSON-serialisable parts (bytes are hashed first)."""
    digest = hashlib.sha256()
    for part in parts:
        if isinstance(part, bytes | bytearray):
            digest.update(hashlib.sha256(part).digest())
        else:
            digest.update(json.dumps(part, sort_keys=True, default=str).encode())
        digest.update(b"\0")
    return digest.hexdigest()


def index_dir() -> Path:
    return cache_root() / "search" / "index"


def load_arrays(kind: str, key: str) -> dict[str, np.ndarray] | None:
    """The arrays saved under (`kind`, `key`), or None when absent or unreadable."""
    path = index_dir() / f"{kind}-{key[:32]}.npz"
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as data:
            return {name: data[name] for name in data.files}
    except (OSError, ValueError):
        return None  # a damaged file is rebuilt, not trusted


def save_arrays(kind: str, key: str, arrays: dict[str, np.ndarray]) -> Path:
    folder = index_dir()
    folder.mkdir(parents=True, exist_ok=True)
    final = folder / f"{kind}-{key[:32]}.npz"
    tmp = folder / f".tmp-{final.stem}-{os.getpid()}-{uuid.uuid4().hex[:8]}.npz"
    np.savez(tmp, **arrays)
    os.replace(tmp, final)
    return final
