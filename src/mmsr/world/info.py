"""`mmsr world info`: what the world holds. The JSON form is a contract (DESIGN.md)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from mmsr.world.entities import SPLITS
from mmsr.world.load import load_world


def world_info(root: Path | None = None) -> dict[str, Any]:
    """Counts of entities, pages and questions by type, split, category and familiarity."""
    world = load_world(root)
    entities, questions = world.entities, world.questions
    with_flags = [e for e in entities if world.asset(e.flag).is_file()]
    assets_bytes = sum(p.stat().st_size for p in world.root.rglob("*") if p.is_file())
    return {
        "root": str(world.root),
        "seed": world.manifest.get("seed"),
        "built": world.manifest.get("built"),
        "sources": world.manifest.get("sources", {}),
        "entities": {
            "total": len(entities),
            "with_flags": len(with_flags),
            "familiar": sum(e.familiar for e in entities),
            "unfamiliar": sum(not e.familiar for e in entities),
            "asked_about": sum(e.asks_flag for e in entities),
            "by_split": _by_split(Counter(e.split for e in entities)),
            "familiar_by_split": _by_split(Counter(e.split for e in entities if e.familiar)),
            "lookalike_groups": world.manifest.get("lookalike_groups", []),
        },
        "pages": {
            "total": len(world.pages),
            "by_section": dict(sorted(Counter(p.id.split("/")[-1] for p in world.pages).items())),
        },
        "questions": {
            "total": len(questions),
            "types": len({q.extra.get("qtype") for q in questions}),
            "by_type": dict(sorted(Counter(q.extra.get("qtype") for q in questions).items())),
            "by_split": _by_split(Counter(q.split for q in questions)),
            "by_category": dict(sorted(Counter(q.category for q in questions).items())),
            "by_familiarity": {
                "familiar": sum("familiar" in q.tags for q in questions),
                "unfamiliar": sum("unfamiliar" in q.tags for q in questions),
            },
        },
        "assets_bytes": assets_bytes,
    }


def _by_split(counts: Counter) -> dict[str, int]:
    return {split: counts.get(split, 0) for split in SPLITS}


def render_info(info: dict[str, Any], console: Console) -> None:
    ent, qs = info["entities"], info["questions"]
    console.print(f"[bold]world[/] at {info['root']}  (seed {info['seed']}, built {info['built']})")
    console.print(
        f"entities: {ent['total']} ({ent['with_flags']} with flags, {ent['familiar']} familiar, "
        f"{ent['unfamiliar']} unfamiliar, {ent['asked_about']} asked about); "
        f"pages: {info['pages']['total']}; questions: {qs['total']} over {qs['types']} types; "
        f"assets: {info['assets_bytes'] / 1e6:.1f} MB"
    )
    splits = Table(title="by split")
    for column in ("split", "entities", "familiar entities", "questions"):
        splits.add_column(column, justify="right" if column != "split" else "left")
    for split in SPLITS:
        splits.add_row(
            split,
            str(ent["by_split"][split]),
            str(ent["familiar_by_split"][split]),
            str(qs["by_split"][split]),
        )
    console.print(splits)
    types = Table(title="questions by type")
    types.add_column("type")
    types.add_column("questions", justify="right")
    for qtype, n in qs["by_type"].items():
        types.add_row(qtype, str(n))
    console.print(types)
    console.print(
        "categories (prior): "
        + ", ".join(f"{k}={v}" for k, v in qs["by_category"].items())
        + "; look-alike flag groups: "
        + "; ".join("/".join(g) for g in ent["lookalike_groups"])
    )
