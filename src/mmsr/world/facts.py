"""Short, exact-match-able answers extracted from factbook fields.

Each extractor returns a `Fact` (gold answer + accepted aliases + the cleaned source
text) or None when the field is missing or too messy to be a short answer; questions
are only asked about facts that survived. The rules are deliberately conservative:
a skipped question costs nothing, a wrong gold answer poisons the reward.
"""

from __future__ import annotations

import re
import string
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

from mmsr.world.factbook import FactbookEntry
from mmsr.world.factbook import field as fb_field
from mmsr.world.text import (
    dedupe,
    split_top_level,
    strip_parentheticals,
    with_ascii_variants,
)


@dataclass
class Fact:
    answer: str  # the gold answer, short
    aliases: list[str] = field(default_factory=list)  # other accepted answers
    text: str = ""  # the cleaned factbook text it was read from

    def to_dict(self) -> dict:
        return asdict(self)


def _fact(answer: str, aliases: list[str], text: str) -> Fact:
    answer = answer.strip()
    return Fact(answer, dedupe(with_ascii_variants([answer, *aliases]), exclude=(answer,)), text)


# ------------------------------------------------------------------ capital
def _capital_part(part: str) -> tuple[str, list[str]] | None:
    """`Tripoli (Tarabulus)` -> (Tripoli, [Tarabulus]); `X is the administrative capital`."""
    part = re.sub(r"^(.*?) is the .*capital$", r"\1", part.strip())
    outer, asides = strip_parentheticals(part)
    outer = re.sub(r" in [A-Z][a-z]+$", "", outer)  # "Chisinau in Romanian"
    if not outer or not outer[0].isupper():
        return None
    aliases = []
    for aside in asides:
        aside = re.sub(r"^aka ", "", aside)
        aside = re.split(r",? (continues|is the|in [A-Z])", aside)[0]
        if aside[:1].isupper() and "capital" not in aside and "located" not in aside:
            aliases.extend(a.strip() for a in re.split(r"[/,]", aside) if a.strip())
    return outer, aliases


# Spellings people use that the factbook's capital field does not give.
CAPITAL_ALIASES = {
    "Washington, D.C.": ["Washington", "Washington D.C.", "Washington DC"],
    "Rangoon": ["Naypyidaw"],
    "Kyiv": ["Kiev"],
}


def capital(entry: FactbookEntry) -> Fact | None:
    text = fb_field(entry, "Government", "Capital", "name")
    if not text:
        return None
    head = re.split(r";?\s*note\b", text)[0].strip(" ;")
    if not head or not head[0].isupper():  # "no official capital", "administered from ..."
        return None
    parts = split_top_level(head, ";")
    if len(parts) == 1 and head.count("capital)") > 1:  # "A (x capital), B (y capital)"
        parts = split_top_level(head, ",")
    names: list[str] = []
    aliases: list[str] = []
    for part in parts:
        parsed = _capital_part(part)
        if parsed is None:
            continue
        names.append(parsed[0])
        aliases.extend(parsed[1])
    if not names:
        return None
    # Several capitals (Bolivia, South Africa): each is accepted, the first is gold.
    aliases.extend(CAPITAL_ALIASES.get(names[0], []))
    return _fact(names[0], names[1:] + aliases, text)


# ------------------------------------------------------------------ currency
# ISO code -> (gold name, aliases) where the factbook's wording is not what people say.
CURRENCY_OVERRIDES = {
    "XOF": ("West African CFA franc", ["CFA franc", "Communaute Financiere Africaine franc"]),
    "XAF": (
        "Central African CFA franc",
        ["CFA franc", "Cooperation Financiere en Afrique Centrale franc"],
    ),
    "XPF": ("CFP franc", ["Comptoirs Francais du Pacifique franc", "Pacific franc"]),
    "RMB": ("renminbi", ["yuan", "Renminbi yuan", "Chinese yuan", "CNY"]),
    "BAM": ("convertible mark", ["konvertibilna marka", "Bosnia and Herzegovina convertible mark"]),
    "PEN": ("sol", ["nuevo sol", "Peruvian sol"]),
}
_IRREGULAR_SINGULAR = {
    "leke": "lek",
    "leva": "lev",
    "lei": "leu",
    "koruny": "koruna",
    "zlotych": "zloty",
    "kronur": "krona",
    "kroner": "krone",
    "kronor": "krona",
    "maloti": "loti",
    "meticais": "metical",
    "emalangeni": "lilangeni",
    "quetzales": "quetzal",
    "colones": "colon",
    "markas": "marka",
}


