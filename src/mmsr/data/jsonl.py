"""JSONL + image folder <-> `Sample`.

One JSON object per line with the Sample fields. Images are files in a folder beside the
JSONL, `<stem>_images/<id>_<k>.<ext>`, and each image is written as
`{"file": "<stem>_images/<id>_<k>.<ext>", "path": <SampleImage.path verbatim>}`;
`file` is relative to the JSONL (`null` for an image that only has a path).
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from mmsr.data.errors import DataError
from mmsr.data.images import check_sample_images, image_info
from mmsr.data.record import Sample, SampleImage, check_sample

FIELDS = tuple(f.name for f in dataclasses.fields(Sample))
_UNSAFE_NAME_CHARS = re.compile(r"[^A-Za-z0-9._-]+")


def images_dir(path: Path) -> Path:
    """The folder that holds a JSONL file's images."""
    return path.parent / f"{path.stem}_images"


def _sample_from_record(record: Any, base_dir: Path) -> Sample:
    """Map one decoded JSON line to a Sample; raise ValueError naming what is wrong."""
    if not isinstance(record, dict):
        raise ValueError(f"a line must hold a JSON object, got {type(record).__name__}")
    unknown = sorted(set(record) - set(FIELDS))
    if unknown:
        raise ValueError(f"unknown keys {unknown} (expected some of {list(FIELDS)})")
    for key in ("id", "question", "answer"):
        if key not in record:
            raise ValueError(f"missing {key}")
    images = []
    for k, item in enumerate(record.get("images") or []):
        if not isinstance(item, dict) or set(item) - {"file", "path"}:
            raise ValueError(f"image {k} must be {{'file': ..., 'path': ...}}, got {item!r}")
        data = None
        if item.get("file") is not None:
            file = base_dir / item["file"]
            if not file.is_file():
                raise ValueError(f"image {k}: file not found: {file}")
            data = file.read_bytes()
        images.append(SampleImage(bytes=data, path=item.get("path")))
    values = {key: record[key] for key in FIELDS if key in record}
    values.update(
        images=images,
        aliases=record.get("aliases") or [],
        tags=record.get("tags") or [],
        source=record.get("source") or "",
        extra=record.get("extra") or {},
    )
    sample = Sample(**values)
    check_sample(sample)
    return sample


def iter_jsonl(path: Path, check_images: bool = True) -> Iterator[Sample]:
    """Samples of a JSONL file, one line at a time; image files are read relative to it."""
    with path.open(encoding="utf-8") as lines:
        index = 0
        for line_no, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            sample_id = None
            try:
                try:
                    record = json.loads(line)
                except json.JSONDecodeError as err:
                    raise ValueError(f"line {line_no} is not JSON: {err}") from err
                if isinstance(record, dict) and isinstance(record.get("id"), str):
                    sample_id = record["id"]
                sample = _sample_from_record(record, base_dir=path.parent)
                if check_images:
                    check_sample_images(sample.images, base_dir=path.parent)
            except ValueError as err:
                raise DataError(str(err), path=path, row=index, sample_id=sample_id) from err
            yield sample
            index += 1


def write_jsonl(samples: Sequence[Sample], path: Path) -> int:
    """Write `samples` as JSONL, their image bytes as files in `images_dir(path)`."""
    folder = images_dir(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    used_names: set[str] = set()
    with path.open("w", encoding="utf-8") as out:
        for index, sample in enumerate(samples):
            try:
                check_sample(sample)
                images = []
                for k, image in enumerate(sample.images):
                    if image.bytes is None:
                        images.append({"file": None, "path": image.path})
                        continue
                    try:
                        ext = image_info(image.bytes).ext  # also refuses corrupt bytes
                    except ValueError as err:
                        raise ValueError(f"image {k}: {err}") from err
                    stem = f"{_UNSAFE_NAME_CHARS.sub('_', sample.id)}_{k}"
                    name = f"{stem}.{ext}"
                    if name in used_names:  # ids that differ only in unsafe characters
                        name = f"{stem}-row{index}.{ext}"
                    used_names.add(name)
                    folder.mkdir(exist_ok=True)
                    (folder / name).write_bytes(image.bytes)
                    images.append({"file": f"{folder.name}/{name}", "path": image.path})
                record = dataclasses.asdict(sample)
                record["images"] = images
                try:
                    line = json.dumps(record, ensure_ascii=False)
                except TypeError as err:
                    raise ValueError(f"a value JSON cannot store ({err}); write parquet") from err
            except ValueError as err:
                raise DataError(str(err), path=path, row=index, sample_id=sample.id) from err
            out.write(line + "\n")
    return len(samples)
