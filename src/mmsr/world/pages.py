"""The world's web: several readable text pages per entity, cut from factbook sections.

Each page is what a search engine would return for a country: a title, a stable URL
(`world://factbook/<fips>/<slug>`), clean text and, for the entity's main page, the
flag as thumbnail. Noisy numeric tables (age pyramids, sanitation shares, diplomatic
addresses) are dropped and long fields shortened so pages stay a few KB each.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from typing import Any

from mmsr.world.factbook import FactbookEntry, field, node_text
from mmsr.world.text import clean_html, shorten


@dataclass
class Page:
    id: str  # "<entity id>/<slug>", e.g. "fr/government"
    entity: str  # entity id
    url: str  # "world://factbook/<fips>/<slug>"
    title: str  # "France — Government"
    text: str  # clean plain text, "Field: value" paragraphs
    thumbnail: str | None = None  # relative asset path of the flag (main page only)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# (slug, title, factbook sections) of each page, main page first.
PAGE_SECTIONS: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("overview", "Overview", ("Introduction",)),
    ("geography", "Geography", ("Geography",)),
    ("people-and-society", "People and Society", ("People and Society",)),
    ("government", "Government", ("Government",)),
    ("economy", "Economy", ("Economy",)),
    ("communications", "Communications and Transportation", ("Communications", "Transportation")),
)
MAIN_PAGE = "overview"

# Fields that are tables of numbers or addresses rather than prose.
DROPPED_FIELDS = frozenset(
    {
        "Geographic coordinates",
        "Map references",
        "Maritime claims",
        "Land use",
        "Irrigated land",
        "Major watersheds (area sq km)",
        "Age structure",
        "Dependency ratios",
        "Sex ratio",
        "Drinking water source",
        "Sanitation facility access",
        "Mother's mean age at first birth",
        "Maternal mortality ratio",
        "Gross reproduction rate",
        "Health expenditure",
        "Physician density",
        "Hospital bed density",
        "Obesity - adult prevalence rate",
        "Alcohol consumption per capita",
        "Tobacco use",
        "Children under the age of 5 years underweight",
        "Currently married women (ages 15-49)",
        "Education expenditure",
        "School life expectancy (primary to tertiary education)",
        "Diplomatic representation in the US",
        "Diplomatic representation from the US",
        "Citizenship",
        "Average household expenditures",
        "Household income or consumption by percentage share",
        "GDP - composition, by end use",
        "Remittances",
        "Merchant marine",
        "Heliports",
        "Civil aircraft registration country code prefix",
    }
)
MAX_FIELD_CHARS = 700  # one field's text; longer fields are cut at a sentence end
MAX_NOTE_CHARS = 240
MIN_PAGE_CHARS = 100  # shorter section pages are left out
MAX_BACKGROUND_CHARS = 1800  # the main page's introduction, the most useful prose
_YEAR_KEY = re.compile(r"\b(19|20)\d\d$")


def _field_text(name: str, node: Any) -> str | None:
    """One field as plain text: `Name: value`, sub-fields as `- sub: value` lines."""
    raw = node_text(node)
    if raw is not None:
        text = clean_html(raw, newlines=False)
        return f"{name}: {shorten(text, MAX_FIELD_CHARS)}" if text else None
    if not isinstance(node, dict):
        return None
    lines, seen_year_series = [], False
    for sub, child in node.items():
        if sub == "text":
            continue
        if _YEAR_KEY.search(sub):
            # "Real GDP growth rate 2024/2023/2022": keep the latest year only.
            if seen_year_series:
                continue
            seen_year_series = True
        raw = node_text(child)
        if raw is None:
            continue
        text = clean_html(raw, newlines=False)
        if not text:
            continue
        if sub == "note":
            text = re.sub(r"^note( \d+)?:\s*", "", text)
            lines.append(f"- note: {shorten(text, MAX_NOTE_CHARS)}")
        elif sub == name:
            lines.append(f"- {shorten(text, MAX_FIELD_CHARS)}")
        else:
            lines.append(f"- {sub.strip()}: {shorten(text, MAX_FIELD_CHARS)}")
    if not lines:
        return None
    return f"{name}:\n" + "\n".join(lines)


def _section_text(entry: FactbookEntry, section: str) -> list[str]:
    blocks = []
    for name, node in entry.data.get(section, {}).items():
        if name in DROPPED_FIELDS:
            continue
        block = _field_text(name, node)
        if block:
            blocks.append(block)
    return blocks


def _key_facts(
    entry: FactbookEntry, name: str, region: str, continents: list[str] | None = None
) -> list[str]:
    """The infobox of the main page: the facts a reader looks for first. `continents`: the
    continent (and any other it is also counted in), which the factbook's regions ("Middle
    East", "Central America and the Caribbean") do not name, as an encyclopedia would."""
    rows = [
        ("Official name", field(entry, "Government", "Country name", "conventional long form")),
        ("Region", region),
        ("Continent", " / ".join(continents or [])),
        ("Capital", field(entry, "Government", "Capital", "name")),
        ("Population", field(entry, "People and Society", "Population", "total")),
        ("Languages", field(entry, "People and Society", "Languages")),
        ("Currency", _currency_name(entry)),
        ("Internet country code", field(entry, "Communications", "Internet country code")),
        ("Independence", field(entry, "Government", "Independence")),
        ("National anthem", field(entry, "Government", "National anthem(s)", "title")),
        ("Flag", _flag_description(entry)),
    ]
    lines = [f"{label}: {shorten(value, 300)}" for label, value in rows if value]
    if lines and lines[0].startswith("Official name: none"):
        lines[0] = f"Official name: {name}"
    return ["Key facts:\n" + "\n".join(f"- {line}" for line in lines)] if lines else []


def _currency_name(entry: FactbookEntry) -> str | None:
    """`euros (EUR) per US dollar -` -> `euros (EUR)`."""
    text = field(entry, "Economy", "Exchange rates", "Currency")
    if not text:
        return None
    return re.sub(r"\s*per US dollar.*$", "", text).strip() or None


def _flag_description(entry: FactbookEntry) -> str | None:
    raw = node_text(entry.data.get("Government", {}).get("Flag"))
    if raw is None:
        return None
    text = clean_html(raw, newlines=False)
    match = re.search(r"description:\s*(.*?)(?:;\s*history:|$)", text)
    return (match.group(1) if match else text).strip() or None


def entity_pages(
    entry: FactbookEntry,
    entity_id: str,
    name: str,
    region: str,
    flag_path: str | None,
    continents: list[str] | None = None,
) -> list[Page]:
    """The pages of one entity; sections with no text give no page."""
    pages = []
    for slug, title, sections in PAGE_SECTIONS:
        blocks: list[str] = []
        for section in sections:
            blocks.extend(_section_text(entry, section))
        if slug == MAIN_PAGE:
            background = node_text(entry.data.get("Introduction", {}).get("Background"))
            blocks = [shorten(clean_html(background), MAX_BACKGROUND_CHARS)] if background else []
            blocks.extend(_key_facts(entry, name, region, continents))
        text = "\n\n".join(blocks)
        if not text or (slug != MAIN_PAGE and len(text) < MIN_PAGE_CHARS):
            continue  # Bouvet Island's "Communications" is one line: not a page
        pages.append(
            Page(
                id=f"{entity_id}/{slug}",
                entity=entity_id,
                url=f"world://factbook/{entry.fips}/{slug}",
                title=f"{name} \u2014 {title}",
                text=text,
                thumbnail=flag_path if slug == MAIN_PAGE else None,
            )
        )
    return pages
