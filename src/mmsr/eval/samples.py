"""Which questions an evaluation runs on: a world split or any sample file."""

from __future__ import annotations

import random
from pathlib import Path

from mmsr.data.record import Sample

WORLD_PREFIX = "world:"


def load_eval_samples(spec: str, limit: int | None = None, shuffle_seed: int | None = None):
    """Samples named by `spec`.

    - `world:test`, `world:val`, `world:train`: a split of the embedded world;
      `world:all` every question.
    - a path to a `.parquet` (FVQA) or `.jsonl` sample file.

    `limit` keeps the first N (after a seeded shuffle when `shuffle_seed` is given, so a
    small limit still mixes question types).
    """
    if spec.startswith(WORLD_PREFIX):
        from mmsr.world.load import load_world

        split = spec[len(WORLD_PREFIX) :]
        world = load_world()
        if split == "all":
            samples = list(world.questions)
        else:
            splits = sorted({q.split for q in world.questions if q.split})
            if split not in splits:
                raise ValueError(f"--data {spec!r}: unknown world split (have {splits} and 'all')")
            samples = world.questions_in(split)
    else:
        from mmsr.data.io import read_samples

        path = Path(spec)
        if not path.is_file():
            raise FileNotFoundError(f"--data {spec!r}: no such file (or use world:test)")
        samples = read_samples(path)
    if shuffle_seed is not None:
        samples = list(samples)
        random.Random(shuffle_seed).shuffle(samples)
    if limit is not None:
        if limit < 1:
            raise ValueError(f"--limit {limit} must be >= 1")
        samples = samples[:limit]
    if not samples:
        raise ValueError(f"--data {spec!r} holds no questions")
    return list(samples)


def question_image_bytes(sample: Sample, base_dir: Path | None = None) -> bytes | None:
    """The encoded first image of a sample (bytes, or read from its path)."""
    if not sample.images:
        return None
    image = sample.images[0]
    if image.bytes is not None:
        return bytes(image.bytes)
    if image.path:
        path = Path(image.path)
        if not path.is_absolute() and base_dir is not None:
            path = base_dir / path
        if path.is_file():
            return path.read_bytes()
    return None
