"""Local backends: the image index over thumbnails, hybrid text retrieval, user corpora."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
from PIL import Image

from mmsr.search.cnn_metric import (
    EMBED_DIM,
    apply_cnn_metric,
    fit_cnn_metric,
    load_cnn_metric,
    region_crop,
)
from mmsr.search.config import SearchConfig
from mmsr.search.corpus import load_corpus
from mmsr.search.encoders import ColorLayoutEncoder, TinyPixelsEncoder, make_encoder
from mmsr.search.errors import BadRequest
from mmsr.search.index_cache import index_dir
from mmsr.search.local_image import LocalImageBackend, world_thumbnail_pages
from mmsr.search.local_text import LocalTextBackend, chunk_page, world_text_pages
from mmsr.search.projection import (
    apply_mlp_metric,
    fit_lda,
    fit_mlp_metric,
    group_centroids,
    project,
)
from mmsr.search.tools import ImageSearchTool, make_tools
from mmsr.world.load import load_world
from mmsr.world.photo import degrade_flag

# Distinct, well-known flags (no look-alikes among them).
ENTITIES = ["fr", "de", "jp", "br", "ke", "ca", "in", "za", "mx", "se", "gr", "kr"]


def png_bytes(image: Image.Image) -> bytes:
    out = io.BytesIO()
    image.convert("RGB").save(out, format="PNG")
    return out.getvalue()


@pytest.fixture(scope="module")
def image_backend():
    return LocalImageBackend(
        world_thumbnail_pages(entity_ids=ENTITIES), n_augment=2, progress=False
    )


def test_encoders_give_unit_vectors_of_their_dim():
    images = [Image.new("RGB", (40, 30), (200, 10, 10)), Image.open(load_world().flag_path("fr"))]
    for encoder in (ColorLayoutEncoder(), TinyPixelsEncoder()):
        vectors = encoder.encode(images)
        assert vectors.shape == (2, encoder.dim) and vectors.dtype == np.float32
        assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    with pytest.raises(ValueError, match="image_encoder 'sift'"):
        make_encoder("sift")
    with pytest.raises(FileNotFoundError, match="no model folder"):
        make_encoder("siglip:/nonexistent/siglip")


def test_degraded_photos_find_their_flag(image_backend):
    world = load_world()
    hits = 0
    for i, entity in enumerate(ENTITIES):
        flag = Image.open(world.flag_path(entity)).convert("RGBA")
        photo = degrade_flag(flag, np.random.default_rng([12345, i]))  # not an index render
        results = image_backend.search(png_bytes(photo), k=5)
        assert len(results) == 5 and len({r.url for r in results}) == 5  # one hit per page
        assert all(a.score >= b.score for a, b in zip(results, results[1:], strict=False))
        hits += results[0].url == f"world://factbook/{world.entity(entity).fips}/overview"
    assert hits >= len(ENTITIES) - 1
    top = image_backend.search(png_bytes(Image.open(world.flag_path("jp"))), k=1)[0]
    assert top.thumbnail == "world://flags/jp.png" and top.title == "Japan — Overview"


def test_undecodable_image_is_a_bad_request(image_backend):
    with pytest.raises(BadRequest, match="cannot be decoded"):
        image_backend.search(b"not an image at all", k=5)
    response = ImageSearchTool(image_backend).search(b"garbage", k=3)
    assert response.results == [] and response.extra["error_type"] == "BadRequest"


def test_image_index_is_cached_by_content(image_backend):
    files = sorted(index_dir().glob("image-*.npz"))
    assert files, "the built index was not saved"
    again = LocalImageBackend(
        world_thumbnail_pages(entity_ids=ENTITIES), n_augment=2, progress=False
    )
    assert again.cache_id == image_backend.cache_id
    # With a learned metric every page is one centroid; the metric is cached too.
    assert again.index.ntotal == image_backend.index.ntotal == len(ENTITIES)
    assert set(again.metric_arrays) == set(image_backend.metric_arrays) > set()
    for name, array in again.metric_arrays.items():
        assert np.array_equal(array, image_backend.metric_arrays[name])
    raw = LocalImageBackend(
        world_thumbnail_pages(entity_ids=ENTITIES), n_augment=2, metric="none", progress=False
    )
    assert raw.cache_id != image_backend.cache_id and raw.index.ntotal == len(ENTITIES) * 3
    lda = LocalImageBackend(
        world_thumbnail_pages(entity_ids=ENTITIES), n_augment=2, metric="lda", progress=False
    )
    assert "lda_matrix" in lda.metric_arrays  # what "auto" picks for a small corpus
    assert lda.cache_id == image_backend.cache_id
    mlp = LocalImageBackend(
        world_thumbnail_pages(entity_ids=ENTITIES), n_augment=2, metric="mlp", progress=False
    )
    assert "mlp_w1" in mlp.metric_arrays and mlp.cache_id != image_backend.cache_id
    assert len(mlp.search(png_bytes(Image.open(load_world().flag_path("jp"))), k=3)) == 3
    # The world's default ("auto" on 4,000+ renders): MLP and CNN scores in one vector each.
    fused = LocalImageBackend(
        world_thumbnail_pages(entity_ids=ENTITIES), n_augment=2, metric="mlp+cnn", progress=False
    )
    assert "cnn_channels" in fused.metric_arrays and "mlp_w1" in fused.metric_arrays
    assert fused.index.d == 64 + EMBED_DIM and fused.cache_id != mlp.cache_id
    top = fused.search(png_bytes(Image.open(load_world().flag_path("jp"))), k=3)
    assert len(top) == 3 and top[0].title == "Japan — Overview"
    with pytest.raises(ValueError, match="metric 'knn'"):
        LocalImageBackend(world_thumbnail_pages(entity_ids=ENTITIES), metric="knn")
    # Too few thumbnails to fit a metric: raw vectors of every render, still searchable.
    fewer = LocalImageBackend(
        world_thumbnail_pages(entity_ids=ENTITIES[:3]), n_augment=2, progress=False
    )
    assert fewer.metric_arrays == {} and fewer.index.ntotal == 9
    assert (
        fewer.search(png_bytes(Image.open(load_world().flag_path("de"))), k=5)[0].title
        == "Germany — Overview"
    )


def test_mlp_metric_separates_groups_and_runs_without_torch():
    rng = np.random.default_rng(1)
    centres = rng.normal(0, 1, (5, 8))
    groups = np.repeat(np.arange(5), 40)
    vectors = (centres[groups] + rng.normal(0, 0.3, (200, 8))).astype(np.float32)
    arrays = fit_mlp_metric(vectors, groups, dim=4, hidden=16, epochs=30)
    mapped = apply_mlp_metric(vectors, arrays)  # numpy only
    assert mapped.shape == (200, 4) and np.allclose(np.linalg.norm(mapped, axis=1), 1, atol=1e-5)
    centroids = group_centroids(mapped, groups, 5)
    assert ((mapped @ centroids.T).argmax(1) == groups).mean() > 0.95
    again = fit_mlp_metric(vectors, groups, dim=4, hidden=16, epochs=30)
    assert all(np.array_equal(again[k], arrays[k]) for k in arrays)  # seeded


def test_cnn_metric_separates_groups_and_is_seeded():
    # Four "flags": two-colour patterns that differ in where the colours sit.
    rng = np.random.default_rng(0)
    base = np.zeros((4, 40, 40, 3), np.float32)
    base[0, :20], base[0, 20:] = (220, 30, 30), (240, 240, 240)  # red over white
    base[1, :20], base[1, 20:] = (240, 240, 240), (220, 30, 30)  # white over red
    base[2, :, :20], base[2, :, 20:] = (30, 30, 200), (240, 200, 0)  # blue | yellow
    base[3, :, :20], base[3, :, 20:] = (240, 200, 0), (30, 30, 200)  # yellow | blue
    groups = np.repeat(np.arange(4), 16)
    crops = np.clip(base[groups] + rng.normal(0, 20, (64, 40, 40, 3)), 0, 255).astype(np.uint8)
    arrays = fit_cnn_metric(crops, groups, channels=4, epochs=6)
    mapped = apply_cnn_metric(crops, load_cnn_metric(arrays))
    assert mapped.shape == (64, EMBED_DIM)
    assert np.allclose(np.linalg.norm(mapped, axis=1), 1, atol=1e-5)
    centroids = group_centroids(mapped, groups, 4)
    assert ((mapped @ centroids.T).argmax(1) == groups).mean() > 0.9
    again = fit_cnn_metric(crops, groups, channels=4, epochs=6)
    assert all(np.array_equal(again[k], arrays[k]) for k in arrays)  # seeded
    # The crop is the flag region, found on a plain background.
    canvas = Image.new("RGB", (200, 150), (90, 150, 230))
    canvas.paste(Image.new("RGB", (80, 50), (220, 30, 30)), (60, 50))
    crop = region_crop(canvas)
    assert crop.shape == (40, 40, 3) and tuple(crop[20, 20]) == (220, 30, 30)


def test_lda_keeps_the_direction_that_separates_groups():
    rng = np.random.default_rng(0)
    groups = np.repeat(np.arange(6), 50)
    # Groups differ along x only; within a group the noise is 10x larger along y.
    x = groups * 1.0 + rng.normal(0, 0.1, len(groups))
    y = rng.normal(0, 1.0, len(groups))
    vectors = np.stack([x, y], axis=1).astype(np.float32)
    mean, matrix = fit_lda(vectors, groups, dim=1)
    assert matrix.shape == (2, 1)
    direction = matrix[:, 0] / np.linalg.norm(matrix[:, 0])
    assert abs(direction[0]) > 0.99  # the x axis, not the noisy y axis
    projected = project(vectors, mean, matrix)
    assert np.allclose(np.abs(projected), 1.0, atol=1e-6)  # 1-D: unit vectors are +-1
    centroids = group_centroids(vectors, groups, 6)
    assert centroids.shape == (6, 2) and np.allclose(np.linalg.norm(centroids, axis=1), 1)
    with pytest.raises(ValueError, match="two groups"):
        fit_lda(vectors[:50], groups[:50], dim=1)


def test_chunks_keep_whole_paragraphs():
    text = "Capital: Paris\n\nCurrency: euro\n" + "Long: " + "x" * 600 + "\nTail: end"
    chunks = chunk_page(text, chunk_chars=40)
    assert chunks[0] == "Capital: Paris Currency: euro"
    assert chunks[1].startswith("Long: ") and len(chunks[1]) > 40  # never split inside
    assert chunks[2] == "Tail: end"


@pytest.fixture(scope="module")
def bm25_backend():
    return LocalTextBackend(world_text_pages(entity_ids=ENTITIES), mode="bm25", progress=False)


def test_bm25_finds_the_page_with_the_fact(bm25_backend):
    results = bm25_backend.search("Kenya currency", k=5)
    assert results[0].title.startswith("Kenya")
    assert any("shilling" in r.snippet.lower() for r in results)
    assert len({r.url for r in results}) == len(results) <= 5
    assert bm25_backend.search("zzqx unknownword", k=5) == []
    assert "Nairobi" in bm25_backend.page_text("world://factbook/ke/overview")
    with pytest.raises(KeyError, match="no page"):
        bm25_backend.page_text("world://factbook/zz/overview")


def test_hybrid_fuses_dense_and_bm25():
    pages = world_text_pages(entity_ids=["ke", "jp"])
    hybrid = LocalTextBackend(pages, mode="hybrid", progress=False)
    # "money" never occurs on the pages: only the dense retriever can connect it.
    dense_only = LocalTextBackend(pages, mode="dense", encoder=hybrid.encoder, progress=False)
    top = dense_only.search("What money do people pay with in Japan?", k=3)
    assert top[0].title.startswith("Japan")
    fused = hybrid.rank_chunks("Japan yen currency")
    assert all(a[1] >= b[1] for a, b in zip(fused, fused[1:], strict=False))
    # A chunk ranked first by both retrievers gets the largest possible fused score.
    assert fused[0][1] <= 2 / 61 + 1e-12
    assert hybrid.cache_id != dense_only.cache_id
    with pytest.raises(ValueError, match="mode 'sparse'"):
        LocalTextBackend(pages, mode="sparse")


def test_user_corpus_drives_both_local_tools(tmp_path):
    flag = load_world().flag_path("ke")
    (tmp_path / "img").mkdir()
    (tmp_path / "img" / "ke.png").write_bytes(flag.read_bytes())
    rows = [
        {
            "url": "https://ex.org/ke",
            "title": "Kenya notes",
            "text": "Kenya pays in shillings.",
            "thumbnail": "img/ke.png",
        },
        {"url": "https://ex.org/jp", "title": "Japan notes", "text": "Japan pays in yen."},
    ]
    corpus = tmp_path / "pages.jsonl"
    corpus.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    config = SearchConfig(
        local_pages=str(corpus), text_dense=False, cache=False, image_index_augment=1
    )
    tools = make_tools(config)
    text = tools.text.search("yen", k=5)
    assert [r.url for r in text.results] == ["https://ex.org/jp"]
    # Read from the corpus (its https URLs are never fetched), not from the world.
    assert text.results[0].summary == "Japan pays in yen." and "page_errors" not in text.extra
    image = tools.image.search(flag.read_bytes(), k=5)
    assert [r.url for r in image.results] == ["https://ex.org/ke"]
    assert image.results[0].thumbnail == str((tmp_path / "img" / "ke.png").resolve())
    tools.close()


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("{not json", "not valid JSON"),
        ('{"url": "u", "title": "t"}', "`text` must be a non-empty string"),
        (
            '{"url": "u", "title": "t", "text": "x", "thumbnail": "missing.png"}',
            "thumbnail file not found",
        ),
        ("[1, 2]", "expected a JSON object"),
    ],
)
def test_bad_corpus_lines_are_named(tmp_path, line, message):
    corpus = tmp_path / "pages.jsonl"
    corpus.write_text('{"url": "a", "title": "A", "text": "fine"}\n' + line + "\n")
    with pytest.raises(ValueError, match=f"pages.jsonl:2: .*{message}"):
        load_corpus(corpus)


def test_duplicate_and_empty_corpora_are_refused(tmp_path):
    corpus = tmp_path / "pages.jsonl"
    corpus.write_text('{"url": "a", "title": "A", "text": "x"}\n' * 2)
    with pytest.raises(ValueError, match="already on line 1"):
        load_corpus(corpus)
    corpus.write_text("\n")
    with pytest.raises(ValueError, match="no pages"):
        load_corpus(corpus)
    with pytest.raises(FileNotFoundError, match="corpus not found"):
        load_corpus(tmp_path / "nope.jsonl")
