"""Local image search: a FAISS inner-product index over the world's page thumbnails.

One page per thumbnail is returned (the entity's main page, whose thumbnail is its flag).
The index renders, for every thumbnail, its clean image and `n_augment` degraded photo-like
versions (`mmsr.world.photo.degrade_flag`, fixed seeds). Those groups serve twice:

1. they fit a metric (`mmsr.search.projection`): a small network (`metric="mlp"`, what
   `"auto"` picks when there are enough renders, as for the world) or Fisher LDA
   (`"lda"`, for small corpora) over the descriptor, learned from nothing but which
   thumbnail each render shows: what stays put when a photo degrades a thumbnail and still
   tells thumbnails apart; descriptors are mapped into it;
2. each page is then one vector, the centroid of its renders in that space, so a query
   photo is compared with what a thumbnail looks like "on average as a photo".

With `metric="none"` (or a corpus too small to fit a metric) the raw descriptors of all
renders are indexed instead and hits are aggregated per page (best vector wins).

The vectors are cached on disk (`index_cache`) under a key of the thumbnails' bytes, the
encoder name and the augmentation settings; `cache_id` carries the same key so the search
result cache changes when the index does.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from mmsr.search.cnn_metric import (
    CNN_WEIGHT,
    apply_cnn_metric,
    fit_cnn_metric,
    load_cnn_metric,
    region_crop,
)
from mmsr.search.config import IMAGE_METRICS, SearchConfig
from mmsr.search.encoders import ImageEncoder, make_encoder, to_rgb
from mmsr.search.errors import BadRequest
from mmsr.search.index_cache import content_key, load_arrays, save_arrays
from mmsr.search.projection import (
    apply_mlp_metric,
    fit_lda,
    fit_mlp_metric,
    group_centroids,
    project,
)
from mmsr.search.types import SearchResult

INDEX_VERSION = 3  # bump when the build procedure changes
# The network needs many renders to beat LDA (world: 241 thumbnails x 33 renders); on a
# small corpus it overfits where LDA's closed form does not.
MLP_MIN_RENDERS = 4000
MIN_PAGES_TO_PROJECT = 8  # fewer thumbnails cannot estimate a metric


@dataclass
class ThumbnailPage:
    """One indexed page: what a hit returns."""

    title: str
    url: str
    snippet: str
    image_path: str  # local file that is indexed
    thumbnail: str = ""  # what a hit reports (portable: `world://...`); default image_path
    entity: str = ""

    def __post_init__(self) -> None:
        self.thumbnail = self.thumbnail or self.image_path


def world_thumbnail_pages(world=None, entity_ids: list[str] | None = None) -> list[ThumbnailPage]:
    """Pages of the embedded world that have a thumbnail (optionally of some entities)."""
    from mmsr.world.load import load_world

    world = world or load_world()
    keep = set(entity_ids) if entity_ids is not None else None
    pages = []
    for page in world.pages:
        if not page.thumbnail or (keep is not None and page.entity not in keep):
            continue
        pages.append(
            ThumbnailPage(
                title=page.title,
                url=page.url,
                snippet=_snippet(page.text),
                image_path=str(world.asset(page.thumbnail)),
                # A world:// URL resolves on any machine with mmsr (a server's client too).
                thumbnail=f"world://{page.thumbnail}",
                entity=page.entity,
            )
        )
    return pages


def corpus_thumbnail_pages(path: str | Path) -> list[ThumbnailPage]:
    """Pages with a thumbnail from a user corpus (JSONL, see `mmsr.search.corpus`)."""
    from mmsr.search.corpus import load_corpus

    return [
        ThumbnailPage(p.title, p.url, _snippet(p.text), p.thumbnail_path, thumbnail=p.thumbnail)
        for p in load_corpus(path)
        if p.thumbnail_path
    ]


def _snippet(text: str) -> str:
    """What an image hit shows of its page: the opening, whitespace collapsed."""
    return " ".join(text[:300].split())


def _read_image(path: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as err:
        raise ValueError(f"local image search: cannot read thumbnail {path}: {err}") from err


class LocalImageBackend:
    """Image search over local thumbnails. `search(image_bytes, k)` -> pages, best first."""

    name = "local"

    def __init__(
        self,
        pages: list[ThumbnailPage] | None = None,
        *,
        encoder: ImageEncoder | None = None,
        n_augment: int = SearchConfig.image_index_augment,
        project_dim: int = 64,
        metric: str = "auto",
        seed: int = 0,
        use_cache: bool = True,
        progress: bool = True,
    ):
        import faiss

        self.pages = pages if pages is not None else world_thumbnail_pages()
        if not self.pages:
            raise ValueError("local image search: no pages with a thumbnail to index")
        self.encoder = encoder or make_encoder("colorlayout")
        if metric not in IMAGE_METRICS:
            raise ValueError(
                f"local image search: metric {metric!r}, expected one of {IMAGE_METRICS}"
            )
        self.n_augment = n_augment
        self.seed = seed
        learnable = n_augment > 0 and len(self.pages) >= MIN_PAGES_TO_PROJECT
        if metric == "auto":
            many = len(self.pages) * (n_augment + 1) >= MLP_MIN_RENDERS
            metric = "mlp+cnn" if many else "lda"
        self.metric = metric if learnable and project_dim > 0 else "none"
        self.project_dim = project_dim if self.metric != "none" else 0
        thumbs = [_read_image(p.image_path) for p in self.pages]
        self.key = content_key(
            "image-index",
            INDEX_VERSION,
            self.encoder.name,
            n_augment,
            self.metric,
            self.project_dim,
            CNN_WEIGHT,  # the stored centroids carry it
            seed,
            [p.url for p in self.pages],
            *thumbs,
        )
        self.cache_id = f"local-image:{self.key[:16]}"
        cached = load_arrays("image", self.key) if use_cache else None
        if cached is None:
            cached = self._build(thumbs, progress)
            if use_cache:
                save_arrays("image", self.key, cached)
        vectors = cached["vectors"]
        self.owner = cached["owner"].astype(np.int64)  # [n_vectors] index into self.pages
        # The learned metric's arrays (lda_* or mlp_*), empty without one.
        self.metric_arrays = {k: v for k, v in cached.items() if k not in ("vectors", "owner")}
        self._cnn = load_cnn_metric(self.metric_arrays) if "cnn_channels" in cached else None
        self.index = faiss.IndexFlatIP(int(vectors.shape[1]))
        self.index.add(np.ascontiguousarray(vectors, dtype=np.float32))

    @classmethod
    def from_config(cls, config) -> LocalImageBackend:
        spec = getattr(config, "image_encoder", "colorlayout")
        corpus = getattr(config, "local_pages", "")
        pages = corpus_thumbnail_pages(corpus) if corpus else None
        return cls(
            pages,
            encoder=make_encoder(spec),
            n_augment=getattr(config, "image_index_augment", SearchConfig.image_index_augment),
            project_dim=getattr(config, "image_project_dim", 64),
            metric=getattr(config, "image_metric", "auto"),
        )

    def _build(self, thumbs: list[bytes], progress: bool) -> dict[str, np.ndarray]:
        from rich.progress import track

        from mmsr.world.photo import degrade_flag

        blocks, owner, crops = [], [], []
        use_cnn = self.metric == "mlp+cnn"
        steps = enumerate(thumbs)
        if progress:
            steps = track(steps, total=len(thumbs), description="image index: rendering + encoding")
        for i, data in steps:
            clean = Image.open(io.BytesIO(data)).convert("RGBA")
            rng = np.random.default_rng([self.seed, 7919, i])
            renders = [to_rgb(clean), *(degrade_flag(clean, rng) for _ in range(self.n_augment))]
            # Encoded per thumbnail: the progress bar covers the whole cost, and only one
            # thumbnail's renders are held in memory at a time.
            vectors, boxes = self._encode(renders)
            blocks.append(vectors)
            owner.extend([i] * len(renders))
            if use_cnn:
                crops.extend(region_crop(r, box) for r, box in zip(renders, boxes, strict=True))
        vectors = np.concatenate(blocks)
        owner = np.asarray(owner, dtype=np.int64)
        if self.metric == "none":
            return {"vectors": vectors, "owner": owner}
        if progress:
            from rich.console import Console

            Console(stderr=True).print(
                f"image index: learning the {self.metric} metric from {len(vectors)} renders"
            )
        if self.metric == "lda":
            mean, matrix = fit_lda(vectors, owner, self.project_dim)
            arrays = {"lda_mean": mean, "lda_matrix": matrix}
        else:
            arrays = fit_mlp_metric(vectors, owner, self.project_dim, seed=self.seed)
        centroids = group_centroids(self._apply_metric(vectors, arrays), owner, len(thumbs))
        if use_cnn:
            crop_array = np.stack(crops)
            arrays |= fit_cnn_metric(crop_array, owner, seed=self.seed, progress=progress)
            cnn = apply_cnn_metric(crop_array, load_cnn_metric(arrays))
            centroids = self._fuse(centroids, group_centroids(cnn, owner, len(thumbs)))
        return {"vectors": centroids, "owner": np.arange(len(thumbs), dtype=np.int64), **arrays}

    def _encode(self, images: list[Image.Image]) -> tuple[np.ndarray, list | None]:
        """Descriptors, and the flag boxes when the encoder estimates them anyway."""
        with_boxes = getattr(self.encoder, "encode_with_boxes", None)
        if with_boxes is not None:
            vectors, boxes = with_boxes(images)
        else:
            vectors, boxes = self.encoder.encode(images), [None] * len(images)
        return vectors.astype(np.float32), boxes

    @staticmethod
    def _fuse(mlp: np.ndarray, cnn: np.ndarray) -> np.ndarray:
        """One vector per image whose inner products are s_mlp + CNN_WEIGHT * s_cnn: the
        FAISS index then scores both metrics at once."""
        return np.hstack([mlp, np.sqrt(CNN_WEIGHT) * cnn]).astype(np.float32)

    @staticmethod
    def _apply_metric(vectors: np.ndarray, arrays: dict[str, np.ndarray]) -> np.ndarray:
        if "lda_matrix" in arrays:
            return project(vectors, arrays["lda_mean"], arrays["lda_matrix"])
        if "mlp_w1" in arrays:
            return apply_mlp_metric(vectors, arrays)
        return vectors

    def encode_bytes(self, image: bytes) -> np.ndarray:
        try:
            img = Image.open(io.BytesIO(image))
            img.load()
        except (UnidentifiedImageError, OSError) as err:
            raise BadRequest(f"image search: the image cannot be decoded ({err})") from err
        vectors, boxes = self._encode([img])
        query = self._apply_metric(vectors, self.metric_arrays)
        if self._cnn is None:
            return query
        return self._fuse(query, apply_cnn_metric(region_crop(img, boxes[0])[None], self._cnn))

    def search(self, image: bytes, k: int = 5) -> list[SearchResult]:
        return self.search_vector(self.encode_bytes(image), k)

    def search_vector(self, vector: np.ndarray, k: int = 5) -> list[SearchResult]:
        """Top-k pages for one encoded query [1, dim]."""
        # Several vectors per page: ask for enough neighbours to fill k distinct pages.
        per_page = max(1, self.index.ntotal // len(self.pages))
        depth = min(self.index.ntotal, k * per_page * 4)
        scores, ids = self.index.search(np.ascontiguousarray(vector), depth)
        best: dict[int, float] = {}
        for score, idx in zip(scores[0], ids[0], strict=True):
            if idx < 0:
                continue
            page = int(self.owner[idx])
            if page not in best:
                best[page] = float(score)
            if len(best) >= k:
                break
        return [
            SearchResult(
                title=self.pages[p].title,
                url=self.pages[p].url,
                snippet=self.pages[p].snippet,
                thumbnail=self.pages[p].thumbnail,
                score=score,
            )
            for p, score in best.items()
        ]
