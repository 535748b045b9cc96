"""Turning factbook HTML fragments into clean plain text, and small string helpers.

The factbook stores text with HTML tags (`<strong>`, `<br>`, `<em>`, `<p>`) and entities
(`Bras&iacute;lia`, `&nbsp;`, `&lt;0.1%`). Pages and answers must carry neither.
"""

from __future__ import annotations

import html
import re
import unicodedata

_BREAK_TAGS = re.compile(r"<\s*(br|/p|p|/li|li|/div|div)\b[^>]*>", re.IGNORECASE)
_ANY_TAG = re.compile(r"<[^>]*>")
_SPACES = re.compile(r"[ \t\u00a0\u2009\u200b]+")
_BLANK_LINES = re.compile(r"\n\s*\n+")
# An `&...;` left after unescaping (html.unescape only knows the named entities it knows).
LEFTOVER_ENTITY = re.compile(r"&(#\d+|#x[0-9a-fA-F]+|[A-Za-z][A-Za-z0-9]*);")
LEFTOVER_TAG = re.compile(r"</?[A-Za-z][A-Za-z0-9]*(\s[^<>]*)?/?>")

# Typographic characters folded to ASCII so answers exact-match what a model types.
_TYPOGRAPHY = str.maketrans(
    {"\u2018": "'", "\u2019": "'", "\u201c": '"', "\u201d": '"', "\u2013": "-", "\u2014": "-"}
)


def clean_html(fragment: str, *, newlines: bool = True) -> str:
    """Plain text of an HTML fragment: tags removed, entities decoded, spaces tidied.

    `<br>` / `<p>` become line breaks when `newlines` is true, else "; " separators.
    Entities are decoded twice because a few factbook fields are double-escaped
    (`&amp;nbsp;`).
    """
    text = _BREAK_TAGS.sub("\n" if newlines else "; ", fragment)
    text = _ANY_TAG.sub("", text)
    text = html.unescape(html.unescape(text))
    text = text.translate(_TYPOGRAPHY)
    text = _SPACES.sub(" ", text)
    text = "\n".join(line.strip() for line in text.split("\n"))
    text = _BLANK_LINES.sub("\n", text).strip()
    if not newlines:
        text = re.sub(r"(;\s*)+", "; ", text).strip("; ").strip()
    return text


def fold_ascii(text: str) -> str:
    """`Côte d'Ivoire` -> `Cote d'Ivoire`: drop accents so plain typing still matches."""
    decomposed = unicodedata.normalize("NFKD", text)
    return "".join(ch for ch in decomposed if not unicodedata.combining(ch))


def dedupe(items: list[str], exclude: tuple[str, ...] = ()) -> list[str]:
    """Keep the first spelling of each case-insensitive string; drop empties and `exclude`."""
    seen = {e.casefold() for e in exclude}
    out = []
    for item in items:
        item = item.strip()
        key = item.casefold()
        if item and key not in seen:
            seen.add(key)
            out.append(item)
    return out


def with_ascii_variants(items: list[str]) -> list[str]:
    """Each string followed by its accent-free spelling when that differs."""
    out = []
    for item in items:
        out.append(item)
        folded = fold_ascii(item)
        if folded != item:
            out.append(folded)
    return out


def split_top_level(text: str, separators: str = ",;") -> list[str]:
    """Split on separators that are not inside (...) or [...]; parts are stripped."""
    parts, depth, current = [], 0, []
    for ch in text:
        if ch in "([":
            depth += 1
        elif ch in ")]":
            depth = max(0, depth - 1)
        if ch in separators and depth == 0:
            parts.append("".join(current).strip())
            current = []
        else:
            current.append(ch)
    parts.append("".join(current).strip())
    return [p for p in parts if p]


def strip_parentheticals(text: str) -> tuple[str, list[str]]:
    """`Tripoli (Tarabulus)` -> (`Tripoli`, [`Tarabulus`]): text outside and inside (...)."""
    inner = re.findall(r"\(([^()]*)\)", text)
    outer = re.sub(r"\s*\([^()]*\)", "", text)
    outer = re.sub(r"\s*\[[^\[\]]*\]", "", outer)
    return " ".join(outer.split()), [i.strip() for i in inner]


def shorten(text: str, max_chars: int) -> str:
    """Cut `text` to at most `max_chars`, at a sentence or clause end when there is one."""
    if len(text) <= max_chars:
        return text
    cut = text[:max_chars]
    for mark in (". ", "; ", ", "):
        at = cut.rfind(mark)
        if at > max_chars // 2:
            return cut[: at + 1].rstrip(",;") + " ..."
    return cut.rsplit(" ", 1)[0] + " ..."