def singular(name: str) -> str:
    """`Algerian dinars` -> `Algerian dinar`; `koruny` -> `koruna`; `baht` stays."""
    words = name.split()
    last = words[-1]
    if last in _IRREGULAR_SINGULAR:
        last = _IRREGULAR_SINGULAR[last]
    elif last.endswith("s") and not last.endswith("ss") and len(last) > 3:
        last = last[:-1]
    return " ".join([*words[:-1], last])


def currency(entry: FactbookEntry) -> Fact | None:
    text = fb_field(entry, "Economy", "Exchange rates", "Currency")
    if not text:
        return None
    match = re.match(r"^(.*?)\s*(?:\(([A-Z/]+)\))?\s*per US dollar", text)
    if not match or not match.group(1):
        return None
    names_text, codes_text = match.group(1).strip(), match.group(2) or ""
    codes = [c for c in codes_text.split("/") if c]
    for code in codes:
        if code in CURRENCY_OVERRIDES:
            gold, extra = CURRENCY_OVERRIDES[code]
            return _fact(gold, [*extra, singular(names_text), names_text, *codes], text)
    # "Tuvaluan dollars or Australian dollars", "togrog/tugriks", "Aruban guilders/florins"
    plural_forms = [p.strip() for p in re.split(r" or |/", names_text) if p.strip()]
    if len(plural_forms) > 1 and len(plural_forms[-1].split()) == 1 and " " in plural_forms[0]:
        # "Aruban guilders/florins": the qualifier applies to both forms.
        qualifier = plural_forms[0].rsplit(" ", 1)[0]
        plural_forms = [plural_forms[0], f"{qualifier} {plural_forms[-1]}"]
    singulars = [singular(p) for p in plural_forms]
    # The code names the last form ("... or Australian dollars (AUD)"), so it is gold.
    gold = singulars[-1]
    return _fact(gold, [*singulars[:-1], *plural_forms, *codes], text)


# ------------------------------------------------------------------ internet code
def internet_code(entry: FactbookEntry) -> Fact | None:
    text = fb_field(entry, "Communications", "Internet country code")
    if not text:
        return None
    codes = re.findall(r"\.([a-z]{2})\b", text.lower())
    if not codes:
        return None
    # The first code is the main one (France: ".fr" before its overseas regions); the
    # domain itself is the answer, so the UK's is ".uk" although its flag file is gb.
    first = codes[0]
    return _fact(f".{first}", [first], text)


# ------------------------------------------------------------------ independence
_MONTHS = (
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
)
_DATE = re.compile(rf"^(\d{{1,2}}) ({'|'.join(_MONTHS)}) (\d{{4}})\b\s*(\(([^()]*)\))?$")


def independence(entry: FactbookEntry) -> Fact | None:
    """Year of independence, only for a single plain date (`5 July 1962 (from France)`)."""
    text = fb_field(entry, "Government", "Independence")
    if not text or ";" in text:
        return None
    match = _DATE.match(text.strip())
    if not match:
        return None
    day, month, year = match.group(1), match.group(2), match.group(3)
    aside = match.group(5) or ""
    if aside and "from" not in aside:  # "(Niue became a self-governing state ...)"
        return None
    return _fact(year, [f"{day} {month} {year}", f"{month} {day}, {year}"], text)


# ------------------------------------------------------------------ official language
_LANGUAGE_SUFFIXES = ("ish", "ese", "ian", "an", "ic", "ch")


