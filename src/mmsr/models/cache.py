"""Where mmsr keeps converted weights, and how a folder is written there safely."""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

DEFAULT_CACHE = Path("~/.cache/mmsr")


def cache_root() -> Path:
    """`$MMSR_CACHE`, or `~/.cache/mmsr` when it is unset."""
    return Path(os.environ.get("MMSR_CACHE") or DEFAULT_CACHE).expanduser()


@contextmanager
def atomic_folder(final: Path) -> Iterator[Path]:
    """Yield a temporary sibling of `final`; on success rename it to `final` in one step.

    A crash or Ctrl-C mid-write leaves only a `.tmp-*` folder behind, never a half-written
    `final` that a later run would trust. If another process finished `final` first, ours
    is discarded (both hold the same content).
    """
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.parent / f".tmp-{final.name}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        yield tmp
        try:
            tmp.rename(final)
        except OSError:
            if not final.is_dir():
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
