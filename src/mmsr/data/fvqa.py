"""MMSearch-R1's FVQA parquet layout <-> `Sample`.

One row of an FVQA file (as released with MMSearch-R1):

    prompt        list<struct<content, role>>   chat messages; the last user message is the question
    images        list<struct<bytes, path>>     encoded images (the HF `datasets` image struct)
    reward_model  struct<candidate_answers, ground_truth, style>
                  candidate_answers is a JSON *string* holding a list of accepted answers
    data_source   string                         e.g. "mmsearch_r1/fvqa_train"
    image_urls    any                            where the image came from (often null)
    data_id       string (optional)
    category      "search_free" | "search_required" (optional)

Mapping: answer = ground_truth, aliases = candidate_answers (decoded), question = the last
user message without image placeholders, source = data_source, id = data_id or
"<file stem>-<row index>". Other columns are kept verbatim in `Sample.extra`; the file's
column order and the `reward_model` keys without a field go to `extra["_fvqa"]`, so that
reading a file and writing it back gives identical rows. Our own fields without an FVQA
column (tools, tags, split) are written as extra columns when set.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from mmsr.data.errors import DataError
from mmsr.data.images import check_sample_images
from mmsr.data.record import Sample, SampleImage, check_sample

FVQA_KEY = "_fvqa"  # key of the reader's bookkeeping in Sample.extra (not a column)
# Column order of MMSearch-R1's files, then our fields that have no FVQA column.
CANONICAL_COLUMNS = (
    "prompt",
    "images",
    "reward_model",
    "data_source",
    "image_urls",
    "data_id",
    "category",
    "tools",
    "tags",
    "split",
)
ALWAYS_WRITTEN = ("prompt", "images", "reward_model", "data_source")
# Columns that map onto Sample fields; every other column lands in Sample.extra.
FIELD_COLUMNS = frozenset(ALWAYS_WRITTEN + ("data_id", "category", "tools", "tags", "split"))
_MAPPED_REWARD_KEYS = ("candidate_answers", "ground_truth")
# Image placeholders some exports put into the user message (LLaVA style, Qwen vision tokens).
_IMAGE_PLACEHOLDER = re.compile(r"<image>|<\|vision_start\|>|<\|image_pad\|>|<\|vision_end\|>")


# ------------------------------------------------------------------ prompt <-> question
def _message_text(content: Any) -> str:
    """Text of a chat message: a string, or a list of OpenAI-style parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(p.get("text") or "" for p in content if isinstance(p, dict))
    return ""


def question_from_prompt(prompt: Any) -> str:
    """The last user message's text with image placeholders removed ("" if there is none)."""
    if not isinstance(prompt, list):
        return ""
    users = [m for m in prompt if isinstance(m, dict) and m.get("role") == "user"]
    if not users:
        return ""
    return _IMAGE_PLACEHOLDER.sub("", _message_text(users[-1].get("content"))).strip()


def prompt_from_question(question: str) -> list[dict[str, str]]:
    """The stored prompt of a sample made from scratch: the bare question as a user message.

    Instructions (tags, tools) are not stored: the rollout code adds its own system prompt.
    """
    return [{"content": question, "role": "user"}]


# ------------------------------------------------------------------ candidate answers
def decode_candidates(raw: Any) -> list[str]:
    """`reward_model.candidate_answers` (a JSON string, or null) as a list of strings."""
    if raw is None:
        return []
    if not isinstance(raw, str):
        raise ValueError(f"candidate_answers must be a JSON string, got {type(raw).__name__}")
    try:
        value = json.loads(raw)
    except json.JSONDecodeError as err:
        raise ValueError(f"bad candidate_answers JSON ({err}): {raw[:80]!r}") from err
    if not isinstance(value, list) or not all(isinstance(a, str) for a in value):
        raise ValueError(f"candidate_answers must be a JSON list of strings: {raw[:80]!r}")
    return value


def encode_candidates(aliases: list[str]) -> str:
    # json.dumps defaults (ASCII escapes, ", " separators) are what the released files use.
    return json.dumps(aliases)


# ------------------------------------------------------------------ row <-> sample
def sample_from_row(row: dict[str, Any], columns: list[str], default_id: str) -> Sample:
    """Map one FVQA row to a Sample; raise ValueError naming what is wrong."""
    reward = row.get("reward_model")
    if not isinstance(reward, dict):
        raise ValueError(f"missing answer: reward_model is {reward!r}")
    raw_candidates = reward.get("candidate_answers")
    aliases = decode_candidates(raw_candidates)
    reward_rest = {k: v for k, v in reward.items() if k not in _MAPPED_REWARD_KEYS}
    if raw_candidates != encode_candidates(aliases):
        reward_rest["candidate_answers"] = raw_candidates  # odd spelling: keep it verbatim

    images = []
    for k, item in enumerate(row.get("images") or []):
        if not isinstance(item, dict):
            raise ValueError(f"image {k} is not a {{bytes, path}} struct: {type(item).__name__}")
        images.append(SampleImage(bytes=item.get("bytes"), path=item.get("path")))

    data_id = row.get("data_id")
    extra = {c: row[c] for c in columns if c not in FIELD_COLUMNS}
    extra[FVQA_KEY] = {"columns": list(columns), "reward_model": reward_rest}
    sample = Sample(
        id=default_id if data_id is None else str(data_id),
        question=question_from_prompt(row.get("prompt")),
        answer=reward.get("ground_truth"),
        images=images,
        aliases=aliases,
        category=row.get("category"),
        tools=row.get("tools"),
        source=row.get("data_source") or "",
        tags=list(row.get("tags") or []),
        split=row.get("split"),
        prompt=row.get("prompt"),
        extra=extra,
    )
    check_sample(sample)
    return sample


