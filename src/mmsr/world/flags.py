"""Flag images: fetching the npm renders, joining them to the factbook, look-alike groups.

The renders come from npm `svg-country-flags` (public-domain flags rendered from
Wikipedia's SVGs), `package/png250px/<iso2>.png`, 250 px wide.
"""

from __future__ import annotations

import io
import shutil
import subprocess
import tarfile
from pathlib import Path

import numpy as np
from PIL import Image

NPM_PACKAGE = "svg-country-flags"
NPM_VERSION = "1.2.10"
PNG_FOLDER = "package/png250px"
MAX_FLAG_SIDE = 256  # px; committed flags are at most this wide and tall

# Internet country codes whose ISO 3166 alpha-2 code differs (.uk is the only one).
TLD_TO_ISO2 = {"uk": "gb"}

# Flags that image search cannot tell apart (NOTES.md, Data): identical renders, or
# differing only in shade or proportions. Keyed by flag file (ISO alpha-2 code).
KNOWN_LOOKALIKES: tuple[tuple[str, ...], ...] = (
    ("no", "sj", "bv"),  # Norway, Svalbard, Bouvet Island
    ("fr", "mf", "pm"),  # France, Saint Martin, Saint Pierre and Miquelon
    ("au", "hm"),  # Australia, Heard Island and McDonald Islands
    ("gb", "sh"),  # United Kingdom, Saint Helena
    ("id", "mc"),  # Indonesia, Monaco (proportions differ)
    ("td", "ro"),  # Chad, Romania (shade of blue differs)
)
# Mean absolute RGB difference (0..1) at 48x32 px under which two flags count as the same;
# identical renders score 0.0, Indonesia/Monaco 0.0006, the nearest distinct pair 0.01.
LOOKALIKE_THRESHOLD = 0.005


def default_cache_dir() -> Path:
    return Path.home() / ".cache" / "mmsr" / "build"


def fetch_npm_flags(cache_dir: Path | None = None) -> Path:
    """Folder of `<iso2>.png` renders from the npm package, fetched once into the cache.

    Uses `npm pack` (the registry's own client) so no URL is hard-coded here.
    """
    cache_dir = cache_dir or default_cache_dir()
    out = cache_dir / f"{NPM_PACKAGE}-{NPM_VERSION}"
    if (out / "png250px").is_dir() and any((out / "png250px").glob("*.png")):
        return out / "png250px"
    npm = shutil.which("npm")
    if npm is None:
        raise RuntimeError(
            "npm is not installed, and it is needed to fetch the flag images "
            f"({NPM_PACKAGE}@{NPM_VERSION}); install Node.js/npm, or pass --flags-dir "
            "with a folder of <iso2>.png files"
        )
    cache_dir.mkdir(parents=True, exist_ok=True)
    tarball = cache_dir / f"{NPM_PACKAGE}-{NPM_VERSION}.tgz"
    if not tarball.exists():
        proc = subprocess.run(
            [npm, "pack", f"{NPM_PACKAGE}@{NPM_VERSION}", "--pack-destination", str(cache_dir)],
            capture_output=True,
            text=True,
            check=False,
        )
        if proc.returncode != 0 or not tarball.exists():
            raise RuntimeError(
                f"`npm pack {NPM_PACKAGE}@{NPM_VERSION}` failed (exit {proc.returncode}): "
                f"{proc.stderr.strip()[-500:]}"
            )
    _extract_pngs(tarball, out)
    return out / "png250px"


def _extract_pngs(tarball: Path, out: Path) -> None:
    """Unpack the 250 px PNGs and the package's metadata (for its licence) from the tarball."""
    (out / "png250px").mkdir(parents=True, exist_ok=True)
    with tarfile.open(tarball, "r:gz") as tar:
        for member in tar.getmembers():
            name = member.name
            if not member.isfile():
                continue
            if name.startswith(PNG_FOLDER + "/") and name.endswith(".png"):
                target = out / "png250px" / Path(name).name
            elif name in ("package/package.json", "package/README.md"):
                target = out / Path(name).name
            else:
                continue
            source = tar.extractfile(member)
            if source is not None:
                target.write_bytes(source.read())


def flag_code(internet_codes: list[str]) -> str | None:
    """ISO alpha-2 flag file for a factbook entity: its first internet code, .uk -> gb."""
    if not internet_codes:
        return None
    return TLD_TO_ISO2.get(internet_codes[0], internet_codes[0])


def prepare_flag(png: bytes, source: str) -> bytes:
    """The committed PNG: the render as it is when it fits 256 px, else shrunk to fit.

    Re-running on the output gives the same bytes, so a rebuild from the shipped flags
    reproduces the shipped world.
    """
    try:
        img = Image.open(io.BytesIO(png))
        img.load()
    except Exception as err:
        raise ValueError(f"{source}: not a readable image ({err})") from err
    if max(img.size) <= MAX_FLAG_SIDE:
        return png
    img = img.convert("RGBA")
    img.thumbnail((MAX_FLAG_SIDE, MAX_FLAG_SIDE), Image.Resampling.LANCZOS)
    buf = io.BytesIO()
    img.save(buf, format="PNG", optimize=True)
    return buf.getvalue()


def open_flag(png: bytes) -> Image.Image:
    """A flag as RGBA pixels (transparent outside non-rectangular flags such as Nepal's)."""
    img = Image.open(io.BytesIO(png))
    return img.convert("RGBA")


def _signature(img: Image.Image) -> np.ndarray:
    """48x32 RGB thumbnail over white, values 0..1: what 'looks the same' compares."""
    canvas = Image.new("RGBA", img.size, (255, 255, 255, 255))
    canvas.alpha_composite(img)
    small = canvas.convert("RGB").resize((48, 32), Image.Resampling.BILINEAR)
    return np.asarray(small, dtype=np.float32) / 255.0


def lookalike_groups(flags: dict[str, Image.Image]) -> list[list[str]]:
    """Groups (>= 2 codes, sorted) of flags image search cannot separate.

    The known list from NOTES.md, joined with any pair whose renders are near-identical,
    so a different flag source cannot silently add an ambiguous pair.
    """
    codes = sorted(flags)
    parent = {c: c for c in codes}

    def root(c: str) -> str:
        while parent[c] != c:
            c = parent[c]
        return c

    def union(a: str, b: str) -> None:
        ra, rb = root(a), root(b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)

    for group in KNOWN_LOOKALIKES:
        present = [c for c in group if c in parent]
        for other in present[1:]:
            union(present[0], other)
    signatures = {c: _signature(flags[c]) for c in codes}
    for i, a in enumerate(codes):
        for b in codes[i + 1 :]:
            if float(np.abs(signatures[a] - signatures[b]).mean()) < LOOKALIKE_THRESHOLD:
                union(a, b)
    groups: dict[str, list[str]] = {}
    for c in codes:
        groups.setdefault(root(c), []).append(c)
    return sorted((g for g in groups.values() if len(g) > 1), key=lambda g: g[0])
