"""The on-disk layout of a built world and its (de)serialisation.

```
assets/
  manifest.json          sources, seed, counts, build date
  entities.json          [Entity] with facts
  pages.jsonl.gz         one Page per line
  questions.jsonl.gz     one Sample per line; image paths relative to the folder
  flags/<iso2>.png       clean flag renders (<= 256 px), page thumbnails
  images/<id>.jpg        degraded flag photos shown by the questions (<= 192 px)
```

Gzip members are written with mtime 0 so a rebuild gives identical bytes.
"""

from __future__ import annotations

import gzip
import io
import json
from pathlib import Path
from typing import Any

from mmsr.data.record import Sample, SampleImage

MANIFEST = "manifest.json"
ENTITIES = "entities.json"
PAGES = "pages.jsonl.gz"
QUESTIONS = "questions.jsonl.gz"
FLAGS_DIR = "flags"
IMAGES_DIR = "images"
OWNED_FILES = (MANIFEST, ENTITIES, PAGES, QUESTIONS)
OWNED_DIRS = (FLAGS_DIR, IMAGES_DIR)


def default_root() -> Path:
    """The world shipped inside the package."""
    return Path(__file__).parent / "assets"


def write_json(path: Path, obj: Any) -> None:
    path.write_text(json.dumps(obj, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")


def write_jsonl_gz(path: Path, rows: list[dict[str, Any]]) -> None:
    buf = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=buf, mtime=0, compresslevel=9) as gz:
        for row in rows:
            gz.write((json.dumps(row, ensure_ascii=False) + "\n").encode("utf-8"))
    path.write_bytes(buf.getvalue())


def read_jsonl_gz(path: Path) -> list[dict[str, Any]]:
    rows = []
    with gzip.open(path, "rt", encoding="utf-8") as f:
        for line_no, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as err:
                raise ValueError(f"{path}, line {line_no}: not valid JSON ({err})") from err
    return rows


def sample_to_row(sample: Sample) -> dict[str, Any]:
    """A question as stored: the Sample's fields, images as relative paths only."""
    return {
        "id": sample.id,
        "question": sample.question,
        "answer": sample.answer,
        "aliases": sample.aliases,
        "images": [{"path": image.path} for image in sample.images],
        "category": sample.category,
        "tools": sample.tools,
        "source": sample.source,
        "tags": sample.tags,
        "split": sample.split,
        "extra": sample.extra,
    }


def row_to_sample(row: dict[str, Any], root: Path) -> Sample:
    """A stored question with its image paths made absolute under `root`."""
    try:
        images = [SampleImage(path=str(root / image["path"])) for image in row["images"]]
        return Sample(
            id=row["id"],
            question=row["question"],
            answer=row["answer"],
            images=images,
            aliases=list(row.get("aliases", [])),
            category=row.get("category"),
            tools=row.get("tools"),
            source=row.get("source", ""),
            tags=list(row.get("tags", [])),
            split=row.get("split"),
            extra=dict(row.get("extra", {})),
        )
    except (KeyError, TypeError) as err:
        raise ValueError(f"question {row.get('id', '?')!r}: malformed row ({err!r})") from err
