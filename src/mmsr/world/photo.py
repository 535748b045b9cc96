"""Realistic degraded photos of a flag, with Pillow and numpy only (no torchvision).

A question image must look like a photo someone took of a flag, never the clean render
that image search indexes: the flag waves, hangs on a pole in front of a sky, wall or
trees, is seen at an angle, cropped, unevenly lit, slightly out of focus, noisy and
JPEG-compressed. Every random choice comes from the caller's `numpy.random.Generator`,
so a seed gives the same photo (on the same Pillow/libjpeg build).
"""

from __future__ import annotations

import io
import math

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

WORK_SCALE = 2  # render at 2x the output size, then downsample (smoother edges)


def degrade_flag(img: Image.Image, rng: np.random.Generator, out_size: int = 192) -> Image.Image:
    """A photo-like RGB image of the flag `img`, its longest side `out_size` px."""
    flag = img.convert("RGBA")
    aspect = float(rng.choice([4 / 3, 1.0, 3 / 4, 3 / 2], p=[0.45, 0.3, 0.1, 0.15]))
    out_w, out_h = _fit(aspect, out_size)
    width, height = out_w * WORK_SCALE, out_h * WORK_SCALE

    canvas = _background(rng, width, height)
    waving = rng.random() < 0.65
    if waving:
        flag = _wave(flag, rng)
    # The flag fills 50-88% of the frame's width (or height, for tall frames).
    scale = rng.uniform(0.5, 0.88) * min(width / flag.width, height / flag.height * 1.15)
    fw, fh = max(8, int(flag.width * scale)), max(8, int(flag.height * scale))
    flag = flag.resize((fw, fh), Image.Resampling.BICUBIC)
    x0 = rng.uniform(0.02, 0.98) * max(1, width - fw)
    y0 = rng.uniform(0.05, 0.95) * max(1, height - fh)
    quad = _perspective_quad(rng, x0, y0, fw, fh)
    if rng.random() < 0.55:
        _draw_pole(canvas, rng, quad)
    warped = flag.transform(
        (width, height),
        Image.Transform.PERSPECTIVE,
        _perspective_coeffs(quad, fw, fh),
        Image.Resampling.BICUBIC,
    )
    canvas.alpha_composite(warped)

    photo = canvas.convert("RGB")
    photo = _crop(photo, rng, quad)
    photo = photo.resize((out_w, out_h), Image.Resampling.LANCZOS)
    photo = _lighting(photo, rng)
    photo = _blur(photo, rng)
    photo = _noise(photo, rng)
    return _jpeg(photo, int(rng.integers(35, 86)))


def _fit(aspect: float, longest: int) -> tuple[int, int]:
    if aspect >= 1:
        return longest, max(16, round(longest / aspect))
    return max(16, round(longest * aspect)), longest


