"""Query-focused summaries of page text: the last step of the paper's text-search pipeline.

- `ExtractiveSummarizer` (default): no model. Splits the page into sentences, scores each
  with BM25 weights of the query's terms (idf over the page's sentences, so a term that is
  everywhere on the page counts little) plus a bonus for the sentences of the retrieval's
  `focus` passage (the hit's snippet: the passage the retriever matched, possibly by
  meaning rather than by words, e.g. "money" ~ "Currency: ..."), keeps the best sentences
  up to a length cap, and prints them best first (as a web engine's snippet leads with
  the matching line: a reader that looks only at a result's start still finds the
  answer) or, with `order="page"`, in page order so they read as prose.
- `LLMSummarizer`: any OpenAI-compatible `/chat/completions` endpoint (vLLM, OpenAI, ...)
  with our own prompt; the page text is capped before sending.
"""

from __future__ import annotations

import functools
import math
import os
import re
from collections import Counter
from typing import Protocol

import httpx

from mmsr.search import web_http
from mmsr.search.config import SUMMARY_ORDERS
from mmsr.search.errors import MalformedResponse

_WORD_RE = re.compile(r"[^\W_]+", re.UNICODE)
# Sentence ends: . ! ? followed by space and an upper-case letter, digit or quote; lines
# break sentences too (factbook-style "Field: value" paragraphs have no final period).
_SENTENCE_END_RE = re.compile(r"(?<=[.!?])\s+(?=[\"'(\[A-Z0-9])")
# Words that carry no topic: they must not make a sentence look relevant.
_STOPWORD_TEXT = """a an the of in on at to for from by with and or is are was were be been being
what which who whom whose when where why how does do did this that these those it its as about
into than then there their them they he she his her i you your we our can could would should
will shall may might not no yes s"""
STOPWORDS = frozenset(_STOPWORD_TEXT.split())
# A field label is a short line ending in a colon ("Capital:", "Major urban areas -
# population:"); longer lines ending in a colon are prose that introduces a list.
_MAX_LABEL_CHARS = 60


class Summarizer(Protocol):
    name: str

    def summarize(self, query: str, text: str, *, title: str = "", focus: str = "") -> str:
        """A summary of `text` focused on `query` ('' when nothing in it is relevant).
        `focus`: the passage retrieval matched (the hit's snippet), '' when unknown."""
        ...


def terms(text: str) -> list[str]:
    """Lower-cased word tokens with a light plural strip ("flags" -> "flag")."""
    out = []
    for word in _WORD_RE.findall(text.lower()):
        if len(word) > 3 and word.endswith("s") and not word.endswith("ss"):
            word = word[:-1]
        out.append(word)
    return out


def split_sentences(text: str, *, join_labels: bool = False) -> list[str]:
    """Sentences of `text`; each line ends a sentence. `join_labels`: a bare field label
    ("Capital:") is joined to the value line under it ("Capital: - name: Adamstown"), as
    a label alone states nothing and a value line alone does not say what it is."""
    lines = [" ".join(line.split()) for line in text.splitlines()]
    if join_labels:
        lines = _join_labels(lines)
    sentences = []
    for line in lines:
        if line:
            sentences.extend(s.strip() for s in _SENTENCE_END_RE.split(line) if s.strip())
    return sentences


def _join_labels(lines: list[str]) -> list[str]:
    """Lines with each bare label ("Field:") merged into the "- " value line right after it
    (the factbook's layout: "Capital:" / "- name: Adamstown" / "- etymology: ...")."""
    out: list[str] = []
    index = 0
    while index < len(lines):
        line = lines[index]
        following = lines[index + 1] if index + 1 < len(lines) else ""
        if _is_bare_label(line) and following.startswith("- "):
            out.append(f"{line} {following}")
            index += 2
        else:
            out.append(line)
            index += 1
    return out


def _is_bare_label(line: str) -> bool:
    return line.endswith(":") and len(line) <= _MAX_LABEL_CHARS and not line.startswith("- ")


