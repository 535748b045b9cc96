"""Local search quality and latency on the embedded world, each beside its baseline.

    python bench/search_quality.py                   # everything (~3 min with built indexes)
    python bench/search_quality.py --photos 2 --text-limit 400 --threads 1

Image search: fresh degraded photos (`degrade_flag`, a seed stream used by neither the
question images nor the index's own renders) of every entity that questions ask about;
recall@1 / @5 = the entity's main page is the first / among the first five hits;
look-alike@1 also accepts a page whose flag is the same image (the world's look-alike
groups: nothing in the pixels tells them apart). The default (`colorlayout` descriptor +
the MLP + CNN metric learned from the index's renders) is measured beside the same
descriptor with the MLP alone, the LDA metric and none, and the naive `tinypixels`
baseline (+ MLP), on the same photos (`--only-default`: the default alone).

Text search: paraphrased factual questions that name the country (the second hop after
the image search), worded unlike the world's question templates; a hit counts when the
gold answer or an alias (normalised as the reward does) appears in what the model would
read: the top-5 results' titles and summaries from the full text tool (retrieval, page
reading, extractive summary). Hybrid (BM25 + MiniLM, RRF) beside BM25 alone.

Latency: per query, uncached, in-process, through the tools (`ImageSearchTool.search`
with decoding + encoding + FAISS; `TextSearchTool.search` with retrieval + reading +
summarising); p50 and p90 in ms.
"""

from __future__ import annotations

import argparse
import io
import random
import statistics
import time

import numpy as np
from PIL import Image

from mmsr.reward import normalize_answer
from mmsr.rollout.engine import EngineConfig
from mmsr.search.config import SearchConfig
from mmsr.search.cost import CostMeter
from mmsr.search.encoders import make_encoder
from mmsr.search.local_image import LocalImageBackend
from mmsr.search.local_text import LocalTextBackend
from mmsr.search.tools import ImageSearchTool, TextSearchTool, make_pipeline
from mmsr.world.load import load_world
from mmsr.world.photo import degrade_flag

PHOTO_STREAM = 424242  # seed stream of the benchmark photos (questions and index use others)

# Our own rewordings, two or three per type; none repeats a world question template.
PARAPHRASES = {
    "capital": [
        "Which city is the seat of government of {name}?",
        "Name the capital city of {name}.",
        "Where is the national government of {name} based?",
    ],
    "currency": [
        "What money do people in {name} pay with?",
        "Which currency does {name} use?",
        "What is the legal tender of {name}?",
    ],
    "internet_code": [
        "Which top-level domain do websites from {name} end in?",
        "What is the country code TLD of {name}?",
    ],
    "independence": [
        "When did {name} gain its independence?",
        "In which year was {name} granted independence?",
    ],
    "official_language": [
        "What language is officially spoken in {name}?",
        "Which languages have official status in {name}?",
    ],
    "continent": [
        "Which part of the world is {name} located in?",
        "{name} lies on which continent?",
    ],
    "anthem": [
        "What is the national song of {name} called?",
        "Name the national anthem of {name}.",
    ],
    "highest_point": [
        "What is the tallest mountain or highest elevation in {name}?",
        "Which peak is the highest in {name}?",
    ],
    "largest_city": [
        "Which is the biggest city in {name}?",
        "What is the most populous urban area of {name}?",
    ],
}


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q)) if values else float("nan")


def png(image: Image.Image) -> bytes:
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


def bench_image(
    world, photos_per_entity: int, augment: int, metric: str, only_default: bool = False
) -> None:
    asked = [e for e in world.entities if e.asks_flag and e.flag]
    photos = []
    for i, entity in enumerate(asked):
        flag = Image.open(world.flag_path(entity.id)).convert("RGBA")
        for j in range(photos_per_entity):
            rng = np.random.default_rng([PHOTO_STREAM, i, j])
            photos.append((entity, png(degrade_flag(flag, rng))))
    print(
        f"image search: {len(photos)} fresh photos of {len(asked)} entities, "
        f"index: {augment} renders per thumbnail"
    )
    print(
        "strict: the entity's own page; look-alike: or a page whose flag is the same image "
        "(world lookalikes: Indonesia/Monaco, Chad/Romania, ...)"
    )
    print(
        f"{'encoder':26s} {'recall@1':>9s} {'look-alike@1':>12s} {'recall@5':>9s} "
        f"{'p50 ms':>8s} {'p90 ms':>8s}"
    )
    main_page = {e.id: f"world://factbook/{e.fips}/overview" for e in world.entities}
    others = [m for m in ("mlp", "lda", "none") if m != metric]
    runs = [("colorlayout", metric), *(("colorlayout", m) for m in others), ("tinypixels", "mlp")]
    if only_default:
        runs = runs[:1]
    for spec, used in runs:
        backend = LocalImageBackend(encoder=make_encoder(spec), n_augment=augment, metric=used)
        tool = ImageSearchTool(backend, cache=None, k=5)
        at1 = alike1 = at5 = 0
        latencies = []
        for entity, data in photos:
            response = tool.search(data, k=5)
            latencies.append(response.latency_ms)
            urls = [r.url for r in response.results]
            gold = main_page[entity.id]
            same = {gold, *(main_page[o] for o in entity.lookalikes if o in main_page)}
            at1 += bool(urls) and urls[0] == gold
            alike1 += bool(urls) and urls[0] in same
            at5 += gold in urls
        n = len(photos)
        label = f"{spec} ({backend.metric if backend.metric != 'none' else 'raw'})"
        print(
            f"{label:26s} {at1 / n:9.1%} {alike1 / n:12.1%} {at5 / n:9.1%} "
            f"{percentile(latencies, 50):8.1f} {percentile(latencies, 90):8.1f}",
            flush=True,
        )


