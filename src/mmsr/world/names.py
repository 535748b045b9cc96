"""Entity names and their answer aliases, from the factbook's `Country name` field.

The short conventional form is the name; aliases gather the long form, local forms,
abbreviations, a leading-"The"-less form and accent-free spellings, so that a model
answering "Ivory Coast" or "Cote d'Ivoire" is judged right by exact match.
"""

from __future__ import annotations

import re

from mmsr.world.factbook import FactbookEntry, field
from mmsr.world.text import dedupe, split_top_level, strip_parentheticals, with_ascii_variants

# Where the factbook's short form is not the name people use or is a placeholder
# ("DRC", "Congo (Brazzaville)", "The Dominican"), keyed by FIPS code.
NAME_OVERRIDES = {
    "cf": "Republic of the Congo",
    "cg": "Democratic Republic of the Congo",
    "ck": "Cocos (Keeling) Islands",
    "dr": "Dominican Republic",
    "gz": "Gaza Strip",
    "sv": "Svalbard",
    "fk": "Falkland Islands",
    "vt": "Holy See",
    "sh": "Saint Helena",
    "um": "United States Pacific Island Wildlife Refuges",
}

# Common English names the factbook does not list (or lists only as "former"),
# keyed by FIPS code. Kept short: only names a person would answer with today.
EXTRA_ALIASES = {
    "bm": ["Myanmar"],
    "cf": ["Congo-Brazzaville", "Congo (Brazzaville)", "Congo"],
    "cg": ["DR Congo", "Congo-Kinshasa", "Congo (Kinshasa)"],
    "ck": ["Cocos Islands", "Keeling Islands"],
    "cv": ["Cape Verde"],
    "ez": ["Czech Republic"],
    "fk": ["Islas Malvinas", "Falklands"],
    "gz": ["Gaza"],
    "iv": ["Ivory Coast"],
    "mk": ["Macedonia"],
    "sh": ["Saint Helena, Ascension and Tristan da Cunha", "St Helena"],
    "sv": ["Spitsbergen"],
    "tt": ["East Timor"],
    "tu": ["Turkiye", "T\u00fcrkiye"],
    "uk": ["Great Britain", "Britain"],
    "us": ["America"],
    "vt": ["Vatican City", "Vatican"],
    "wz": ["Swaziland"],
}

_NAME_KEYS = (
    "conventional short form",
    "conventional long form",
    "local short form",
    "local long form",
    "official short form",
    "official long form",
)


def _variants(raw: str, *, keep_asides: bool) -> list[str]:
    """Names inside one factbook name string: `/`-separated forms, asides dropped.

    `R\u00e9publique du Cameroun (French)/Republic of Cameroon (English)` gives both
    forms; a note after `; note` and asides like `(unofficial)` are dropped. With
    `keep_asides` (English forms only), a capitalised multi-word aside is a name too:
    `Falkland Islands (Islas Malvinas)`, `Holy See (Vatican City)`.
    """
    raw = re.split(r";\s*note\b", raw)[0]
    out = []
    for part in split_top_level(raw, "/;"):
        outer, inner = strip_parentheticals(part)
        if " or " in outer:  # "Ellas or Ellada"
            out.extend(o.strip() for o in outer.split(" or ") if o.strip()[:1].isupper())
            continue
        if outer and outer.lower() != "none" and not outer[0].islower():
            out.append(outer)
        if keep_asides:
            out.extend(a for a in inner if a[:1].isupper() and len(a.split()) > 1)
    return out


def _abbreviations(raw: str) -> list[str]:
    """`DRC (or DROC)` -> [DRC, DROC]; `US or USA` -> [US, USA]."""
    raw = re.sub(r"\(or ([^()]*)\)", r"or \1", raw)
    raw, _ = strip_parentheticals(raw)  # "Saint-Barth (French)" -> "Saint-Barth"
    parts = re.split(r"\bor\b|/|,", raw)
    return [p.strip() for p in parts if p.strip() and not p.strip()[0].islower()]


def entity_names(entry: FactbookEntry) -> tuple[str, list[str]]:
    """(display name, aliases) for one factbook entity; aliases never repeat the name."""
    forms = {key: field(entry, "Government", "Country name", key) for key in _NAME_KEYS}
    candidates: list[str] = []
    for key in _NAME_KEYS:
        if forms[key]:
            candidates.extend(_variants(forms[key], keep_asides=key.startswith("conv")))
    name = NAME_OVERRIDES.get(entry.fips) or (candidates[0] if candidates else entry.fips)
    abbreviation = field(entry, "Government", "Country name", "abbreviation")
    if abbreviation:
        candidates.extend(_abbreviations(abbreviation))
    candidates.extend(EXTRA_ALIASES.get(entry.fips, []))
    without_the = [re.sub(r"^The\s+", "", c) for c in [name, *candidates] if c.startswith("The ")]
    aliases = with_ascii_variants(candidates + without_the)
    return name, dedupe(aliases, exclude=(name,))
