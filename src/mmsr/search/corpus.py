"""A user's own page corpus for the local backends: one JSONL file, one page per line.

    {"url": "https://example.org/eiffel", "title": "Eiffel Tower", "text": "...",
     "thumbnail": "images/eiffel.jpg"}

`url`, `title` and `text` are required; `thumbnail` is optional and may be a path relative
to the JSONL file's folder, an absolute path, or an http(s) URL (reported, not indexed:
the image index only reads local files, never the network). Point the search config's
`local_pages` at the file and both local tools search it instead of the embedded world.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path


@dataclass
class CorpusPage:
    url: str
    title: str
    text: str
    thumbnail: str = ""  # as the hit reports it
    thumbnail_path: str = ""  # the local image file indexed ("" when none or remote)


def load_corpus(path: str | Path) -> list[CorpusPage]:
    """Pages of the JSONL corpus at `path`; ValueError names the bad line."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"local_pages corpus not found: {path}")
    pages: list[CorpusPage] = []
    seen: dict[str, int] = {}
    with path.open(encoding="utf-8") as lines:
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            where = f"{path}:{number}"
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                raise ValueError(f"{where}: not valid JSON ({err.msg})") from None
            if not isinstance(row, dict):
                raise ValueError(f"{where}: expected a JSON object, got {type(row).__name__}")
            for key in ("url", "title", "text"):
                if not isinstance(row.get(key), str) or not row[key].strip():
                    raise ValueError(f"{where}: `{key}` must be a non-empty string")
            url = row["url"].strip()
            if url in seen:
                raise ValueError(f"{where}: url {url!r} already on line {seen[url]}")
            seen[url] = number
            thumbnail = row.get("thumbnail") or ""
            if not isinstance(thumbnail, str):
                raise ValueError(f"{where}: `thumbnail` must be a string")
            pages.append(
                CorpusPage(
                    url, row["title"].strip(), row["text"], *_thumb(thumbnail, path.parent, where)
                )
            )
    if not pages:
        raise ValueError(f"{path}: the corpus holds no pages")
    return pages


def _thumb(thumbnail: str, folder: Path, where: str) -> tuple[str, str]:
    if not thumbnail:
        return "", ""
    if thumbnail.startswith(("http://", "https://")):
        return thumbnail, ""
    local = Path(thumbnail.removeprefix("file://")).expanduser()
    local = local if local.is_absolute() else folder / local
    if not local.is_file():
        raise ValueError(f"{where}: thumbnail file not found: {local}")
    return str(local.resolve()), str(local.resolve())
