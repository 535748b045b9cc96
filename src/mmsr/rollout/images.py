"""Thumbnails of search results as local images the engine can show the policy.

A result's `thumbnail` may be a `world://` asset URL (the offline world's pages), a local
path (`file://` or plain), or an http(s) URL. The first two resolve here without network;
http(s) thumbnails resolve only through a `fetch` callable the caller passes (e.g. the
search stack's SSRF-safe fetcher), else the hit is shown without its picture.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path

from PIL import Image

WORLD_SCHEME = "world://"
FetchBytes = Callable[[str], bytes]  # URL -> encoded image bytes; raises on failure


def _world_asset(relative: str) -> Path | None:
    """`world://flags/fr.png` (or `world://assets/flags/fr.png`) -> the asset file."""
    from mmsr.world.load import load_world

    try:
        world = load_world()
    except (FileNotFoundError, OSError, ValueError):
        return None
    relative = relative.lstrip("/")
    for candidate in (relative, relative.removeprefix("assets/")):
        path = world.asset(candidate)
        if path.is_file():
            return path
    return None


def resolve_thumbnail(thumbnail: str, fetch: FetchBytes | None = None) -> str | bytes | None:
    """A local path or encoded bytes for `thumbnail`, or None when it cannot be had.

    Never raises: a missing picture only means the hit is shown as text.
    """
    if not thumbnail:
        return None
    try:
        if thumbnail.startswith(WORLD_SCHEME):
            path = _world_asset(thumbnail[len(WORLD_SCHEME) :])
            return str(path) if path is not None else None
        if thumbnail.startswith(("http://", "https://")):
            if fetch is None:
                return None
            data = fetch(thumbnail)
            Image.open(io.BytesIO(data)).verify()  # refuse what is not an image
            return data
        path = Path(thumbnail.removeprefix("file://")).expanduser()
        if path.is_file():
            return str(path)
        path = _world_asset(thumbnail)  # a bare asset path such as "flags/fr.png"
        return str(path) if path is not None else None
    except Exception:  # noqa: BLE001 - any failure to get a picture degrades to text only
        return None