# ---------------------------------------------------------------- backgrounds
def _smooth_noise(rng: np.random.Generator, width: int, height: int, cells: int) -> np.ndarray:
    """Low-frequency noise in [0, 1], shape [height, width]: random cells upsampled."""
    small = (rng.random((max(2, cells * height // width), cells)) * 255).astype(np.uint8)
    big = Image.fromarray(small, "L").resize((width, height), Image.Resampling.BICUBIC)
    return np.asarray(big, dtype=np.float32) / 255.0


def _background(rng: np.random.Generator, width: int, height: int) -> Image.Image:
    kind = rng.choice(["sky", "wall", "foliage", "indoor", "street"])
    yy = np.linspace(0, 1, height, dtype=np.float32)[:, None, None]
    if kind == "sky":
        top = np.array([rng.uniform(60, 120), rng.uniform(120, 170), rng.uniform(190, 250)])
        bottom = np.array([rng.uniform(170, 225), rng.uniform(195, 235), rng.uniform(225, 255)])
        base = top * (1 - yy) + bottom * yy
        clouds = _smooth_noise(rng, width, height, int(rng.integers(3, 7)))
        cover = np.clip((clouds - rng.uniform(0.45, 0.75)) * 3, 0, 1)[..., None]
        base = base * (1 - cover) + rng.uniform(225, 250) * cover
    elif kind == "wall":
        color = rng.uniform(90, 220, size=3)
        texture = _smooth_noise(rng, width, height, 24)[..., None]
        base = color * (0.85 + 0.25 * texture) * np.ones((height, width, 1))
        if rng.random() < 0.5:  # brick courses
            rows = (np.arange(height) % int(rng.integers(10, 22)) == 0)[:, None, None]
            base = np.where(rows, base * 0.7, base)
    elif kind == "foliage":
        green = np.array([rng.uniform(30, 90), rng.uniform(80, 150), rng.uniform(20, 70)])
        leaves = _smooth_noise(rng, width, height, int(rng.integers(12, 30)))[..., None]
        base = green * (0.5 + leaves) * np.ones((height, width, 1))
    elif kind == "indoor":
        color = rng.uniform(60, 200, size=3)
        ramp = np.linspace(rng.uniform(0.6, 1.0), rng.uniform(0.8, 1.2), width)[None, :, None]
        base = color * ramp * np.ones((height, 1, 1))
    else:  # street: sky above a building line
        sky = np.array([rng.uniform(150, 210), rng.uniform(170, 220), rng.uniform(200, 250)])
        building = rng.uniform(70, 170, size=3)
        line = rng.uniform(0.55, 0.9)
        skyline = line + 0.1 * (_smooth_noise(rng, width, 2, 6)[0] - 0.5)
        below = (yy[:, :, 0] > skyline[None, :])[..., None]
        base = np.where(below, building, sky) * np.ones((height, width, 1))
    grain = rng.normal(0, 3, size=(height, width, 1))
    pixels = np.clip(base + grain, 0, 255).astype(np.uint8)
    return Image.fromarray(pixels, "RGB").convert("RGBA")


# ---------------------------------------------------------------- the flag itself
def _wave(flag: Image.Image, rng: np.random.Generator) -> Image.Image:
    """Cloth ripples: columns shift up/down and are shaded by the fold's slope.

    The hoist (left edge) stays fixed, as on a pole; amplitude grows toward the fly.
    """
    pixels = np.asarray(flag, dtype=np.float32)  # [H, W, 4]
    height, width = pixels.shape[:2]
    pad = int(height * 0.12) + 2
    padded = np.zeros((height + 2 * pad, width, 4), dtype=np.float32)
    padded[pad : pad + height] = pixels
    x = np.arange(width, dtype=np.float32) / max(1, width - 1)
    wavelength = rng.uniform(0.45, 1.1)
    phase = rng.uniform(0, 2 * math.pi)
    amplitude = rng.uniform(0.03, 0.1) * height
    angle = 2 * math.pi * x / wavelength + phase
    shift = amplitude * np.sin(angle) * (0.25 + 0.75 * x)  # [W] pixels
    shade = 1.0 + rng.uniform(0.12, 0.3) * np.cos(angle)  # [W] light on the folds
    rows = np.arange(height + 2 * pad, dtype=np.float32)[:, None]
    src = np.clip(np.rint(rows - shift[None, :]).astype(int), 0, height + 2 * pad - 1)
    out = padded[src, np.arange(width)[None, :]]
    out[..., :3] *= shade[None, :, None]
    return Image.fromarray(np.clip(out, 0, 255).astype(np.uint8), "RGBA")


def _perspective_quad(
    rng: np.random.Generator, x0: float, y0: float, fw: int, fh: int
) -> np.ndarray:
    """Where the flag's corners land: a rotated, sheared, foreshortened rectangle.

    Returns [4, 2] (x, y) for top-left, top-right, bottom-right, bottom-left.
    """
    corners = np.array([[0, 0], [fw, 0], [fw, fh], [0, fh]], dtype=np.float64)
    center = np.array([fw / 2, fh / 2])
    theta = math.radians(rng.uniform(-12, 12))
    rot = np.array([[math.cos(theta), -math.sin(theta)], [math.sin(theta), math.cos(theta)]])
    quad = (corners - center) @ rot.T + center
    # Foreshortening: one side shorter, as if seen from an angle.
    squeeze = rng.uniform(0, 0.22)
    if rng.random() < 0.5:
        quad[1, 1] += squeeze * fh / 2
        quad[2, 1] -= squeeze * fh / 2
    else:
        quad[0, 1] += squeeze * fh / 2
        quad[3, 1] -= squeeze * fh / 2
    quad += rng.normal(0, 0.035, size=(4, 2)) * np.array([fw, fh])
    return quad + np.array([x0, y0])


def _perspective_coeffs(quad: np.ndarray, fw: int, fh: int) -> tuple[float, ...]:
    """Pillow's 8 PERSPECTIVE coefficients mapping output pixels back into the flag.

    Solves u = (a x + b y + c) / (g x + h y + 1), v = (d x + e y + f) / (g x + h y + 1)
    for the four corner correspondences quad[i] -> flag corner i.
    """
    src = np.array([[0, 0], [fw, 0], [fw, fh], [0, fh]], dtype=np.float64)
    rows, rhs = [], []
    for (x, y), (u, v) in zip(quad, src, strict=True):
        rows.append([x, y, 1, 0, 0, 0, -u * x, -u * y])
        rhs.append(u)
        rows.append([0, 0, 0, x, y, 1, -v * x, -v * y])
        rhs.append(v)
    coeffs = np.linalg.solve(np.array(rows), np.array(rhs))
    return tuple(float(c) for c in coeffs)


def _draw_pole(canvas: Image.Image, rng: np.random.Generator, quad: np.ndarray) -> None:
    """A shaded vertical pole along the flag's hoist, running past the frame's edge."""
    hoist_x = float((quad[0, 0] + quad[3, 0]) / 2)
    top_y = float(min(quad[0, 1], quad[3, 1]))
    thickness = max(3, int(abs(quad[3, 1] - quad[0, 1]) * rng.uniform(0.04, 0.08)))
    color = (
        np.array([rng.uniform(150, 210)] * 3)
        if rng.random() < 0.6
        else np.array([rng.uniform(90, 140), rng.uniform(60, 100), rng.uniform(30, 60)])
    )
    draw = ImageDraw.Draw(canvas)
    left = int(hoist_x - thickness)
    start = int(top_y - rng.uniform(0.05, 0.4) * canvas.height)
    for i in range(thickness):  # cylinder shading: bright stripe off-centre
        light = 0.65 + 0.5 * math.sin(math.pi * (i + 0.5) / thickness)
        shade = tuple(int(min(255, c * light)) for c in color) + (255,)
        draw.line([(left + i, start), (left + i, canvas.height)], fill=shade)
    draw.ellipse(
        [left - 1, start - thickness, left + thickness + 1, start + 1],
        fill=tuple(color.astype(int)),
    )


# ---------------------------------------------------------------- camera
def _crop(photo: Image.Image, rng: np.random.Generator, quad: np.ndarray) -> Image.Image:
    """Keep 80-100% of each side, never cutting away the flag's centre, then restore size."""
    width, height = photo.size
    keep_w, keep_h = rng.uniform(0.8, 1.0) * width, rng.uniform(0.8, 1.0) * height
    cx, cy = quad.mean(axis=0)
    left = float(np.clip(rng.uniform(0, width - keep_w), cx - keep_w * 0.85, cx - keep_w * 0.15))
    top = float(np.clip(rng.uniform(0, height - keep_h), cy - keep_h * 0.85, cy - keep_h * 0.15))
    left = min(max(0.0, left), width - keep_w)
    top = min(max(0.0, top), height - keep_h)
    box = (int(left), int(top), int(left + keep_w), int(top + keep_h))
    return photo.crop(box).resize((width, height), Image.Resampling.BICUBIC)


def _lighting(photo: Image.Image, rng: np.random.Generator) -> Image.Image:
    """Exposure, contrast, white balance, a light gradient and sometimes a vignette."""
    pixels = np.asarray(photo, dtype=np.float32) / 255.0  # [H, W, 3]
    height, width = pixels.shape[:2]
    pixels = (pixels - 0.5) * rng.uniform(0.7, 1.15) + 0.5  # contrast
    pixels *= rng.uniform(0.65, 1.2)  # exposure
    pixels *= 1 + rng.uniform(-0.08, 0.08, size=3)  # white balance
    angle = rng.uniform(0, 2 * math.pi)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    ramp = (xx / width - 0.5) * math.cos(angle) + (yy / height - 0.5) * math.sin(angle)
    pixels *= (1 + rng.uniform(0.1, 0.45) * ramp)[..., None]  # light from one side
    if rng.random() < 0.5:
        r2 = ((xx / width - 0.5) ** 2 + (yy / height - 0.5) ** 2) * 2
        pixels *= (1 - rng.uniform(0.15, 0.45) * r2)[..., None]
    gamma = rng.uniform(0.85, 1.2)
    pixels = np.clip(pixels, 0, 1) ** gamma
    return Image.fromarray((pixels * 255 + 0.5).astype(np.uint8), "RGB")


def _blur(photo: Image.Image, rng: np.random.Generator) -> Image.Image:
    """Defocus most of the time; sometimes a short horizontal motion blur instead."""
    if rng.random() < 0.2:
        kernel = [0.0] * 25
        for i in range(5):
            kernel[10 + i] = 0.2  # the middle row of a 5x5 kernel
        return photo.filter(ImageFilter.Kernel((5, 5), kernel, scale=1.0))
    return photo.filter(ImageFilter.GaussianBlur(rng.uniform(0.3, 1.3)))


def _noise(photo: Image.Image, rng: np.random.Generator) -> Image.Image:
    """Sensor noise: luminance plus a little colour noise."""
    pixels = np.asarray(photo, dtype=np.float32)
    height, width = pixels.shape[:2]
    sigma = rng.uniform(2, 8)
    noise = rng.normal(0, sigma, size=(height, width, 1))
    noise = noise + rng.normal(0, sigma * 0.35, size=(height, width, 3))
    return Image.fromarray(np.clip(pixels + noise, 0, 255).astype(np.uint8), "RGB")


def _jpeg(photo: Image.Image, quality: int) -> Image.Image:
    """Round-trip through JPEG at `quality`, leaving its block artefacts in the pixels."""
    buf = io.BytesIO()
    photo.save(buf, format="JPEG", quality=quality)
    buf.seek(0)
    return Image.open(buf).convert("RGB")
