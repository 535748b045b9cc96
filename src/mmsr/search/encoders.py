"""Image descriptors for the local image search: a protocol, a hand-built default, and an
adapter for real CLIP / SigLIP weights on the local disk.

No pretrained CLIP weights can be installed on the machines mmsr targets, so the default
`ColorLayoutEncoder` is built by hand for what the world's image search must do: find the
clean flag thumbnail behind a degraded *photo* of it (perspective, crop, waving cloth,
background, lighting, blur, JPEG). It joins

- a coarse spatial colour layout of the image centre (flags are colour blocks; the centre
  survives the crops and the background mostly lies at the borders),
- a colour histogram of the centre in a perceptual (CIE Lab) space, which ignores where
  the colours are and so tolerates perspective and waves,
- a gradient orientation histogram (stripes vs crosses vs stars),

each block normalised against exposure and contrast, then the whole vector L2-normalised so
that the inner product of two descriptors is their cosine similarity. The index adds a few
degraded renders of every thumbnail (see `local_image.py`), which is what makes the
hand-built descriptor robust: the nearest stored vector is usually a render of the same flag.

A user with real weights switches with `SearchConfig.image_encoder = "open_clip:<dir>"` or
`"siglip:<dir>"` (see `make_encoder`).
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np
from PIL import Image

from mmsr.search.projection import l2_normalize


@runtime_checkable
class ImageEncoder(Protocol):
    """Maps images to L2-normalised vectors; the inner product is the similarity."""

    name: str  # stable id, part of the index cache key: change it when the output changes
    dim: int  # length of one vector

    def encode(self, images: list[Image.Image]) -> np.ndarray:
        """[len(images), dim] float32, each row of unit norm."""
        ...


def to_rgb(image: Image.Image) -> Image.Image:
    """RGB view of any PIL image; transparent parts (palette or alpha PNGs) become white, as
    a browser shows them, instead of the arbitrary colour hidden under the alpha."""
    if image.mode == "RGB":
        return image
    if image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info:
        rgba = image.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return image.convert("RGB")


def rgb_to_lab(rgb: np.ndarray) -> np.ndarray:
    """sRGB in [0, 1], shape [..., 3] -> CIE Lab (D65), L in [0, 100], a/b roughly +-100."""
    linear = np.where(rgb <= 0.04045, rgb / 12.92, ((rgb + 0.055) / 1.055) ** 2.4)
    matrix = np.array(
        [[0.4124, 0.3576, 0.1805], [0.2126, 0.7152, 0.0722], [0.0193, 0.1192, 0.9505]],
        dtype=np.float32,
    )
    xyz = linear @ matrix.T / np.array([0.95047, 1.0, 1.08883], dtype=np.float32)
    f = np.where(xyz > 0.008856, np.cbrt(xyz), 7.787 * xyz + 16 / 116)
    lightness = 116 * f[..., 1] - 16
    a = 500 * (f[..., 0] - f[..., 1])
    b = 200 * (f[..., 1] - f[..., 2])
    return np.stack([lightness, a, b], axis=-1).astype(np.float32)


def foreground_box(image: Image.Image, *, work_px: int = 48) -> tuple[float, float, float, float]:
    """Bounding box (x0, y0, x1, y1 in pixels of `image`) of what differs from the
    background, estimated from the image's border ring: in a photo the flag rarely fills the
    frame's edges, the sky / wall / trees do. Falls back to the whole image when nothing (or
    almost everything) stands out, e.g. a clean thumbnail."""
    w, h = image.size
    small = image.resize((work_px, work_px), Image.Resampling.BILINEAR)
    lab = rgb_to_lab(np.asarray(small, dtype=np.float32) / 255.0)
    ring = max(2, work_px // 16)
    border = np.concatenate(
        [
            lab[:ring].reshape(-1, 3),
            lab[-ring:].reshape(-1, 3),
            lab[:, :ring].reshape(-1, 3),
            lab[:, -ring:].reshape(-1, 3),
        ]
    )
    # Distance of each pixel to its nearest border colour (a handful of sampled ones), so a
    # two-tone background (sky over hills) still counts as background.
    samples = border[:: max(1, len(border) // 48)]
    dist = np.sqrt(((lab[:, :, None, :] - samples[None, None]) ** 2).sum(-1)).min(-1)
    mask = dist > 18.0
    share = mask.mean()
    if share < 0.04 or share > 0.85:
        return 0.0, 0.0, float(w), float(h)
    ys, xs = np.nonzero(mask)
    lo_x, hi_x = np.percentile(xs, [3, 97])
    lo_y, hi_y = np.percentile(ys, [3, 97])
    sx, sy = w / work_px, h / work_px
    x0, x1 = lo_x * sx, (hi_x + 1) * sx
    y0, y1 = lo_y * sy, (hi_y + 1) * sy
    if (x1 - x0) < 0.2 * w or (y1 - y0) < 0.2 * h:
        return 0.0, 0.0, float(w), float(h)
    return float(x0), float(y0), float(x1), float(y1)


VIEWS = ("foreground", "whole")


class ColorLayoutEncoder:
    """The default hand-built descriptor (see the module docstring). Pure numpy + Pillow,
    a few ms per image.

    `views`: the descriptor is computed on the estimated flag region (`foreground`) and on
    the whole frame (`whole`), and the two are joined. The foreground box is right most of
    the time; when it is not (a flag touching the frame's edges looks like background), the
    whole-frame view still carries the flag's colours. The index's learned projection
    (`mmsr.search.projection`) then weighs the dimensions by how well they survive photos.
    """

    name = "colorlayout-v4"

    def __init__(
        self,
        *,
        work_px: int = 64,  # images are resized to work_px x work_px first
        centre: float = 0.9,  # side of the kept centre, as a share of each side
        grid: int = 8,  # layout cells per side
        ab_bins: int = 10,  # histogram bins per chroma axis (a, b)
        l_bins: int = 4,  # histogram bins of lightness
        orient_bins: int = 8,  # gradient orientation bins (0..180 degrees)
        weights: tuple[float, float, float] = (1.0, 1.0, 0.5),  # layout, colour, gradients
        views: tuple[str, ...] = ("foreground", "whole"),
    ):
        unknown = set(views) - set(VIEWS)
        if unknown or not views:
            raise ValueError(f"ColorLayoutEncoder views {views}: choose from {VIEWS}")
        self.work_px = work_px
        self.centre = centre
        self.grid = grid
        self.ab_bins = ab_bins
        self.l_bins = l_bins
        self.orient_bins = orient_bins
        self.weights = weights
        self.views = tuple(views)
        self.view_dim = grid * grid * 3 + ab_bins * ab_bins * l_bins + orient_bins * 4
        self.dim = self.view_dim * len(self.views)
        # The name keys the index cache: other settings give other vectors, so another name.
        settings = (work_px, centre, grid, ab_bins, l_bins, orient_bins, tuple(weights), views)
        if settings != (64, 0.9, 8, 10, 4, 8, (1.0, 1.0, 0.5), ("foreground", "whole")):
            self.name = f"{ColorLayoutEncoder.name}{settings}"

    def encode_with_boxes(
        self, images: list[Image.Image]
    ) -> tuple[np.ndarray, list[tuple[float, float, float, float]]]:
        """`encode` plus each image's `foreground_box`, so the index's CNN metric
        (`cnn_metric.region_crop`) does not estimate it a second time."""
        rows = [self._one(img) for img in images]
        vectors = np.stack([r for r, _ in rows]) if rows else np.zeros((0, self.dim), np.float32)
        return vectors, [box for _, box in rows]

    def encode(self, images: list[Image.Image]) -> np.ndarray:
        return self.encode_with_boxes(images)[0]

    def _one(self, image: Image.Image) -> tuple[np.ndarray, tuple[float, float, float, float]]:
        img = to_rgb(image)
        whole = (0.0, 0.0, float(img.size[0]), float(img.size[1]))
        fg = foreground_box(img)
        parts = [self._view(img, fg if view == "foreground" else whole) for view in self.views]
        return l2_normalize(np.concatenate(parts)), fg

    def _view(self, img: Image.Image, box: tuple[float, float, float, float]) -> np.ndarray:
        side = self.work_px
        margin = (1 - self.centre) / 2
        x0, y0, x1, y1 = box
        w, h = x1 - x0, y1 - y0
        box = (x0 + margin * w, y0 + margin * h, x1 - margin * w, y1 - margin * h)
        img = img.resize((side, side), Image.Resampling.BILINEAR, box=box)
        lab = rgb_to_lab(np.asarray(img, dtype=np.float32) / 255.0)  # [side, side, 3]

        # Exposure and contrast change L a lot and chroma little: standardise L per image.
        lightness = lab[..., 0]
        lab_n = lab.copy()
        lab_n[..., 0] = (lightness - lightness.mean()) / (lightness.std() + 5.0) * 25.0

        layout = self._layout(lab_n)
        colours = self._colour_histogram(lab_n)
        gradients = self._gradient_histogram(lightness)
        w_layout, w_colour, w_grad = self.weights
        joined = np.concatenate(
            [
                w_layout * l2_normalize(layout),
                w_colour * l2_normalize(colours),
                w_grad * l2_normalize(gradients),
            ]
        )
        # Normalised again as a whole: a block can be all zero (no gradients in a plain
        # colour), and the index's inner product must stay a cosine.
        return l2_normalize(joined)

    def _layout(self, lab: np.ndarray) -> np.ndarray:
        g = self.grid
        side = lab.shape[0] // g * g
        cells = lab[:side, :side].reshape(g, side // g, g, side // g, 3).mean(axis=(1, 3))
        return cells.reshape(-1) / 50.0

    def _colour_histogram(self, lab: np.ndarray) -> np.ndarray:
        a = np.clip((lab[..., 1] + 80) / 160, 0, 0.999) * self.ab_bins
        b = np.clip((lab[..., 2] + 80) / 160, 0, 0.999) * self.ab_bins
        lum = np.clip((lab[..., 0] + 50) / 100, 0, 0.999) * self.l_bins
        index = (lum.astype(int) * self.ab_bins + a.astype(int)) * self.ab_bins + b.astype(int)
        hist = np.bincount(index.reshape(-1), minlength=self.l_bins * self.ab_bins**2)
        return np.sqrt(hist / hist.sum())  # Hellinger: large uniform areas do not dominate

    def _gradient_histogram(self, lightness: np.ndarray) -> np.ndarray:
        gy, gx = np.gradient(lightness)
        magnitude = np.hypot(gx, gy)
        angle = (np.arctan2(gy, gx) % np.pi) / np.pi * self.orient_bins
        bins = np.minimum(angle.astype(int), self.orient_bins - 1)
        half = lightness.shape[0] // 2
        parts = []
        for rows in (slice(0, half), slice(half, None)):
            for cols in (slice(0, half), slice(half, None)):
                parts.append(
                    np.bincount(
                        bins[rows, cols].reshape(-1),
                        weights=magnitude[rows, cols].reshape(-1),
                        minlength=self.orient_bins,
                    )
                )
        return np.sqrt(np.concatenate(parts))


class TinyPixelsEncoder:
    """Baseline for the benchmarks: the whole image at 8x8 RGB, normalised. What a naive
    near-duplicate search would do; not meant for use."""

    name = "tinypixels-v1"
    dim = 8 * 8 * 3

    def encode(self, images: list[Image.Image]) -> np.ndarray:
        rows = [
            np.asarray(to_rgb(img).resize((8, 8), Image.Resampling.BILINEAR), np.float32).reshape(
                -1
            )
            for img in images
        ]
        x = np.stack(rows) if rows else np.zeros((0, self.dim), np.float32)
        return l2_normalize(x - x.mean(axis=-1, keepdims=True))


class ClipEncoder:
    """open_clip or SigLIP (transformers) image tower from a LOCAL folder; imported lazily.

    `kind="open_clip"`: `path` is an open_clip checkpoint folder holding
    `open_clip_config.json` and the weights (`open_clip_pytorch_model.bin` or
    `.safetensors`), as the Hugging Face hub stores them. `kind="siglip"`: a transformers
    folder (`config.json`, weights, preprocessor config) of any vision-text model with
    `get_image_features` (SigLIP, CLIP).
    """

    def __init__(self, kind: str, path: str, *, device: str = "cpu", batch_size: int = 32):
        from pathlib import Path

        if kind not in ("open_clip", "siglip"):
            raise ValueError(f"image encoder kind {kind!r}: expected 'open_clip' or 'siglip'")
        folder = Path(path).expanduser()
        if not folder.is_dir():
            raise FileNotFoundError(f"image encoder {kind}: no model folder at {folder}")
        self.kind, self.path, self.device, self.batch_size = kind, folder, device, batch_size
        self.name = f"{kind}:{folder.resolve()}"
        if kind == "open_clip":
            self._load_open_clip(folder)
        else:
            self._load_transformers(folder)

    def _load_open_clip(self, folder) -> None:
        try:
            import open_clip
        except ImportError as err:
            raise ImportError(
                "image_encoder 'open_clip:...' needs the open_clip package: "
                "pip install open_clip_torch"
            ) from err
        model, _, preprocess = open_clip.create_model_and_transforms(f"local-dir:{folder}")
        self._model = model.eval().to(self.device)
        self._preprocess = preprocess
        self.dim = int(getattr(model.visual, "output_dim", 0) or self._probe_dim())

    def _load_transformers(self, folder) -> None:
        try:
            from transformers import AutoModel, AutoProcessor
        except ImportError as err:  # pragma: no cover - transformers is a dependency
            raise ImportError("image_encoder 'siglip:...' needs transformers") from err
        self._model = AutoModel.from_pretrained(str(folder), local_files_only=True).eval()
        self._model.to(self.device)
        self._processor = AutoProcessor.from_pretrained(str(folder), local_files_only=True)
        self.dim = self._probe_dim()

    def _probe_dim(self) -> int:
        return int(self.encode([Image.new("RGB", (32, 32))]).shape[1])

    def encode(self, images: list[Image.Image]) -> np.ndarray:
        import torch

        out = []
        with torch.inference_mode():
            for start in range(0, len(images), self.batch_size):
                batch = [to_rgb(im) for im in images[start : start + self.batch_size]]
                if self.kind == "open_clip":
                    pixels = torch.stack([self._preprocess(im) for im in batch]).to(self.device)
                    feats = self._model.encode_image(pixels)
                else:
                    inputs = self._processor(images=batch, return_tensors="pt").to(self.device)
                    feats = self._model.get_image_features(**inputs)
                    feats = getattr(feats, "pooler_output", feats)
                out.append(feats.float().cpu().numpy())
        if not out:
            return np.zeros((0, getattr(self, "dim", 0)), np.float32)
        return l2_normalize(np.concatenate(out))


def make_encoder(spec: str) -> ImageEncoder:
    """`"colorlayout"` (default), `"tinypixels"` (baseline), `"open_clip:<dir>"` or
    `"siglip:<dir>"` (local weights)."""
    if spec in ("", "colorlayout", ColorLayoutEncoder.name):
        return ColorLayoutEncoder()
    if spec in ("tinypixels", TinyPixelsEncoder.name):
        return TinyPixelsEncoder()
    kind, sep, path = spec.partition(":")
    if sep and kind in ("open_clip", "siglip"):
        return ClipEncoder(kind, path)
    raise ValueError(
        f"image_encoder {spec!r}: expected 'colorlayout', 'tinypixels', "
        "'open_clip:<local dir>' or 'siglip:<local dir>'"
    )
