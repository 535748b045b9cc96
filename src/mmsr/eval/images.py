"""Images for the static reports: any image reference -> a small `data:` URI.

Reports must open anywhere as one file, so images are embedded, downscaled to
`max_side` pixels and re-encoded (JPEG, PNG when there is transparency) to keep a
400-question viewer at a few MB.
"""

from __future__ import annotations

import base64
import io
from functools import lru_cache
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from mmsr.rollout.images import resolve_thumbnail


def data_uri(data: bytes, max_side: int = 192) -> str | None:
    """`data:image/...;base64,...` for encoded image bytes; None if they are no image."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            image.load()
            image.thumbnail((max_side, max_side))
            has_alpha = image.mode in ("RGBA", "LA", "P")
            out = io.BytesIO()
            if has_alpha:
                image.save(out, format="PNG", optimize=True)
                mime = "image/png"
            else:
                image.convert("RGB").save(out, format="JPEG", quality=80)
                mime = "image/jpeg"
    except (UnidentifiedImageError, OSError, ValueError):
        return None
    return f"data:{mime};base64,{base64.b64encode(out.getvalue()).decode('ascii')}"


@lru_cache(maxsize=4096)
def image_src(reference: str, max_side: int = 192) -> str | None:
    """An `<img src>` for a thumbnail reference: local files and world assets are embedded;
    http(s) URLs are kept as links (never fetched here); anything else gives None."""
    if not reference:
        return None
    if reference.startswith(("http://", "https://", "data:image/")):
        return reference
    # world:// assets, file:// and plain paths, as the rollout engine shows them
    resolved = resolve_thumbnail(reference)
    if resolved is None:
        return None
    data = resolved if isinstance(resolved, bytes) else Path(resolved).read_bytes()
    return data_uri(data, max_side)
