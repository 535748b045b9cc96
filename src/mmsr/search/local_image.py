"""Local image search: a FAISS inner-product index over the world's page thumbnails.

One page per thumbnail is returned (the entity's main page, whose thumbnail is its flag).
The index renders, for every thumbnail, its clean image and `n_augment` degraded photo-like
versions (`mmsr.world.photo.degrade_flag`, fixed seeds). Those groups serve twice:

1. they fit a linear metric (`mmsr.search.projection`, Fisher LDA over the descriptor): the
   directions that stay put when a photo degrades a thumbnail and that still tell
   thumbnails apart; descriptors are mapped into it;
2. each page is then one vector, the centroid of its renders in that space, so a query
   photo is compared with what a thumbnail looks like "on average as a photo".

With `project_dim=0` (or a corpus too small to fit a metric) the raw descriptors of all
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

from mmsr.search.encoders import ImageEncoder, make_encoder, to_rgb
from mmsr.search.errors import BadRequest
from mmsr.search.index_cache import content_key, load_arrays, save_arrays
from mmsr.search.projection import fit_lda, group_centroids, project
from mmsr.search.types import SearchResult

INDEX_VERSION = 2  # bump when the build procedure changes
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
                snippet=" ".join(page.text[:300].split()),
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
        ThumbnailPage(
            p.title, p.url, " ".join(p.text[:300].split()), p.thumbnail_path, thumbnail=p.thumbnail
        )
        for p in load_corpus(path)
        if p.thumbnail_path
    ]


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
        n_augment: int = 16,
        project_dim: int = 64,
        seed: int = 0,
        use_cache: bool = True,
        progress: bool = True,
    ):
        import faiss

        self.pages = pages if pages is not None else world_thumbnail_pages()
        if not self.pages:
            raise ValueError("local image search: no pages with a thumbnail to index")
        self.encoder = encoder or make_encoder("colorlayout")
        self.n_augment = n_augment
        self.seed = seed
        projected = project_dim > 0 and n_augment > 0 and len(self.pages) >= MIN_PAGES_TO_PROJECT
        self.project_dim = project_dim if projected else 0
        thumbs = [_read_image(p.image_path) for p in self.pages]
        self.key = content_key(
            "image-index",
            INDEX_VERSION,
            self.encoder.name,
            n_augment,
            self.project_dim,
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
        self.lda_mean = cached.get("lda_mean")  # [D] or None
        self.lda_matrix = cached.get("lda_matrix")  # [D, d] or None
        self.index = faiss.IndexFlatIP(int(vectors.shape[1]))
        self.index.add(np.ascontiguousarray(vectors, dtype=np.float32))

    @classmethod
    def from_config(cls, config) -> LocalImageBackend:
        spec = getattr(config, "image_encoder", "colorlayout")
        n_augment = getattr(config, "image_index_augment", 16)
        project_dim = getattr(config, "image_project_dim", 64)
        corpus = getattr(config, "local_pages", "")
        pages = corpus_thumbnail_pages(corpus) if corpus else None
        return cls(pages, encoder=make_encoder(spec), n_augment=n_augment, project_dim=project_dim)

    def _build(self, thumbs: list[bytes], progress: bool) -> dict[str, np.ndarray]:
        from rich.progress import track

        from mmsr.world.photo import degrade_flag

        images, owner = [], []
        steps = enumerate(thumbs)
        if progress:
            steps = track(steps, total=len(thumbs), description="image index: rendering")
        for i, data in steps:
            clean = Image.open(io.BytesIO(data)).convert("RGBA")
            images.append(to_rgb(clean))
            owner.append(i)
            rng = np.random.default_rng([self.seed, 7919, i])
            for _ in range(self.n_augment):
                images.append(degrade_flag(clean, rng))
                owner.append(i)
        vectors = self.encoder.encode(images).astype(np.float32)
        owner = np.asarray(owner, dtype=np.int64)
        if not self.project_dim:
            return {"vectors": vectors, "owner": owner}
        mean, matrix = fit_lda(vectors, owner, self.project_dim)
        centroids = group_centroids(project(vectors, mean, matrix), owner, len(thumbs))
        return {
            "vectors": centroids,
            "owner": np.arange(len(thumbs), dtype=np.int64),
            "lda_mean": mean,
            "lda_matrix": matrix,
        }

    def encode_bytes(self, image: bytes) -> np.ndarray:
        try:
            img = Image.open(io.BytesIO(image))
            img.load()
        except (UnidentifiedImageError, OSError) as err:
            raise BadRequest(f"image search: the image cannot be decoded ({err})") from err
        vector = self.encoder.encode([img]).astype(np.float32)
        if self.lda_matrix is not None:
            vector = project(vector, self.lda_mean, self.lda_matrix)
        return vector

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
