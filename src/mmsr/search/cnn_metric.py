"""A small CNN metric over the flag region, learned per index from the index's own renders.

The hand-built descriptor + MLP metric (`projection.fit_mlp_metric`) sees a flag through
fixed pooled statistics (an 8x8 colour layout, histograms); it confuses flags that differ
by a small emblem or by where their colours sit. A convolutional network looks at the
pixels of the estimated flag region (`encoders.foreground_box`, plus a margin) with
translation-tolerant filters and makes different mistakes, so the index scores a page by
both: `s = s_mlp + CNN_WEIGHT * s_cnn` (see `local_image.py`).

Like the MLP it learns from nothing but which thumbnail each render shows (cosine softmax
over the thumbnails, scale 16), so it works on any corpus and never sees a benchmark photo.
33 renders per thumbnail are few for a CNN, so every batch is re-cropped (random scale,
aspect, rotation, shift of the region) and re-lit (channel gains, gamma) on the fly.
Weights are returned as numpy arrays (`cnn.<param>`) so the index cache stores them with
the other metric arrays; applying them needs torch (a dependency of mmsr already).

Measured on a validation stream of photos (never the benchmark's): MLP alone 88.4%
recall@1, CNN alone 86.1%, the sum with weight 0.5 90.1%; on the benchmark's photos the
sum gives 92.7% where the MLP alone gave 90.6% (docs/RESULTS.md).
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from mmsr.search.encoders import foreground_box, to_rgb

CROP_PX = 40  # stored crop side: the flag region plus MARGIN on each side
INPUT_PX = 32  # network input side, sampled from the crop's centre (augmented in training)
MARGIN = 0.1  # share of the region's side added around it, room for shifted crops
EMBED_DIM = 64
CNN_WEIGHT = 1.0  # weight of the CNN's cosine beside the MLP's (chosen on a validation stream)


def region_crop(
    image: Image.Image, box: tuple[float, float, float, float] | None = None
) -> np.ndarray:
    """[CROP_PX, CROP_PX, 3] uint8: the estimated flag region (`foreground_box` unless a box
    is given) with a margin, clipped to the image, stretched to a square."""
    img = to_rgb(image)
    width, height = img.size
    x0, y0, x1, y1 = box or foreground_box(img)
    mw, mh = MARGIN * (x1 - x0), MARGIN * (y1 - y0)
    clipped = (max(0.0, x0 - mw), max(0.0, y0 - mh), min(width, x1 + mw), min(height, y1 + mh))
    small = img.resize((CROP_PX, CROP_PX), Image.Resampling.BILINEAR, box=clipped)
    return np.asarray(small, dtype=np.uint8)


def _network(channels: int):
    """Four 3x3 conv blocks with 2x2 pooling (32 -> 2 px), then a linear map of the whole
    2x2 grid: flags are told apart by *where* colours sit, so no global pooling."""
    import torch.nn as nn

    def block(i: int, o: int) -> list[nn.Module]:
        return [nn.Conv2d(i, o, 3, padding=1, bias=False), nn.BatchNorm2d(o), nn.ReLU()]

    c = channels
    return nn.Sequential(
        *block(3, c), nn.MaxPool2d(2),
        *block(c, 2 * c), nn.MaxPool2d(2),
        *block(2 * c, 4 * c), nn.MaxPool2d(2),
        *block(4 * c, 4 * c), nn.MaxPool2d(2),
        nn.Flatten(), nn.Dropout(0.3), nn.Linear(4 * c * 4, EMBED_DIM),
    )  # fmt: skip


def _views(crops, generator=None):
    """[B, 3, CROP_PX, CROP_PX] in [0, 1] -> [B, 3, INPUT_PX, INPUT_PX] standardised network
    input: the centre (the region without its margin), randomly re-framed and re-lit when a
    generator is given (training)."""
    import torch
    import torch.nn.functional as F

    b = crops.shape[0]
    scale = torch.full((b,), 1 / (1 + 2 * MARGIN))
    theta = torch.zeros(b, 2, 3)
    if generator is None:
        theta[:, 0, 0] = theta[:, 1, 1] = scale
    else:

        def uniform(lo: float, hi: float, *shape: int):
            return torch.empty(*shape).uniform_(lo, hi, generator=generator)

        scale = scale * uniform(0.85, 1.15, b)
        aspect, angle = uniform(0.9, 1.1, b), uniform(-0.1, 0.1, b)
        theta[:, 0, 0] = scale * aspect * torch.cos(angle)
        theta[:, 0, 1] = -scale * torch.sin(angle)
        theta[:, 1, 0] = scale * aspect * torch.sin(angle)
        theta[:, 1, 1] = scale * torch.cos(angle)
        theta[:, :, 2] = uniform(-0.1, 0.1, b, 2)
    grid = F.affine_grid(theta, [b, 3, INPUT_PX, INPUT_PX], align_corners=False)
    x = F.grid_sample(crops, grid, padding_mode="border", align_corners=False)
    if generator is not None:
        x = x * uniform(0.9, 1.1, b, 3, 1, 1)  # white balance
        x = x.clamp(0, 1) ** uniform(0.8, 1.25, b, 1, 1, 1)  # exposure curve
    # Per-image standardisation: exposure and contrast differ from photo to photo.
    x = x - x.mean(dim=(2, 3), keepdim=True)
    return x / (x.std(dim=(1, 2, 3), keepdim=True) + 0.05)


def _as_tensor(crops: np.ndarray):
    import torch

    return torch.tensor(crops).permute(0, 3, 1, 2).float() / 255.0


def fit_cnn_metric(
    crops: np.ndarray,  # [N, CROP_PX, CROP_PX, 3] uint8, from `region_crop`
    groups: np.ndarray,  # [N] which thumbnail each render shows
    *,
    channels: int = 16,
    epochs: int = 12,
    seed: int = 0,
    progress: bool = False,
) -> dict[str, np.ndarray]:
    """Train the CNN (AdamW, one-cycle LR 3e-3, batch 128), seeded: a minute or two of one
    CPU core for the world's 7,986 renders. Returns its weights as `cnn.*` arrays."""
    import torch
    import torch.nn.functional as F

    x = _as_tensor(crops)
    _, inverse = np.unique(groups, return_inverse=True)
    y = torch.tensor(inverse, dtype=torch.long)
    generator = torch.Generator().manual_seed(seed)
    batch = min(128, len(x))
    steps_per_epoch = max(1, len(x) // batch)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        net = _network(channels)
        head = torch.nn.Parameter(torch.randn(int(inverse.max()) + 1, EMBED_DIM) * 0.1)
        optimizer = torch.optim.AdamW([*net.parameters(), head], lr=3e-3, weight_decay=1e-3)
        schedule = torch.optim.lr_scheduler.OneCycleLR(
            optimizer, 3e-3, total_steps=epochs * steps_per_epoch
        )
        net.train()
        for epoch in range(epochs):
            order = torch.randperm(len(x), generator=generator)
            for step in range(steps_per_epoch):
                rows = order[step * batch : (step + 1) * batch]
                z = F.normalize(net(_views(x[rows], generator)), dim=1)
                logits = 16.0 * z @ F.normalize(head, dim=1).T
                loss = F.cross_entropy(logits, y[rows])
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                schedule.step()
            if progress:
                print(f"image index: cnn epoch {epoch + 1}/{epochs}, loss {loss.item():.2f}")
    arrays = {f"cnn.{k}": v.detach().numpy().copy() for k, v in net.state_dict().items()}
    arrays["cnn_channels"] = np.asarray(channels)
    return arrays


def load_cnn_metric(arrays: dict[str, np.ndarray]):
    """The network (eval mode) from `fit_cnn_metric`'s arrays; built once per index."""
    import torch

    net = _network(int(arrays["cnn_channels"]))
    net.load_state_dict({k[4:]: torch.tensor(v) for k, v in arrays.items() if k[:4] == "cnn."})
    return net.eval()


def apply_cnn_metric(crops: np.ndarray, net) -> np.ndarray:
    """[N, EMBED_DIM] L2-normalised embeddings of `region_crop` outputs."""
    import torch
    import torch.nn.functional as F

    out = [np.zeros((0, EMBED_DIM), np.float32)]
    with torch.inference_mode():
        for start in range(0, len(crops), 512):
            z = net(_views(_as_tensor(crops[start : start + 512])))
            out.append(F.normalize(z, dim=1).numpy())
    return np.concatenate(out).astype(np.float32)