def _language_names(item: str) -> tuple[str, list[str], bool] | None:
    """(name, aliases, official?) of one `Languages` list item, or None for non-names."""
    head = re.split(r"\s+(?:[<>~]|less than |about )?\d", item)[0]  # drop "71.2%", "<0.1%"
    outer, asides = strip_parentheticals(head)
    rest_asides = re.findall(r"\(([^()]*)\)", item)
    tokens = [t.strip().lower() for a in rest_asides for t in re.split(r"[;,]", a)]
    # "official", "official national language", "de jure official", "state language";
    # not "official regional working language" or "official in Catalonia".
    official = any(
        re.match(r"^(de facto |de jure )?(official|state language)", t)
        and not re.search(r"regional|\bin\b|where", t)
        for t in tokens
    )
    outer = outer.strip(" ,;")
    # "other", "indigenous", "many local languages" are not names; "isiZulu" is.
    if not outer or outer.split()[0].islower() or len(outer.split()) > 4:
        return None
    names = [n.strip() for n in re.split(r" or | and |/", outer) if n.strip()]
    aliases = names[1:]
    for aside in rest_asides:
        known = re.search(r"also known as ([A-Z]\w+)", aside)
        if known:
            aliases.append(known.group(1))
    last = names[0].split()[-1]
    if " " in names[0] and last.endswith(_LANGUAGE_SUFFIXES):
        aliases.append(last)  # "Castilian Spanish" -> "Spanish"
    return names[0], aliases, official


def official_language(entry: FactbookEntry) -> Fact | None:
    """The official language(s); with several, any of them is accepted."""
    text = fb_field(entry, "People and Society", "Languages")
    if not text:
        return None
    main = re.split(r";?\s*note\b", text)[0]
    items = [_language_names(i) for i in split_top_level(main, ",;")]
    items = [i for i in items if i is not None]
    officials = [i for i in items if i[2]]
    if not officials:
        # "Japanese", "Italian": a single listed language is the language.
        if len(split_top_level(main, ",;")) == 1 and len(items) == 1:
            officials = items
        else:
            return None
    gold = officials[0][0]
    aliases = list(officials[0][1])
    for name, more, _ in officials[1:]:
        aliases.extend([name, *more])
    return _fact(gold, aliases, text)


# ------------------------------------------------------------------ continent
CONTINENT_BY_REGION = {
    "africa": "Africa",
    "antarctica": "Antarctica",
    "australia-oceania": "Oceania",
    "central-america-n-caribbean": "North America",
    "central-asia": "Asia",
    "east-n-southeast-asia": "Asia",
    "europe": "Europe",
    "middle-east": "Asia",
    "north-america": "North America",
    "south-america": "South America",
    "south-asia": "Asia",
}
# Places commonly put on two continents: (gold, also accepted), keyed by FIPS.
TRANSCONTINENTAL = {
    "rs": ("Europe", ["Asia"]),
    "tu": ("Asia", ["Europe"]),
    "kz": ("Asia", ["Europe"]),
    "gg": ("Asia", ["Europe"]),
    "aj": ("Asia", ["Europe"]),
    "am": ("Asia", ["Europe"]),
    "cy": ("Europe", ["Asia"]),
    "eg": ("Africa", ["Asia"]),
}


def continent(entry: FactbookEntry) -> Fact | None:
    if entry.fips in TRANSCONTINENTAL:
        gold, aliases = TRANSCONTINENTAL[entry.fips]
        return _fact(gold, aliases, entry.region)
    gold = CONTINENT_BY_REGION.get(entry.region)
    if gold is None:
        return None
    aliases = ["Australia", "Australia and Oceania"] if gold == "Oceania" else []
    return _fact(gold, aliases, entry.region)


# ------------------------------------------------------------------ anthem
def anthem(entry: FactbookEntry) -> Fact | None:
    """`"La Marseillaise" (The Song of Marseille)` -> La Marseillaise (+ translation)."""
    text = fb_field(entry, "Government", "National anthem(s)", "title")
    if not text or not text.startswith('"'):
        return None
    titles = [t.strip(" ,") for t in re.findall(r'"([^"]+)"', text)]
    if not titles or not titles[0]:
        return None
    translation = re.search(r"\(([^()]*)\)\s*$", text)
    aliases = titles[1:]
    generic = translation and translation.group(1).lower() in ("national anthem", "anthem")
    if translation and translation.group(1)[:1].isupper() and not generic:
        aliases.append(translation.group(1))
    return _fact(titles[0], aliases, text)


