"""`inspect_file` counts, and the `mmsr data inspect / convert` commands end to end."""

from __future__ import annotations

import json

import pyarrow.parquet as pq
from typer.testing import CliRunner

from mmsr.cli import app
from mmsr.data.inspect import UNSET, inspect_file
from mmsr.data.io import write_samples

runner = CliRunner()


def test_inspect_counts_scratch_samples(scratch_samples, tmp_path):
    path = tmp_path / "world.jsonl"
    write_samples(scratch_samples, path)
    report = inspect_file(path)
    assert report["total"] == 2
    assert report["by_category"] == {"search_required": 1, "search_free": 1}
    assert report["by_tools"] == {"both": 1, "none": 1}
    assert report["by_split"] == {"train": 1, "test": 1}
    assert report["images_per_sample"] == {"1": 1, "2": 1}
    example = report["example"]
    assert (example["id"], example["answer"], example["aliases"]) == (
        "world/capital/fr",
        "Paris",
        ["Paris, France"],
    )
    assert (example["image_width"], example["image_height"], example["image_format"]) == (
        24,
        16,
        "PNG",
    )


def test_cli_inspect_fixture_json(fixture_path):
    result = runner.invoke(app, ["data", "inspect", str(fixture_path), "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["total"] == 5
    assert report["by_category"] == {UNSET: 5}
    assert report["by_source"] == {"mmsearch_r1/infoseek_train_split": 5}
    assert report["example"]["answer"] == "Spain"
    assert (report["example"]["image_width"], report["example"]["image_height"]) == (384, 512)


def test_cli_inspect_fixture_tables(fixture_path):
    result = runner.invoke(app, ["data", "inspect", str(fixture_path)])
    assert result.exit_code == 0, result.output
    assert "5 samples" in result.output
    assert "384×512" in result.output and "Spain" in result.output


def test_cli_convert_round_trip(fixture_path, tmp_path):
    jsonl = tmp_path / "mini.jsonl"
    result = runner.invoke(app, ["data", "convert", str(fixture_path), str(jsonl)])
    assert result.exit_code == 0, result.output
    assert "wrote 5 samples" in result.output
    back = tmp_path / "out" / "fvqa_mini.parquet"
    result = runner.invoke(app, ["data", "convert", str(jsonl), str(back)])
    assert result.exit_code == 0, result.output
    assert pq.read_table(back).to_pylist() == pq.read_table(fixture_path).to_pylist()


def test_cli_reports_the_bad_row(fixture_variant):
    def corrupt(rows):
        rows[3]["images"][0]["bytes"] = b"\x00" * 64

    path = fixture_variant(corrupt)
    result = runner.invoke(app, ["data", "inspect", str(path)])
    assert result.exit_code == 2
    message = " ".join(result.output.split())  # rich wraps long lines
    assert "variant.parquet: row 3: image 0: undecodable image (64 bytes)" in message
