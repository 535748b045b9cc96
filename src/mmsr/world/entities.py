"""World entities: factbook places joined with their flags, with splits and familiarity.

Two partitions of the entities, both deterministic for a seed:

- `split` (train / val / test, 70/10/20): every question about an entity lands in the
  entity's split, so no test entity (nor its flag) is ever seen in training.
- `familiar` (about half): the more prominent half by population rank. The nano
  model's vision tower is later trained to recognise only familiar flags, so for
  unfamiliar ones the policy must learn to call image search. The split is stratified
  by familiarity, so every split holds both kinds.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

from mmsr.world.factbook import REGION_NAMES, FactbookEntry, internet_codes, population
from mmsr.world.facts import CONTINENT_BY_REGION, Fact, extract_facts
from mmsr.world.flags import flag_code
from mmsr.world.names import entity_names

SPLIT_FRACTIONS = (("train", 0.7), ("val", 0.1), ("test", 0.2))
SPLITS = tuple(name for name, _ in SPLIT_FRACTIONS)


@dataclass
class Entity:
    id: str  # ISO alpha-2 of its flag ("fr"); "<iso2>-<fips>" when places share one
    fips: str  # factbook key, e.g. "fr"
    iso2: str  # flag file code (the first internet country code, .uk -> gb)
    name: str  # short display name, the gold answer of flag questions
    aliases: list[str]  # other accepted names
    region: str  # factbook region, e.g. "Europe", "Central America and the Caribbean"
    continent: str  # e.g. "North America" for the Caribbean
    population: int  # people; 0 when uninhabited or not a plain number
    prominence: int  # 1 = most populous; ties broken by id
    familiar: bool  # in the more prominent half (see module docstring)
    split: str  # "train" / "val" / "test"
    flag: str  # relative asset path, "flags/fr.png"
    lookalikes: list[str] = field(default_factory=list)  # other ids with a same-looking flag
    asks_flag: bool = True  # False: a look-alike group's other member gets the questions
    facts: dict[str, Fact] = field(default_factory=dict)  # question type -> fact

    def to_dict(self) -> dict[str, Any]:
        out = {k: v for k, v in self.__dict__.items() if k != "facts"}
        out["facts"] = {k: f.to_dict() for k, f in self.facts.items()}
        return out

    @classmethod
    def from_dict(cls, row: dict[str, Any]) -> Entity:
        row = dict(row)
        row["facts"] = {k: Fact(**f) for k, f in row.get("facts", {}).items()}
        return cls(**row)


def stable_hash(*parts: object) -> int:
    """A seedable order that does not depend on Python's randomised str hash."""
    digest = hashlib.sha256(":".join(str(p) for p in parts).encode()).digest()
    return int.from_bytes(digest[:8], "big")


def build_entities(
    entries: list[FactbookEntry], flag_codes: set[str], lookalike_groups: list[list[str]], seed: int
) -> list[Entity]:
    """Entities for every factbook entry whose flag is in `flag_codes`, sorted by id."""
    joined = []
    for entry in entries:
        code = flag_code(internet_codes(entry))
        if code is not None and code in flag_codes:
            joined.append((entry, code))
    code_counts: dict[str, int] = {}
    for _, code in joined:
        code_counts[code] = code_counts.get(code, 0) + 1

    entities = []
    for entry, code in joined:
        name, aliases = entity_names(entry)
        entity_id = code if code_counts[code] == 1 else f"{code}-{entry.fips}"
        entities.append(
            Entity(
                id=entity_id,
                fips=entry.fips,
                iso2=code,
                name=name,
                aliases=aliases,
                region=REGION_NAMES.get(entry.region, entry.region),
                continent=CONTINENT_BY_REGION.get(entry.region, ""),
                population=population(entry),
                prominence=0,
                familiar=False,
                split="",
                flag=f"flags/{code}.png",
                facts=extract_facts(entry),
            )
        )
    entities.sort(key=lambda e: e.id)
    _mark_lookalikes(entities, lookalike_groups)
    _assign_familiar(entities)
    _assign_splits(entities, seed)
    return entities


def _mark_lookalikes(entities: list[Entity], groups: list[list[str]]) -> None:
    """Only the most populous member of a same-looking-flag group keeps its questions.

    A question shows the flag; if the flag also belongs to another place the question
    has two right answers. Keeping one member (always the sovereign state here: Norway,
    France, Australia, the UK, Indonesia, Chad, the West Bank) keeps every answer unique.
    """
    group_of = {code: tuple(g) for g in groups for code in g}
    members: dict[tuple[str, ...], list[Entity]] = {}
    for entity in entities:
        key = group_of.get(entity.iso2, (entity.iso2,))
        members.setdefault(key, []).append(entity)
    for group in members.values():
        if len(group) < 2:
            continue
        keeper = max(group, key=lambda e: (e.population, e.id))
        for entity in group:
            entity.lookalikes = sorted(e.id for e in group if e is not entity)
            entity.asks_flag = entity is keeper


def _assign_familiar(entities: list[Entity]) -> None:
    ranked = sorted(entities, key=lambda e: (-e.population, e.id))
    half = (len(ranked) + 1) // 2
    for rank, entity in enumerate(ranked, start=1):
        entity.prominence = rank
        entity.familiar = rank <= half


def _assign_splits(entities: list[Entity], seed: int) -> None:
    """70/10/20 by entity, separately within familiar and unfamiliar entities."""
    for familiar in (True, False):
        stratum = [e for e in entities if e.familiar == familiar]
        stratum.sort(key=lambda e: stable_hash(seed, "split", e.id))
        n = len(stratum)
        bounds, acc = [], 0.0
        for _, fraction in SPLIT_FRACTIONS:
            acc += fraction
            bounds.append(round(acc * n))
        for index, entity in enumerate(stratum):
            entity.split = next(
                name
                for (name, _), bound in zip(SPLIT_FRACTIONS, bounds, strict=True)
                if index < bound
            )