# ------------------------------------------------------------------ highest point
_MOUNTAIN_WORDS = r"\b(Mount|Mont|Monte|Mt\.|Pic|Pico|Cerro|Peak|Volcano|volcano|Range|Hill)\b"


PEAK_ALIASES = {"Mount McKinley": ["Denali"], "Mount Everest": ["Everest", "Sagarmatha"]}


def highest_point(entry: FactbookEntry) -> Fact | None:
    text = fb_field(entry, "Geography", "Elevation", "highest point")
    if not text:
        return None
    match = re.match(r"^(.*?),?\s+-?\d[\d,.]*\s*(m\b|$)", text)
    if not match:
        return None
    place = match.group(1).strip()
    outer, asides = strip_parentheticals(place)
    if (
        not outer[:1].isupper()
        or ";" in outer
        or " and " in outer
        or "unnamed" in outer.lower()
        or "," in outer
        or len(outer.split()) > 6  # a description ("1 km SW of ..."), not a name
        or {"was", "is", "height", "current"} & set(outer.split())
    ):
        return None
    aliases = [
        name.strip()
        for a in asides
        if a[:1].isupper() and "highest" not in a and "located" not in a
        for name in a.split(" or ")  # "(Pico or Pico Alto)"
    ]
    parts = [p.strip() for p in outer.split("/")]
    if len(parts) > 1:
        aliases.extend(parts)  # "Aoraki/Mount Cook"
    gold = outer
    if " on " in outer:  # "Margherita Peak on Mount Stanley": the peak is gold
        peak, where = outer.split(" on ", 1)
        # The mountain is accepted too, an island or region ("on Canary Islands") is not.
        mountain = [where] if re.search(_MOUNTAIN_WORDS, where) else []
        gold, aliases = peak, [outer, *mountain, *aliases]
    aliases.extend(PEAK_ALIASES.get(gold, []))
    for name in [gold, *aliases]:
        if name.startswith("Mt. "):
            aliases.append("Mount " + name[4:])
    return _fact(gold, aliases, text)


# ------------------------------------------------------------------ largest city
_CITY = re.compile(r"(\d[\d.,]*)( million)? ([^,;]+?)(?= \(|,|;|$)")


def largest_city(entry: FactbookEntry) -> Fact | None:
    """The most populous of the listed urban areas; only when two or more are listed."""
    text = fb_field(entry, "People and Society", "Major urban areas - population")
    if not text:
        return None
    cities = []
    for number, million, name in _CITY.findall(text):
        try:
            size = float(number.replace(",", "")) * (1e6 if million else 1)
        except ValueError:
            continue
        name = re.sub(r"\s*\([^()]*\)", "", name).strip()
        if name and name[0].isupper():
            cities.append((size, name))
    if len(cities) < 2:
        return None
    size, name = max(cities, key=lambda c: c[0])
    display = string.capwords(name.lower()) if name.isupper() else name
    parts = [p.strip() for p in re.split(r"[-/]", display) if p.strip()]
    aliases = parts if len(parts) > 1 and "/" in display else []
    return _fact(display, aliases, text)


# ------------------------------------------------------------------ registry
FACT_EXTRACTORS: dict[str, Callable[[FactbookEntry], Fact | None]] = {
    "capital": capital,
    "currency": currency,
    "internet_code": internet_code,
    "independence": independence,
    "official_language": official_language,
    "continent": continent,
    "anthem": anthem,
    "highest_point": highest_point,
    "largest_city": largest_city,
}


def extract_facts(entry: FactbookEntry) -> dict[str, Fact]:
    """All facts that could be read cleanly, keyed by question type."""
    facts = {}
    for kind, extract in FACT_EXTRACTORS.items():
        fact = extract(entry)
        if fact is not None and fact.answer:
            facts[kind] = fact
    return facts