def text_questions(
    world, limit: int | None, seed: int, queries: str = "paraphrase"
) -> list[tuple[str, list[str], str]]:
    """(query, golds, type) rows. `queries`: "paraphrase" (our reworded questions) or
    "keyword" ("<country> <topic>", the query the SFT scripts teach the policy to write)."""
    rng = random.Random(seed)
    rows = []
    for entity in world.entities:
        if not entity.asks_flag:
            continue
        for qtype, fact in entity.facts.items():
            if qtype not in PARAPHRASES:
                continue
            if queries == "keyword":
                question = f"{entity.name} {qtype.replace('_', ' ')}"
            else:
                question = rng.choice(PARAPHRASES[qtype]).format(name=entity.name)
            rows.append((question, [fact.answer, *fact.aliases], qtype))
    rng.shuffle(rows)
    return rows[:limit] if limit else rows


def contains_answer(texts: list[str], golds: list[str]) -> bool:
    haystack = f" {normalize_answer(' '.join(texts), fold_accents=True)} "
    return any(
        (norm := normalize_answer(g, fold_accents=True)) and f" {norm} " in haystack for g in golds
    )


def shown(result, max_chars: int | None) -> str:
    """A result as the policy reads it: title, then its text cut as the engine cuts it."""
    body = (result.summary or result.snippet).strip()
    if max_chars is not None and len(body) > max_chars:
        body = body[: max_chars - 1]
    return f"{result.title} {body}"


# (summary_order, summary_join_labels): the two earlier defaults, then today's.
SUMMARY_VARIANTS = (("page", False), ("relevance", False), ("relevance", True))


def bench_text(world, limit: int | None, seed: int, queries: str = "paraphrase") -> None:
    """Each retrieval with the summary's sentences in page order, best first, and best
    first with field labels joined to their values (the default). answer@5: in the five
    summaries; shown@5 / shown@1: in what the policy reads of the five / of the first
    result, each cut at the engine's `max_result_chars`; in pages@5: anywhere in the five
    pages."""
    questions = text_questions(world, limit, seed, queries)
    cut = EngineConfig().max_result_chars
    print(
        f"\ntext search: {len(questions)} {queries} queries, "
        f"{len({q[2] for q in questions})} types; shown = each result cut at {cut} characters"
    )
    print(
        f"{'retrieval':10s} {'summary':>16s} {'answer@5':>9s} {'shown@5':>8s} {'shown@1':>8s} "
        f"{'in pages@5':>10s} {'p50 ms':>8s} {'p90 ms':>8s}   per type (shown@1)"
    )
    for mode in ("hybrid", "bm25"):
        backend = LocalTextBackend(mode=mode)
        for order, join_labels in SUMMARY_VARIANTS:
            config = SearchConfig(cache=False, summary_order=order, summary_join_labels=join_labels)
            pipeline = make_pipeline(config, backend, CostMeter())
            tool = TextSearchTool(backend, pipeline=pipeline, cache=None, k=5)
            hits = seen5 = seen1 = in_pages = 0
            latencies = []
            by_type: dict[str, list[bool]] = {}
            for question, golds, qtype in questions:
                response = tool.search(question, k=5)
                latencies.append(response.latency_ms)
                results = response.results
                hits += contains_answer([shown(r, None) for r in results], golds)
                seen5 += contains_answer([shown(r, cut) for r in results], golds)
                first = contains_answer([shown(r, cut) for r in results[:1]], golds)
                seen1 += first
                pages = [backend.page_text(r.url) for r in results]
                in_pages += contains_answer(pages, golds)
                by_type.setdefault(qtype, []).append(first)
            n = len(questions)
            summary = order + ("+labels" if join_labels else "")
            per_type = " ".join(f"{t}={statistics.mean(v):.0%}" for t, v in sorted(by_type.items()))
            print(
                f"{mode:10s} {summary:>16s} {hits / n:9.1%} {seen5 / n:8.1%} {seen1 / n:8.1%} "
                f"{in_pages / n:10.1%} {percentile(latencies, 50):8.1f} "
                f"{percentile(latencies, 90):8.1f}   {per_type}",
                flush=True,
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", type=int, default=1, help="Photos per entity.")
    parser.add_argument("--augment", type=int, default=SearchConfig().image_index_augment)
    parser.add_argument("--metric", default=SearchConfig().image_metric, help="auto|mlp+cnn|...")
    parser.add_argument("--text-limit", type=int, default=None, help="Questions (default all).")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (MiniLM).")
    parser.add_argument("--skip", choices=["image", "text"], default=None)
    parser.add_argument(
        "--queries",
        choices=["paraphrase", "keyword"],
        default="paraphrase",
        help="Text: reworded questions, or '<country> <topic>' as the SFT scripts query.",
    )
    parser.add_argument(
        "--only-default", action="store_true", help="Image: the default index, no baselines."
    )
    args = parser.parse_args()
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    world = load_world()
    started = time.perf_counter()
    if args.skip != "image":
        bench_image(world, args.photos, args.augment, args.metric, args.only_default)
    if args.skip != "text":
        bench_text(world, args.text_limit, args.seed, args.queries)
    print(f"\n(total {time.perf_counter() - started:.0f} s)")


if __name__ == "__main__":
    main()
