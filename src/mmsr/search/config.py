"""The one typed config of the search stack: which backends, cache, reading and summarising.

Secrets never live here: the config names the *environment variable* that holds each key
(`serpapi_key_env`, ...), so a YAML file can be committed and logged in full.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

IMAGE_BACKENDS = ("local", "serpapi", "remote")
TEXT_BACKENDS = ("local", "serpapi", "searxng", "remote")
READERS = ("trafilatura", "jina", "none")
SUMMARIZERS = ("extractive", "llm", "none")
SUMMARY_ORDERS = ("relevance", "page")
IMAGE_METRICS = ("auto", "mlp+cnn", "mlp", "lda", "none")

# Estimated USD per call. SerpAPI: the Developer plan is $75 for 5,000 searches (2025);
# SearXNG and local backends are free; Jina Reader and LLM prices depend on the account,
# so they start at 0 and a user sets them in the YAML.
DEFAULT_PRICES_USD: dict[str, float] = {
    "serpapi": 0.015,
    "serpapi_lens": 0.015,
    "searxng": 0.0,
    "local": 0.0,
    "jina": 0.0,
    "llm": 0.0,
}


def default_cache_path() -> str:
    """`$MMSR_CACHE/search/cache.sqlite`, else `~/.cache/mmsr/search/cache.sqlite`."""
    root = os.environ.get("MMSR_CACHE") or str(Path.home() / ".cache" / "mmsr")
    return str(Path(root).expanduser() / "search" / "cache.sqlite")


@dataclass
class SearchConfig:
    """Everything `make_tools` needs. Load with `SearchConfig.from_yaml(path)`."""

    image_backend: str = "local"
    """Image search backend: one of `IMAGE_BACKENDS`."""
    text_backend: str = "local"
    """Text search backend: one of `TEXT_BACKENDS`."""
    k: int = 5
    """Results per search when the caller does not say (the paper returns the top 5)."""
    timeout_s: float = 15.0
    """Per-request timeout for web search APIs and the remote server, seconds."""

    image_encoder: str = "colorlayout"
    """Local image descriptor: `colorlayout` (hand-built default), `tinypixels` (baseline),
    `open_clip:<local dir>` or `siglip:<local dir>` (real weights on disk)."""
    image_index_augment: int = 64
    """Degraded photo-like renders of each thumbnail the local image index learns from
    (0: clean thumbnails only, no learned metric). 64: +3 points of recall@1 over 32 on the
    validation photos, at twice the build time (docs/RESULTS.md)."""
    image_metric: str = "auto"
    """Metric the local image index learns from those renders (`mmsr.search.projection`):
    `mlp` (small network, cosine softmax), `mlp+cnn` (that plus a small CNN over the flag
    region, `mmsr.search.cnn_metric`, scores summed), `lda` (Fisher LDA), `none` (raw
    descriptors of every render), or `auto`: mlp+cnn from 4,000 renders on (the world),
    else lda."""
    image_project_dim: int = 64
    """Dimensions of that metric's space."""
    text_dense: bool = True
    """Local text search adds dense retrieval (all-MiniLM-L6-v2) to BM25 (fused by RRF)."""
    local_pages: str = ""
    """JSONL corpus the local backends search instead of the embedded world (one page a
    line: url, title, text, optional thumbnail; see `mmsr.search.corpus`)."""

    cache: bool = True
    """Keep results in a persistent SQLite cache shared by every process on this machine."""
    cache_path: str = field(default_factory=default_cache_path)
    """SQLite file of the cache."""
    cache_ttl_s: float | None = None
    """Entries older than this many seconds are misses; None keeps them forever."""

    serpapi_base_url: str = "https://serpapi.com"
    """SerpAPI endpoint root (tests point it at a local fake)."""
    serpapi_key_env: str = "SERPAPI_API_KEY"
    """Environment variable that holds the SerpAPI key."""
    serpapi_hl: str = "en"
    """SerpAPI interface language (`hl`)."""
    serpapi_gl: str = ""
    """SerpAPI country (`gl` for Google, `country` for Lens); empty lets SerpAPI choose."""
    lens_upload_dir: str = ""
    """Google Lens needs a public image URL: local image bytes are written here..."""
    lens_public_base_url: str = ""
    """...and Lens is given `<lens_public_base_url>/<sha256>.<ext>` (your web server's URL)."""

    searxng_base_url: str = "http://127.0.0.1:8080"
    """Root of a SearXNG instance with `json` in `search.formats` of its settings.yml."""

    remote_url: str = "http://127.0.0.1:8765"
    """`mmsr serve search` server used by the `remote` backends."""
    remote_token_env: str = "MMSR_SEARCH_TOKEN"
    """Environment variable with the server's bearer token (empty value: no token)."""
    remote_retries: int = 3
    """Retries of a retryable remote failure (429, 503, connection errors)."""

    reader: str = "trafilatura"
    """How http(s) pages are read: `trafilatura` (httpx + HTML-to-text), `jina`, `none`."""
    jina_base_url: str = "https://r.jina.ai"
    """Jina Reader endpoint."""
    jina_key_env: str = "JINA_API_KEY"
    """Environment variable with the Jina key (optional: Jina serves keyless at a low rate)."""
    fetch_timeout_s: float = 10.0
    """Wall-clock limit to read one page, redirects included, seconds."""
    fetch_max_bytes: int = 2_000_000
    """Bytes of one page read at most; the rest is not downloaded."""
    fetch_workers: int = 4
    """Pages of one search read in parallel."""
    fetch_allow_networks: list[str] = field(default_factory=list)
    """CIDRs the fetcher may read although not public (e.g. an intranet); empty by default."""

    summarizer: str = "extractive"
    """`extractive` (query-focused sentences, no LLM), `llm`, or `none` (snippets only)."""
    summary_max_chars: int = 600
    """Length cap of one result's summary, characters."""
    summary_order: str = "relevance"
    """Extractive summary's sentences: `relevance` (best first, as a web snippet leads with
    the matching line) or `page` (page order, reads as prose)."""
    summary_join_labels: bool = True
    """Extractive summary: a bare field label ("Capital:") and the value line under it
    ("- name: Adamstown") form one sentence (False: each line alone, as before stop 37)."""
    llm_base_url: str = "http://127.0.0.1:8000/v1"
    """OpenAI-compatible root (ends in /v1) for the `llm` summariser: vLLM, OpenAI, ..."""
    llm_model: str = ""
    """Model name sent to the endpoint; required for the `llm` summariser."""
    llm_key_env: str = "OPENAI_API_KEY"
    """Environment variable with the endpoint's key (unset: no Authorization header)."""

    prices_usd: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_PRICES_USD))
    """Estimated price per call by backend name, for `CostMeter.summary()`."""

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise ValueError naming the bad option."""
        choices = {
            "image_backend": IMAGE_BACKENDS,
            "text_backend": TEXT_BACKENDS,
            "reader": READERS,
            "summarizer": SUMMARIZERS,
            "image_metric": IMAGE_METRICS,
            "summary_order": SUMMARY_ORDERS,
        }
        for name, allowed in choices.items():
            value = getattr(self, name)
            if value not in allowed:
                raise ValueError(f"search config: {name}={value!r}, expected one of {allowed}")
        if self.k < 1:
            raise ValueError(f"search config: k={self.k}, expected >= 1")
        for name in ("timeout_s", "fetch_timeout_s"):
            if getattr(self, name) <= 0:
                raise ValueError(f"search config: {name}={getattr(self, name)}, expected > 0")
        if self.fetch_max_bytes < 1 or self.fetch_workers < 1:
            raise ValueError("search config: fetch_max_bytes and fetch_workers must be >= 1")

    @classmethod
    def from_dict(cls, data: dict[str, Any], *, source: str = "search config") -> SearchConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"{source}: unknown option(s) {unknown}; known: {sorted(known)}")
        merged = dict(data)
        if "prices_usd" in merged:  # a YAML names only the prices it changes
            merged["prices_usd"] = {**DEFAULT_PRICES_USD, **(merged["prices_usd"] or {})}
        return cls(**merged)

    @classmethod
    def from_yaml(cls, path: str | Path) -> SearchConfig:
        import yaml

        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"search config file not found: {path}")
        data = yaml.safe_load(path.read_text()) or {}
        if not isinstance(data, dict):
            raise ValueError(f"{path}: expected a mapping of options, got {type(data).__name__}")
        # A config may nest the options under `search:` so one YAML can hold several parts.
        if set(data) == {"search"}:
            data = data["search"] or {}
        return cls.from_dict(data, source=str(path))

    @classmethod
    def load(cls, path: str | Path | None = None, **overrides: Any) -> SearchConfig:
        """The YAML at `path` (or the defaults), with the non-None `overrides` applied (the
        CLI's flags win over the file)."""
        base = cls.from_yaml(path).to_dict() if path else {}
        base.update({k: v for k, v in overrides.items() if v is not None})
        return cls.from_dict(base, source=str(path) if path else "search options")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def env_secret(self, env_name: str) -> str:
        """The value of the environment variable `env_name` ('' when unset)."""
        return os.environ.get(env_name, "").strip() if env_name else ""