@functools.lru_cache(maxsize=4096)
def _page_sentences(text: str, join_labels: bool) -> tuple[tuple[str, ...], tuple[list[str], ...]]:
    """Sentences of a page and their terms. Cached: a local corpus's pages come back in
    search after search, and splitting them is most of a summary's cost. Callers must not
    modify the returned lists."""
    sentences = tuple(split_sentences(text, join_labels=join_labels))
    return sentences, tuple(terms(s) for s in sentences)


class ExtractiveSummarizer:
    """Best query-matching sentences of the page, at most `max_chars`, best first
    (`order="relevance"`) or in page order (`order="page"`). `join_labels`: a bare field
    label and its first value line count as one sentence (`split_sentences`)."""

    name = "extractive"

    def __init__(
        self,
        max_chars: int = 600,
        k1: float = 1.2,
        b: float = 0.75,
        focus_weight: float = 2.0,
        order: str = "relevance",
        join_labels: bool = True,
    ):
        if max_chars < 20:
            raise ValueError(f"ExtractiveSummarizer: max_chars={max_chars} is too small (>= 20)")
        if order not in SUMMARY_ORDERS:
            raise ValueError(f"ExtractiveSummarizer: order={order!r}, expected {SUMMARY_ORDERS}")
        self.max_chars, self.k1, self.b, self.order = max_chars, k1, b, order
        self.join_labels = join_labels
        # A focus sentence outranks one matching a single common query word, not one that
        # matches several query words (BM25 here is ~1-3 per matched word).
        self.focus_weight = focus_weight
        # The page order keeps the id it had before the order became an option.
        suffix = "" if order == "page" else f":{order}"
        suffix += ":labels" if join_labels else ""
        self.cache_id = f"extractive:{max_chars}:focus{focus_weight}{suffix}"

    def summarize(self, query: str, text: str, *, title: str = "", focus: str = "") -> str:
        sentences, tokenised = _page_sentences(text, self.join_labels)
        if not sentences:
            return ""
        query_terms = [t for t in dict.fromkeys(terms(query)) if t not in STOPWORDS]
        scores = self._scores(query_terms, tokenised) if query_terms else [0.0] * len(sentences)
        if focus.strip():
            in_focus = {t for t in terms(focus) if t not in STOPWORDS}
            scores = [
                score + self.focus_weight * _share_in(tokens, in_focus)
                for score, tokens in zip(scores, tokenised, strict=True)
            ]
        if max(scores) <= 0:
            # Nothing matches: the page's opening is the most useful thing to show.
            order = list(range(len(sentences)))
        else:
            # Best first; ties go to the earlier sentence (pages put key facts first).
            order = sorted(
                (i for i, s in enumerate(scores) if s > 0), key=lambda i: (-scores[i], i)
            )
        chosen: list[int] = []
        used = 0
        for index in order:
            cost = len(sentences[index]) + (1 if chosen else 0)
            if used + cost > self.max_chars:
                if not chosen:  # a single long best sentence: keep its beginning
                    return _cut(sentences[index], self.max_chars)
                continue
            chosen.append(index)
            used += cost
        if self.order == "page":
            chosen.sort()
        return " ".join(sentences[i] for i in chosen)

    def _scores(self, query_terms: list[str], tokenised: tuple[list[str], ...]) -> list[float]:
        n = len(tokenised)
        avg_len = sum(len(t) for t in tokenised) / n or 1.0
        doc_freq = Counter(t for tokens in tokenised for t in set(tokens) if t in query_terms)
        idf = {t: math.log(1 + (n - doc_freq[t] + 0.5) / (doc_freq[t] + 0.5)) for t in doc_freq}
        scores = []
        for tokens in tokenised:
            counts = Counter(tokens)
            norm = self.k1 * (1 - self.b + self.b * len(tokens) / avg_len)
            scores.append(
                sum(
                    idf[t] * counts[t] * (self.k1 + 1) / (counts[t] + norm)
                    for t in query_terms
                    if counts[t]
                )
            )
        return scores