def output_columns(samples: Sequence[Sample]) -> list[str]:
    """Columns to write: the source files' own order first, then whatever else is set."""
    from_files: list[str] = []
    needed = set(ALWAYS_WRITTEN)
    extras: list[str] = []
    for s in samples:
        info = s.extra.get(FVQA_KEY)
        if info:
            from_files += [c for c in info["columns"] if c not in from_files]
        else:
            needed.add("data_id")  # made from scratch: its id is real, keep it
        needed.update(
            name
            for name, is_set in (
                ("category", s.category is not None),
                ("tools", s.tools is not None),
                ("tags", bool(s.tags)),
                ("split", s.split is not None),
            )
            if is_set
        )
        extras += [k for k in s.extra if k != FVQA_KEY and k not in extras]
    needed.update(extras)
    columns = from_files + [c for c in CANONICAL_COLUMNS if c in needed and c not in from_files]
    return columns + [c for c in extras if c not in columns]


def row_from_sample(sample: Sample, columns: list[str]) -> dict[str, Any]:
    """One FVQA row (keys in `columns` order) for a Sample."""
    info = sample.extra.get(FVQA_KEY) or {}
    reward_rest = dict(info.get("reward_model") or {"style": "rule"})
    candidates = encode_candidates(sample.aliases)
    if "candidate_answers" in reward_rest:
        raw = reward_rest.pop("candidate_answers")
        if decode_candidates(raw) == sample.aliases:
            candidates = raw
    prompt = sample.prompt
    if prompt is None or question_from_prompt(prompt) != sample.question:
        prompt = prompt_from_question(sample.question)  # no prompt, or the question changed

    values = {
        "prompt": prompt,
        "images": [{"bytes": im.bytes, "path": im.path} for im in sample.images],
        "reward_model": {
            "candidate_answers": candidates,
            "ground_truth": sample.answer,
            **reward_rest,
        },
        "data_source": sample.source,
        "data_id": sample.id,
        "category": sample.category,
        "tools": sample.tools,
        "tags": sample.tags,
        "split": sample.split,
    }
    return {c: values[c] if c in FIELD_COLUMNS else sample.extra.get(c) for c in columns}


# ------------------------------------------------------------------ files
def iter_parquet(path: Path, check_images: bool = True, batch_rows: int = 64) -> Iterator[Sample]:
    """Samples of an FVQA parquet file, read `batch_rows` rows at a time (files can be GBs)."""
    try:
        parquet = pq.ParquetFile(path)
    except (pa.ArrowInvalid, OSError) as err:
        raise DataError(f"cannot read as parquet: {err}", path=path) from err
    columns = parquet.schema_arrow.names
    index = 0
    for batch in parquet.iter_batches(batch_size=batch_rows):
        for row in batch.to_pylist():
            sample_id = None if row.get("data_id") is None else str(row["data_id"])
            try:
                sample = sample_from_row(row, columns, default_id=f"{path.stem}-{index}")
                if check_images:
                    check_sample_images(sample.images, base_dir=path.parent)
            except ValueError as err:
                raise DataError(str(err), path=path, row=index, sample_id=sample_id) from err
            yield sample
            index += 1


def write_parquet(samples: Sequence[Sample], path: Path, rows_per_group: int = 256) -> int:
    """Write `samples` as FVQA parquet, one row group per `rows_per_group` samples.

    The arrow schema is inferred from the values (so all-null columns stay `null`, as in
    the released files), unified over all row groups before anything is written.
    """
    for index, sample in enumerate(samples):
        try:
            check_sample(sample)
        except ValueError as err:
            raise DataError(str(err), path=path, row=index, sample_id=sample.id) from err
    columns = output_columns(samples)

    def chunks() -> Iterator[list[dict[str, Any]]]:
        for start in range(0, len(samples), rows_per_group):
            yield [row_from_sample(s, columns) for s in samples[start : start + rows_per_group]]

    schemas = [pa.Table.from_pylist(rows).schema for rows in chunks()]
    schema = (
        pa.unify_schemas(schemas, promote_options="permissive")
        if schemas
        else pa.schema([(c, pa.null()) for c in columns])
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    with pq.ParquetWriter(path, schema) as writer:
        for rows in chunks():
            writer.write_table(pa.Table.from_pylist(rows, schema=schema))
    return len(samples)
