"""`degrade_flag`: photo-like, deterministic for a seed, different across seeds."""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw

from mmsr.world.photo import degrade_flag


def _tricolour() -> Image.Image:
    img = Image.new("RGB", (150, 100), "white")
    draw = ImageDraw.Draw(img)
    draw.rectangle([0, 0, 49, 99], fill=(0, 85, 164))
    draw.rectangle([100, 0, 149, 99], fill=(239, 65, 53))
    return img


def test_same_seed_same_photo_other_seed_other_photo():
    flag = _tricolour()
    a = degrade_flag(flag, np.random.default_rng(7))
    b = degrade_flag(flag, np.random.default_rng(7))
    c = degrade_flag(flag, np.random.default_rng(8))
    assert np.array_equal(np.asarray(a), np.asarray(b))
    assert not np.array_equal(np.asarray(a), np.asarray(c)) or a.size != c.size


def test_photo_is_rgb_small_and_not_the_flag():
    flag = _tricolour()
    for seed in range(5):
        photo = degrade_flag(flag, np.random.default_rng(seed), out_size=128)
        assert photo.mode == "RGB"
        assert max(photo.size) == 128
        ours = np.asarray(photo.resize((30, 20)), dtype=np.float32)
        clean = np.asarray(flag.resize((30, 20)), dtype=np.float32)
        assert np.abs(ours - clean).mean() > 8  # background, warp, light: not the render


def test_flag_colours_survive():
    """The flag stays recognisable: its blue and red are still in the photo."""
    flag = _tricolour()
    photo = np.asarray(degrade_flag(flag, np.random.default_rng(3)), dtype=np.int32)
    blueish = (photo[..., 2] > photo[..., 0] + 40) & (photo[..., 2] > 90)
    reddish = (photo[..., 0] > photo[..., 2] + 60) & (photo[..., 0] > 120)
    assert blueish.mean() > 0.02 and reddish.mean() > 0.02


def test_transparent_and_palette_flags():
    pennant = Image.new("RGBA", (80, 100), (0, 0, 0, 0))
    ImageDraw.Draw(pennant).polygon([(0, 0), (80, 50), (0, 100)], fill=(200, 20, 40, 255))
    assert degrade_flag(pennant, np.random.default_rng(0)).mode == "RGB"
    palette = _tricolour().convert("P")
    assert degrade_flag(palette, np.random.default_rng(0)).mode == "RGB"
