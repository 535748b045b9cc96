"""Read, write and convert sample files; the format follows the suffix.

- `.parquet`: MMSearch-R1's FVQA layout (see `mmsr.data.fvqa`).
- `.jsonl`: one Sample per line, images as files beside it (see `mmsr.data.jsonl`).

Reading checks every row and decodes every image; a bad one raises `DataError` naming
the file and the row.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from rich.console import Console
from rich.progress import track

from mmsr.data.errors import DataError
from mmsr.data.fvqa import iter_parquet, write_parquet
from mmsr.data.jsonl import iter_jsonl, write_jsonl
from mmsr.data.record import Sample

SUFFIXES = (".jsonl", ".parquet")


def _format(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix not in SUFFIXES:
        raise DataError(f"unsupported file type {suffix!r} (expected one of {SUFFIXES})", path=path)
    return suffix


def iter_samples(path: Path, check_images: bool = True) -> Iterator[Sample]:
    """Samples of a file one at a time (parquet is read in small batches)."""
    path = Path(path)
    suffix = _format(path)
    if not path.is_file():
        raise FileNotFoundError(f"no such file: {path}")
    if suffix == ".parquet":
        return iter_parquet(path, check_images=check_images)
    return iter_jsonl(path, check_images=check_images)


def read_samples(path: Path, check_images: bool = True) -> list[Sample]:
    """All samples of a `.jsonl` or `.parquet` file."""
    return list(iter_samples(path, check_images=check_images))


def write_samples(samples: Sequence[Sample], path: Path) -> int:
    """Write samples to a `.jsonl` (+ image folder) or `.parquet` file; returns the count."""
    path = Path(path)
    if _format(path) == ".parquet":
        return write_parquet(samples, path)
    return write_jsonl(samples, path)


def count_rows(path: Path) -> int | None:
    """Rows of a parquet file from its footer (cheap); None for JSONL or an unreadable file."""
    if _format(path) != ".parquet":
        return None
    try:
        return pq.ParquetFile(path).metadata.num_rows
    except (pa.ArrowInvalid, OSError):
        return None  # the reader itself reports the broken file, naming it


def tracked(
    samples: Iterator[Sample], path: Path, console: Console | None, verb: str = "reading"
) -> Iterator[Sample]:
    """`samples` with a transient rich progress bar on `console` (if it is a terminal)."""
    if console is None or not console.is_terminal:
        return samples
    description = f"{verb} {Path(path).name}"
    return track(samples, description, total=count_rows(path), console=console, transient=True)


def convert(src: Path, dst: Path, console: Console | None = None) -> int:
    """Read `src` and write it to `dst` (formats from the suffixes); returns the count.

    The whole file is held in memory once (writing parquet infers one schema for all rows).
    """
    src, dst = Path(src), Path(dst)
    _format(dst)  # refuse a bad destination before reading a large source
    samples = list(tracked(iter_samples(src), src, console))
    return write_samples(samples, dst)
