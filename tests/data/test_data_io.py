"""Sample IO: the FVQA fixture round-trips identically, scratch samples survive, bad rows fail."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from mmsr.data.errors import DataError
from mmsr.data.fvqa import question_from_prompt
from mmsr.data.io import convert, read_samples, write_samples
from mmsr.data.jsonl import images_dir
from mmsr.data.record import SampleImage


def _rows(path: Path) -> list[dict]:
    return pq.read_table(path).to_pylist()


# ------------------------------------------------------------------ the real fixture
def test_fixture_maps_onto_sample_fields(fixture_path):
    samples = read_samples(fixture_path)
    assert len(samples) == 5
    first = samples[0]
    assert first.id == "fvqa_mini-0"  # no data_id column: file stem + row index
    assert first.question == "What is the country of origin of this food?"
    assert first.answer == "Spain"
    assert first.aliases == ["Kingdom of Spain", "ESP", "\U0001f1ea\U0001f1f8", "ES", "Spain"]
    assert first.source == "mmsearch_r1/infoseek_train_split"
    assert first.category is None
    assert len(first.images) == 1 and first.images[0].bytes[:2] == b"\xff\xd8"  # JPEG
    assert first.extra["image_urls"] is None
    assert [s.id for s in samples] == [f"fvqa_mini-{i}" for i in range(5)]


def test_fixture_parquet_round_trip_is_identical(fixture_path, tmp_path):
    out = tmp_path / "copy.parquet"
    assert write_samples(read_samples(fixture_path), out) == 5
    assert _rows(out) == _rows(fixture_path)
    original, written = pq.read_schema(fixture_path), pq.read_schema(out)
    assert written.names == original.names
    # Same types, null columns included; only the stale pandas metadata blob is dropped.
    assert written.equals(original, check_metadata=False)


def test_fixture_round_trips_through_jsonl(fixture_path, tmp_path):
    jsonl = tmp_path / "a" / "mini.jsonl"
    assert convert(fixture_path, jsonl) == 5
    assert sorted(p.name for p in images_dir(jsonl).iterdir()) == [
        f"fvqa_mini-{i}_0.jpg" for i in range(5)
    ]
    first = json.loads(jsonl.read_text(encoding="utf-8").splitlines()[0])
    assert first["images"] == [{"file": "mini_images/fvqa_mini-0_0.jpg", "path": None}]

    # Without a data_id column ids come from the file stem, so the parquet keeps its name.
    back = tmp_path / "c" / "fvqa_mini.parquet"
    convert(jsonl, back)  # parquet -> JSONL -> parquet
    assert _rows(back) == _rows(fixture_path)
    assert pq.read_schema(back).equals(pq.read_schema(fixture_path), check_metadata=False)

    again = tmp_path / "b" / "mini.jsonl"
    convert(back, again)  # JSONL -> parquet -> JSONL
    assert again.read_text(encoding="utf-8") == jsonl.read_text(encoding="utf-8")
    assert read_samples(again) == read_samples(jsonl)


# ------------------------------------------------------------------ samples made in code
@pytest.mark.parametrize("suffix", [".parquet", ".jsonl"])
def test_scratch_samples_round_trip(scratch_samples, tmp_path, suffix):
    path = tmp_path / f"scratch{suffix}"
    write_samples(scratch_samples, path)
    back = read_samples(path)
    for sample, read in zip(scratch_samples, back, strict=True):
        for field in ("id", "question", "answer", "images", "aliases", "category", "tools"):
            assert getattr(read, field) == getattr(sample, field), field
        assert (read.source, read.tags, read.split) == (sample.source, sample.tags, sample.split)


def test_scratch_samples_are_written_in_fvqa_layout(scratch_samples, tmp_path):
    path = tmp_path / "scratch.parquet"
    write_samples(scratch_samples, path)
    assert pq.read_schema(path).names == [
        "prompt", "images", "reward_model", "data_source",
        "data_id", "category", "tools", "tags", "split",
    ]  # fmt: skip
    row = _rows(path)[0]
    assert row["prompt"] == [{"content": scratch_samples[0].question, "role": "user"}]
    assert row["reward_model"] == {
        "candidate_answers": '["Paris, France"]',  # a JSON string, as in MMSearch-R1
        "ground_truth": "Paris",
        "style": "rule",
    }
    assert (row["data_id"], row["category"]) == ("world/capital/fr", "search_required")
    assert row["images"][0]["path"] is None and row["images"][0]["bytes"][:4] == b"\x89PNG"


def test_changed_question_rebuilds_prompt(fixture_path, tmp_path):
    samples = read_samples(fixture_path)
    samples[1].question = "Who built this?"
    samples[1].category = "search_required"
    out = tmp_path / "edited.parquet"
    write_samples(samples, out)
    rows = _rows(out)
    assert rows[1]["prompt"] == [{"content": "Who built this?", "role": "user"}]
    assert rows[0]["prompt"] == _rows(fixture_path)[0]["prompt"]
    # A category set on a file without that column adds it (null for the other rows).
    assert [r["category"] for r in rows] == [None, "search_required", None, None, None]


def test_question_strips_image_placeholders():
    prompt = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "<image>\nWhat is this garden named after?"},
    ]
    assert question_from_prompt(prompt) == "What is this garden named after?"


# ------------------------------------------------------------------ errors name file and row
def test_corrupt_image_bytes_name_the_row(fixture_variant):
    def truncate(rows):  # a JPEG cut in half: headers still parse, pixels do not
        image = rows[2]["images"][0]
        image["bytes"] = image["bytes"][: len(image["bytes"]) // 2]

    path = fixture_variant(truncate)
    with pytest.raises(DataError, match=r"variant\.parquet: row 2: image 0: undecodable") as err:
        read_samples(path)
    assert (err.value.row, err.value.sample_id) == (2, None)
    assert len(read_samples(path, check_images=False)) == 5


def test_undecodable_bytes_in_jsonl_and_missing_file(fixture_path, tmp_path):
    jsonl = tmp_path / "mini.jsonl"
    convert(fixture_path, jsonl)
    (images_dir(jsonl) / "fvqa_mini-3_0.jpg").write_bytes(b"not an image")
    with pytest.raises(DataError, match=r"mini\.jsonl: row 3 \(id 'fvqa_mini-3'\): image 0"):
        read_samples(jsonl)
    (images_dir(jsonl) / "fvqa_mini-3_0.jpg").unlink()
    with pytest.raises(DataError, match=r"row 3 \(id 'fvqa_mini-3'\): image 0: file not found"):
        read_samples(jsonl)


def _no_answer(rows):
    rows[1]["reward_model"]["ground_truth"] = None


def _no_user_message(rows):
    rows[4]["prompt"] = []


def _bad_candidates_json(rows):
    rows[3]["reward_model"]["candidate_answers"] = '["Paris", '


def _bad_category(rows):
    for row in rows:
        row["category"] = "search_free"
    rows[2]["category"] = "maybe"


def _no_prompt_with_data_id(rows):
    for i, row in enumerate(rows):
        row["data_id"] = f"q{i}"
    rows[0]["prompt"] = None


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (_no_answer, r"row 1: missing answer"),
        (_no_user_message, r"row 4: missing question"),
        (_bad_candidates_json, r"row 3: bad candidate_answers JSON"),
        (_bad_category, r"row 2: bad category 'maybe'"),
        (_no_prompt_with_data_id, r"row 0 \(id 'q0'\): missing question"),
    ],
)
def test_malformed_parquet_rows_name_the_row(fixture_variant, edit, message):
    path = fixture_variant(edit)
    with pytest.raises(DataError, match=r"variant\.parquet: " + message):
        read_samples(path)


@pytest.mark.parametrize(
    ("line", "sample_id", "reason"),
    [
        ('{"id": "a", "question": "Q?"}', "a", "missing answer"),
        ('{"id": "a", "question": "Q?", "answer": "A", "hue": 1}', "a", "unknown keys ['hue']"),
        ('{"id": "a", "question": "Q?", "answer": "A"', None, "line 3 is not JSON"),
        ('{"id": "a", "question": "Q?", "answer": "A", "tools": "web"}', "a", "bad tools 'web'"),
    ],
)
def test_malformed_jsonl_rows_name_the_row(tmp_path, line, sample_id, reason):
    path = tmp_path / "bad.jsonl"
    good = '{"id": "ok", "question": "Fine?", "answer": "yes"}'
    path.write_text(good + "\n\n" + line + "\n", encoding="utf-8")  # blank lines are skipped
    with pytest.raises(DataError) as err:
        read_samples(path)
    assert (err.value.path, err.value.row, err.value.sample_id) == (path, 1, sample_id)
    assert str(err.value).startswith(f"{path}: row 1")
    assert reason in err.value.reason


def test_writing_refuses_bad_samples_and_suffixes(scratch_samples, tmp_path):
    scratch_samples[1].answer = ""
    with pytest.raises(DataError, match=r"out\.parquet: row 1 \(id 'world/flag/jp'\): missing"):
        write_samples(scratch_samples, tmp_path / "out.parquet")
    with pytest.raises(DataError, match=r"unsupported file type '\.csv'"):
        write_samples(scratch_samples, tmp_path / "out.csv")
    with pytest.raises(FileNotFoundError, match="no such file"):
        read_samples(tmp_path / "absent.parquet")
    (tmp_path / "junk.parquet").write_bytes(b"PAR1 not really")
    with pytest.raises(DataError, match=r"junk\.parquet: cannot read as parquet"):
        read_samples(tmp_path / "junk.parquet")


def test_path_only_images_resolve_beside_the_file(scratch_samples, tmp_path):
    (tmp_path / "flag.png").write_bytes(scratch_samples[0].images[0].bytes)
    sample = scratch_samples[0]
    sample.images = [SampleImage(path="flag.png")]  # relative to the data file's folder
    for name in ("paths.parquet", "paths.jsonl"):
        write_samples([sample], tmp_path / name)
        assert read_samples(tmp_path / name)[0].images == [SampleImage(path="flag.png")]
    (tmp_path / "flag.png").unlink()
    with pytest.raises(DataError, match=r"paths\.parquet: row 0 .*image 0: image file not found"):
        read_samples(tmp_path / "paths.parquet")
