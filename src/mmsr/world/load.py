"""Loading a built world (by default the one shipped in the package)."""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mmsr.data.record import Sample
from mmsr.world import store
from mmsr.world.entities import Entity
from mmsr.world.pages import Page


@dataclass
class World:
    root: Path  # the assets folder; relative asset paths resolve against it
    manifest: dict[str, Any]
    entities: list[Entity]
    pages: list[Page]
    questions: list[Sample]  # image paths are absolute
    _by_id: dict[str, Entity] = field(default_factory=dict, repr=False)
    _by_fips: dict[str, Entity] = field(default_factory=dict, repr=False)
    _by_url: dict[str, Page] = field(default_factory=dict, repr=False)
    _pages_of: dict[str, list[Page]] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        self._by_id = {e.id: e for e in self.entities}
        self._by_fips = {e.fips: e for e in self.entities}
        self._by_url = {p.url: p for p in self.pages}
        for page in self.pages:
            self._pages_of.setdefault(page.entity, []).append(page)

    def entity(self, entity_id: str) -> Entity:
        """An entity by id ("fr"); ids are ISO codes, see `entity_by_fips` for FIPS."""
        try:
            return self._by_id[entity_id]
        except KeyError:
            raise KeyError(f"no entity {entity_id!r} in the world at {self.root}") from None

    def entity_by_fips(self, fips: str) -> Entity:
        """An entity by factbook code: "gm" is Germany here but The Gambia's ISO id."""
        try:
            return self._by_fips[fips]
        except KeyError:
            raise KeyError(f"no entity with FIPS code {fips!r} in {self.root}") from None

    def page(self, url: str) -> Page:
        try:
            return self._by_url[url]
        except KeyError:
            raise KeyError(f"no page {url!r} in the world at {self.root}") from None

    def pages_of(self, entity_id: str) -> list[Page]:
        return list(self._pages_of.get(entity_id, []))

    def asset(self, relative: str) -> Path:
        """Absolute path of an asset such as a page thumbnail (`flags/fr.png`)."""
        return self.root / relative

    def flag_path(self, entity_id: str) -> Path:
        return self.asset(self.entity(entity_id).flag)

    def questions_in(self, split: str) -> list[Sample]:
        return [q for q in self.questions if q.split == split]


def load_world(root: Path | None = None) -> World:
    """The world at `root` (default: the package's assets), loaded once per folder."""
    root = Path(root) if root is not None else store.default_root()
    return _load_cached(root.resolve())


@functools.lru_cache(maxsize=4)
def _load_cached(root: Path) -> World:
    manifest_path = root / store.MANIFEST
    if not manifest_path.is_file():
        raise FileNotFoundError(
            f"no built world at {root} (missing {store.MANIFEST}); run `mmsr world build`"
        )
    manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    entity_rows = json.loads((root / store.ENTITIES).read_text(encoding="utf-8"))
    entities = [Entity.from_dict(row) for row in entity_rows]
    pages = [Page(**row) for row in store.read_jsonl_gz(root / store.PAGES)]
    questions = [store.row_to_sample(r, root) for r in store.read_jsonl_gz(root / store.QUESTIONS)]
    return World(root=root, manifest=manifest, entities=entities, pages=pages, questions=questions)
