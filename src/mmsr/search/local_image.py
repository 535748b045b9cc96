"""Local image search: a FAISS inner-product index over the world's page thumbnails.

One page per thumbnail is returned (the entity's main page, whose thumbnail is its flag).
The index holds, for every thumbnail, its clean render and `n_augment` degraded photo-like
renders (`mmsr.world.photo.degrade_flag`, fixed seeds): a query photo then meets stored
vectors that went through the same kinds of degradation, which is how a real image search
engine makes a descriptor robust. Hits are aggregated per page (best vector wins).

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
from mmsr.search.types import SearchResult

INDEX_VERSION = 1  # bump when the build procedure changes


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
        ThumbnailPage(p.title, p.url, " ".join(p.text[:300].split()), p.thumbnail_path,
                      thumbnail=p.thumbnail)
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
        n_augment: int = 4,
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
        thumbs = [_read_image(p.image_path) for p in self.pages]
        self.key = content_key(
            "image-index",
            INDEX_VERSION,
            self.encoder.name,
            n_augment,
            seed,
            [p.url for p in self.pages],
            *thumbs,
        )
        self.cache_id = f"local-image:{self.key[:16]}"
        cached = load_arrays("image", self.key) if use_cache else None
        if cached is not None:
            vectors, owner = cached["vectors"], cached["owner"]
        else:
            vectors, owner = self._build(thumbs, progress)
            if use_cache:
                save_arrays("image", self.key, {"vectors": vectors, "owner": owner})
        self.owner = owner.astype(np.int64)  # [n_vectors] index into self.pages
        self.index = faiss.IndexFlatIP(int(vectors.shape[1]))
        self.index.add(np.ascontiguousarray(vectors, dtype=np.float32))

    @classmethod
    def from_config(cls, config) -> LocalImageBackend:
        spec = getattr(config, "image_encoder", "colorlayout")
        n_augment = getattr(config, "image_index_augment", 4)
        corpus = getattr(config, "local_pages", "")
        pages = corpus_thumbnail_pages(corpus) if corpus else None
        return cls(pages, encoder=make_encoder(spec), n_augment=n_augment)

    def _build(self, thumbs: list[bytes], progress: bool) -> tuple[np.ndarray, np.ndarray]:
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
        return vectors, np.asarray(owner, dtype=np.int64)

    def encode_bytes(self, image: bytes) -> np.ndarray:
        try:
            img = Image.open(io.BytesIO(image))
            img.load()
        except (UnidentifiedImageError, OSError) as err:
            raise BadRequest(f"image search: the image cannot be decoded ({err})") from err
        return self.encoder.encode([img]).astype(np.float32)

    def search(self, image: bytes, k: int = 5) -> list[SearchResult]:
        return self.search_vector(self.encode_bytes(image), k)

    def search_vector(self, vector: np.ndarray, k: int = 5) -> list[SearchResult]:
        """Top-k pages for one encoded query [1, dim]."""
        # Several vectors per page: ask for enough neighbours to fill k distinct pages.
        depth = min(self.index.ntotal, k * (self.n_augment + 1) * 4)
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