def _share_in(sentence_terms: list[str], passage_terms: set[str]) -> float:
    """Share of a sentence's content words that occur in the passage (1.0: it is part of
    the passage). Counted on words, not characters, so whitespace and markup do not matter."""
    words = {t for t in sentence_terms if t not in STOPWORDS}
    if not words:
        return 0.0
    return len(words & passage_terms) / len(words)


def _cut(text: str, max_chars: int) -> str:
    if len(text) <= max_chars:
        return text
    cut = text[: max_chars - 1]
    space = cut.rfind(" ")
    return (cut[:space] if space > max_chars // 2 else cut).rstrip() + "…"


SYSTEM_PROMPT = (
    "You condense one web page for a question-answering agent that cannot read the page "
    "itself. Write at most {max_sentences} short sentences holding the facts from the page "
    "that bear on the search query: names, numbers, dates, places, definitions. Use only "
    "the page text; never add knowledge of your own and never guess. Keep numbers and names "
    "exactly as written. If the page says nothing relevant to the query, answer exactly "
    "NO RELEVANT INFORMATION. Plain text, no preamble, no lists."
)
NO_INFO = "NO RELEVANT INFORMATION"
_THINK_RE = re.compile(r"<think>.*?</think>", re.DOTALL)


class LLMSummarizer:
    """Summaries written by a chat model behind an OpenAI-compatible endpoint."""

    name = "llm"

    def __init__(
        self,
        *,
        base_url: str,
        model: str,
        api_key: str | None = None,
        key_env: str = "OPENAI_API_KEY",
        max_chars: int = 600,
        max_sentences: int = 4,
        max_input_chars: int = 12_000,
        timeout_s: float = 60.0,
        transport: httpx.BaseTransport | None = None,
    ):
        if not model:
            raise ValueError("LLMSummarizer: set llm_model (the model name the endpoint serves)")
        key = api_key if api_key is not None else os.environ.get(key_env, "").strip()
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        self.url = base_url.rstrip("/") + "/chat/completions"
        self.model = model
        self.max_chars, self.max_sentences = max_chars, max_sentences
        self.max_input_chars = max_input_chars
        self._client = httpx.Client(timeout=timeout_s, headers=headers, transport=transport)
        self.cache_id = f"llm:{self.url}:{model}:{max_sentences}:{max_chars}"

    def messages(
        self, query: str, text: str, title: str = "", focus: str = ""
    ) -> list[dict[str, str]]:
        page = text[: self.max_input_chars]
        snippet = f"Search engine snippet: {focus}\n" if focus.strip() else ""
        user = (
            f"Search query: {query}\nPage title: {title or '(none)'}\n{snippet}"
            f"Page text:\n<<<\n{page}\n>>>"
        )
        system = SYSTEM_PROMPT.format(max_sentences=self.max_sentences)
        return [{"role": "system", "content": system}, {"role": "user", "content": user}]

    def summarize(self, query: str, text: str, *, title: str = "", focus: str = "") -> str:
        payload = {
            "model": self.model,
            "messages": self.messages(query, text, title, focus),
            "temperature": 0.0,
            "max_tokens": max(64, self.max_chars // 2),
        }
        response = web_http.send(self._client, "POST", self.url, backend="llm", json=payload)
        web_http.raise_for_status(response, backend="llm")
        data = web_http.json_body(response, backend="llm")
        try:
            content = data["choices"][0]["message"]["content"]
        except (KeyError, IndexError, TypeError) as err:
            raise MalformedResponse(
                f"{self.url} answered without choices[0].message.content", backend="llm"
            ) from err
        if not isinstance(content, str):
            raise MalformedResponse(f"{self.url}: message content is not text", backend="llm")
        # Reasoning models may wrap their thoughts in <think> tags; only the answer counts.
        summary = " ".join(_THINK_RE.sub("", content).split())
        if summary.rstrip(".").upper() == NO_INFO:
            return ""
        return _cut(summary, self.max_chars)

    def close(self) -> None:
        self._client.close()
