"""Publishing local image bytes at a public URL, for web image search that takes only URLs.

SerpAPI's Google Lens engine accepts an image *URL*, not an upload: Google must be able to
download it. A rollout has the image as bytes, so something has to put them online. The
hook is one method, `publish(image) -> url`; `DirectoryImageHost` is the simplest real one:
it writes the bytes into a folder your web server (or a bucket mount) already publishes.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path
from typing import Protocol, runtime_checkable

from mmsr.search.errors import BadRequest


@runtime_checkable
class ImageHost(Protocol):
    def publish(self, image: bytes) -> str:
        """A public http(s) URL that serves exactly `image`."""
        ...


def image_extension(image: bytes) -> str:
    """File extension from the magic bytes (Lens and web servers go by it)."""
    if image.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if image.startswith(b"\xff\xd8\xff"):
        return "jpg"
    if image[:4] == b"RIFF" and image[8:12] == b"WEBP":
        return "webp"
    if image[:6] in (b"GIF87a", b"GIF89a"):
        return "gif"
    raise BadRequest("image bytes are not PNG, JPEG, WebP or GIF; cannot publish them")


class DirectoryImageHost:
    """Write `<sha256>.<ext>` into `directory`; its URL is `<public_base_url>/<name>`."""

    def __init__(self, directory: str | Path, public_base_url: str):
        if not public_base_url.startswith(("http://", "https://")):
            raise ValueError(
                f"lens_public_base_url={public_base_url!r} must be an http(s) URL that "
                f"serves the files of {directory}"
            )
        self.directory = Path(directory)
        self.public_base_url = public_base_url.rstrip("/")

    def publish(self, image: bytes) -> str:
        name = f"{hashlib.sha256(image).hexdigest()}.{image_extension(image)}"
        target = self.directory / name
        if not target.exists():
            self.directory.mkdir(parents=True, exist_ok=True)
            # Write then rename so a web server never serves a half-written file.
            fd, tmp = tempfile.mkstemp(dir=self.directory, suffix=".part")
            with os.fdopen(fd, "wb") as handle:
                handle.write(image)
            os.chmod(tmp, 0o644)
            os.replace(tmp, target)
        return f"{self.public_base_url}/{name}"
