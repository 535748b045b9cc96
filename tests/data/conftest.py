"""Shared inputs of the mmsr.data tests: the real FVQA fixture and samples made from scratch."""

from __future__ import annotations

import io
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from mmsr.data.record import Sample, SampleImage

# 5 real rows of MMSearch-R1's FVQA training parquet (no data_id / category columns),
# copied from shared/fixtures so a fresh clone has it.
FIXTURE = Path(__file__).parent / "fvqa_mini.parquet"


@pytest.fixture
def fixture_path() -> Path:
    return FIXTURE


def _png(color: tuple[int, int, int], size: tuple[int, int] = (24, 16)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture
def scratch_samples() -> list[Sample]:
    """Samples built in code (no prompt, no FVQA bookkeeping), as mmsr.world makes them."""
    return [
        Sample(
            id="world/capital/fr",
            question="What is the capital of the country whose flag this is?",
            answer="Paris",
            images=[SampleImage(bytes=_png((0, 0, 255)))],
            aliases=["Paris, France"],
            category="search_required",
            tools="both",
            source="world/capital",
            tags=["geography", "capital"],
            split="train",
        ),
        Sample(
            id="world/flag/jp",
            question="Which country's flag is this?",
            answer="Japan",
            images=[SampleImage(bytes=_png((255, 255, 255))), SampleImage(bytes=_png((9, 9, 9)))],
            category="search_free",
            tools="none",
            source="world/flag",
            split="test",
        ),
    ]


@pytest.fixture
def fixture_variant(tmp_path: Path):
    """`make(edit)`: the fixture with its rows changed by `edit(rows)` (in place), as a file."""

    def make(edit, name: str = "variant.parquet") -> Path:
        table = pq.read_table(FIXTURE)
        rows = table.to_pylist()
        edit(rows)
        same_columns = all(list(row) == table.schema.names for row in rows)
        # Keep the fixture's schema unless the edit added columns (then infer one).
        out = pa.Table.from_pylist(rows, schema=table.schema if same_columns else None)
        path = tmp_path / name
        pq.write_table(out, path)
        return path

    return make
