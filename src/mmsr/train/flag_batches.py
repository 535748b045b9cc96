"""Freshly degraded flag photos, preprocessed for a Qwen-VL vision tower.

Every photo gets its own seed `(seed, stream, index)`: training draws stream 0 with a running
index (a resumed run continues it), evaluation draws stream 1, so no evaluation photo is ever
one the eye was trained on.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

from mmsr.world.load import World
from mmsr.world.photo import degrade_flag

TRAIN_STREAM = 0
EVAL_STREAM = 1


@dataclass
class FlagPhoto:
    entity_id: str
    name: str  # the gold answer (the entity's display name)
    pixel_values: torch.Tensor  # [n_patches, C * T * P * P] as the image processor flattens
    grid_thw: torch.Tensor  # [3] (temporal, height, width) in patches
    n_tokens: int  # LM tokens after the spatial merge


def flag_entities(world: World, familiar: bool) -> list:
    """Entities whose flag questions are asked (one per look-alike group), by familiarity.

    Look-alike members that do not carry the questions (e.g. Romania, whose flag is Chad's)
    are left out: no eye can tell them apart, and no question asks about them.
    """
    return [e for e in world.entities if e.familiar == familiar and e.asks_flag]


def photo_seed(seed: int, stream: int, index: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([seed, stream, index]))


class FlagPhotos:
    """Renders degraded photos of flags and turns them into vision-tower inputs."""

    def __init__(self, world: World, processor, image_size: int = 112) -> None:
        self.world = world
        self.image_processor = processor.image_processor
        self.merge = int(self.image_processor.merge_size)
        self.image_size = image_size  # px, longest side of the rendered photo
        self._flags: dict[str, Image.Image] = {}

    def flag(self, entity_id: str) -> Image.Image:
        if entity_id not in self._flags:
            with Image.open(self.world.flag_path(entity_id)) as opened:
                self._flags[entity_id] = opened.convert("RGBA")
        return self._flags[entity_id]

    def image(self, entity, rng: np.random.Generator) -> Image.Image:
        return degrade_flag(self.flag(entity.id), rng, out_size=self.image_size)

    def photo(self, entity, rng: np.random.Generator) -> FlagPhoto:
        inputs = self.image_processor(images=[self.image(entity, rng)], return_tensors="pt")
        grid = inputs["image_grid_thw"][0]
        return FlagPhoto(
            entity_id=entity.id,
            name=entity.name,
            pixel_values=inputs["pixel_values"],
            grid_thw=grid,
            n_tokens=int(grid.prod()) // self.merge**2,
        )


def stack_photos(photos: list[FlagPhoto]) -> tuple[torch.Tensor, torch.Tensor]:
    """Concatenated patches [sum n_patches, D] and grids [B, 3], as the tower takes them."""
    pixels = torch.cat([p.pixel_values for p in photos], dim=0)
    grids = torch.stack([p.grid_thw for p in photos], dim=0)
    return pixels, grids
