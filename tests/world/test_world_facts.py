"""Cleaning factbook HTML and reading short answers out of it (hand-made entries)."""

from __future__ import annotations

from mmsr.world import facts
from mmsr.world.factbook import FactbookEntry, field, population
from mmsr.world.names import entity_names
from mmsr.world.text import clean_html, split_top_level, strip_parentheticals


def _entry(region: str = "europe", fips: str = "zz", **sections) -> FactbookEntry:
    data = {
        section.replace("_", " "): {
            k: {"text": v} if isinstance(v, str) else v for k, v in f.items()
        }
        for section, f in sections.items()
    }
    return FactbookEntry(fips=fips, region=region, data=data)


def test_clean_html_removes_tags_and_entities():
    raw = "<strong>note:</strong> Bras&iacute;lia&nbsp; is&amp;nbsp;new<br><br>second &lt;0.1%"
    assert clean_html(raw) == "note: Brasília is new\nsecond <0.1%"
    assert clean_html(raw, newlines=False) == "note: Brasília is new; second <0.1%"
    assert clean_html("&ldquo;Het Wilhelmus&rdquo;") == '"Het Wilhelmus"'


def test_split_and_parentheticals():
    assert split_top_level("A (x, y), B; C") == ["A (x, y)", "B", "C"]
    assert strip_parentheticals("Tripoli (Tarabulus)") == ("Tripoli", ["Tarabulus"])


def test_capital_variants():
    several = _entry(
        Government={"Capital": {"name": {"text": "Pretoria (administrative capital); Cape Town"}}}
    )
    fact = facts.capital(several)
    assert fact.answer == "Pretoria" and "Cape Town" in fact.aliases
    accented = _entry(Government={"Capital": {"name": {"text": "Bras&iacute;lia"}}})
    assert facts.capital(accented).answer == "Brasília"
    assert "Brasilia" in facts.capital(accented).aliases
    noted = _entry(Government={"Capital": {"name": {"text": "Malabo; note - Malabo is on Bioko"}}})
    assert facts.capital(noted).answer == "Malabo"
    none = _entry(Government={"Capital": {"name": {"text": "no official capital; offices"}}})
    assert facts.capital(none) is None


def _currency(text: str) -> facts.Fact | None:
    return facts.currency(_entry(Economy={"Exchange rates": {"Currency": {"text": text}}}))


def test_currency_names():
    euro = _currency("euros (EUR) per US dollar -")
    assert (euro.answer, euro.aliases) == ("euro", ["euros", "EUR"])
    assert _currency("koruny (CZK) per US dollar -").answer == "koruna"
    cfa = _currency("Cooperation Financiere en Afrique Centrale francs (XAF) per US dollar -")
    assert cfa.answer == "Central African CFA franc" and "XAF" in cfa.aliases
    tuvalu = _currency("Tuvaluan dollars or Australian dollars (AUD) per US dollar -")
    assert tuvalu.answer == "Australian dollar" and "Tuvaluan dollar" in tuvalu.aliases
    assert _currency("baht per US dollar -").answer == "baht"
    assert _currency("no currency listed") is None


def test_independence_only_plain_dates():
    def year(text):
        fact = facts.independence(_entry(Government={"Independence": text}))
        return fact and fact.answer

    assert year("5 July 1962 (from France)") == "1962"
    assert year("26 July 1847") == "1847"
    assert year("none (territory of the US)") is None
    assert year("1 May 1990 (declared); 2 June 1991 (from X)") is None


def test_official_language():
    def language(text):
        entry = _entry(People_and_Society={"Languages": text})
        fact = facts.official_language(entry)
        return fact and (fact.answer, fact.aliases)

    assert language("French (official) 100%, Breton, Basque") == ("French", [])
    assert language("Kirundi (official), French (official), Swahili") == ("Kirundi", ["French"])
    assert language("Bangla 98.8% (official, also known as Bengali), other 1.2%") == (
        "Bangla",
        ["Bengali"],
    )
    assert language("Japanese") == ("Japanese", [])
    assert language("Korean, English") is None
    nested = {"Languages": {"Languages": {"text": "Greek (official) 99%"}}}
    assert facts.official_language(_entry(People_and_Society=nested)).answer == "Greek"


def test_highest_point_and_anthem():
    def peak(text):
        entry = _entry(Geography={"Elevation": {"highest point": {"text": text}}})
        fact = facts.highest_point(entry)
        return fact and fact.answer

    assert peak("Mont Blanc 4,810") == "Mont Blanc"
    assert peak("Margherita Peak on Mount Stanley 5,110 m") == "Margherita Peak"
    assert peak("unnamed elevation 675 m; located 2.5 km southeast") is None
    anthem = facts.anthem(
        _entry(
            Government={"National anthem(s)": {"title": {"text": '"La Marseillaise" (The Song)'}}}
        )
    )
    assert (anthem.answer, anthem.aliases) == ("La Marseillaise", ["The Song"])


def test_continent_and_transcontinental():
    assert facts.continent(_entry(region="central-america-n-caribbean")).answer == "North America"
    russia = facts.continent(_entry(region="central-asia", fips="rs"))
    assert (russia.answer, russia.aliases) == ("Europe", ["Asia"])


def test_names_and_population():
    entry = _entry(
        fips="iv",
        Government={
            "Country name": {
                "conventional long form": {"text": "Republic of C&ocirc;te d'Ivoire"},
                "conventional short form": {"text": "C&ocirc;te d'Ivoire"},
                "local short form": {"text": "none"},
            }
        },
        People_and_Society={"Population": {"total": {"text": "31,719,275 (2025 est.)"}}},
    )
    name, aliases = entity_names(entry)
    assert name == "Côte d'Ivoire"
    assert {"Cote d'Ivoire", "Ivory Coast", "Republic of Côte d'Ivoire"} <= set(aliases)
    assert "none" not in aliases and name not in aliases
    assert population(entry) == 31_719_275
    assert field(entry, "Government", "Country name", "local short form") == "none"
