"""What a sample file holds: counts by category, source, tools, split; one example."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

from rich.columns import Columns
from rich.console import Console
from rich.table import Table

from mmsr.data.images import image_bytes, image_info
from mmsr.data.io import iter_samples, tracked
from mmsr.data.record import Sample

UNSET = "(unset)"  # count key for samples without a category / tools / split


def _example(sample: Sample, base_dir: Path) -> dict[str, Any]:
    example: dict[str, Any] = {
        "id": sample.id,
        "question": sample.question,
        "answer": sample.answer,
        "aliases": sample.aliases,
        "n_images": len(sample.images),
        "image_width": None,  # first image, pixels
        "image_height": None,
        "image_format": None,
    }
    if sample.images:
        info = image_info(image_bytes(sample.images[0], base_dir))
        example.update(image_width=info.width, image_height=info.height, image_format=info.format)
    return example


def inspect_file(path: Path, console: Console | None = None) -> dict[str, Any]:
    """A JSON-ready summary of a `.jsonl` / `.parquet` sample file (reads it once, streaming).

    Raises DataError naming the row if any row or image is bad: inspecting is also checking.
    A progress bar goes to `console` when one is given.
    """
    path = Path(path)
    counts: dict[str, Counter] = {
        key: Counter() for key in ("category", "source", "tools", "split", "images")
    }
    total, example = 0, None
    for sample in tracked(iter_samples(path), path, console, verb="checking"):
        total += 1
        counts["category"][sample.category or UNSET] += 1
        counts["source"][sample.source or UNSET] += 1
        counts["tools"][sample.tools or UNSET] += 1
        counts["split"][sample.split or UNSET] += 1
        counts["images"][str(len(sample.images))] += 1
        if example is None:
            example = _example(sample, path.parent)
    return {
        "file": str(path),
        "format": path.suffix.lstrip(".").lower(),
        "total": total,
        "by_category": dict(counts["category"].most_common()),
        "by_source": dict(counts["source"].most_common()),
        "by_tools": dict(counts["tools"].most_common()),
        "by_split": dict(counts["split"].most_common()),
        "images_per_sample": dict(sorted(counts["images"].items(), key=lambda kv: int(kv[0]))),
        "example": example,
    }


def _count_table(title: str, header: str, counts: dict[str, int], total: int) -> Table:
    table = Table(title=title, title_justify="left")
    table.add_column(header)
    table.add_column("samples", justify="right")
    table.add_column("share", justify="right")
    for key, n in counts.items():
        table.add_row(key, str(n), f"{n / total:.0%}" if total else "-")
    return table


def render_inspection(report: dict[str, Any], console: Console) -> None:
    """Print `inspect_file`'s report as rich tables."""
    total = report["total"]
    console.print(f"[bold]{report['file']}[/] ({report['format']}): {total} samples")
    tables = [
        _count_table(title, header, report[key], total)
        for title, header, key in (
            ("by category", "category", "by_category"),
            ("by source", "source", "by_source"),
            ("by tools needed", "tools", "by_tools"),
            ("by split", "split", "by_split"),
            ("images per sample", "images", "images_per_sample"),
        )
    ]
    console.print(Columns(tables))
    example = report["example"]
    if example is None:
        return
    table = Table(title="example", title_justify="left", show_header=False)
    table.add_column("field", style="bold")
    table.add_column("value", overflow="fold")
    for field in ("id", "question", "answer"):
        table.add_row(field, str(example[field]))
    table.add_row("aliases", ", ".join(example["aliases"]) or "-")
    if example["image_width"] is None:
        table.add_row("image", "none")
    else:
        size = f"{example['image_width']}×{example['image_height']} px {example['image_format']}"
        table.add_row("image", f"{size} (1 of {example['n_images']})")
    console.print(table)
