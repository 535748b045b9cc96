"""The train set's search check by the SFT model (`--train-rag-check N`).

The FVQA method drops a search_required question when the preliminary model stays wrong
even with search (step 3, `mmsr.data.balance`). The replication's preliminary model is
nano before SFT, which cannot run the RAG workflow (right in none of 6 RAG answers in the
first smoke run), so its balancing drops nothing (`--balance-rag-k 0`) and GRPO's
search_required train questions include many that searching does not answer: in stop 40's
runs GRPO's rollouts that searched were right on 15 of 79 of them, and on none of 20
anthem ones. Searching then pays little where it should, and GRPO's search decision
drifts with its draws.

This stage runs step 3 after SFT, with the SFT model (the model GRPO starts from): it
answers `N` of the train pool's search_required questions (a seeded draw) once, greedy,
in the paper's RAG workflow (image search, then a text query of its own), judged as
GRPO's reward judges (exact match). Those it gets wrong are dropped, the others are
drawn to the train ratio with the shipped search_free ones. The unbalanced ablation's
set is drawn again from the same survivors (`unbalanced_mix`), so that the two train
sets differ in their mix only. The test set is not touched: it keeps the preliminary
model's balancing, so the RAG baseline is not favoured.
"""

from __future__ import annotations

import dataclasses
import random
import time
from pathlib import Path
from typing import Any

from rich.console import Console

from mmsr.replicate.config import ReplicateConfig
from mmsr.replicate.run import BALANCED, UNBALANCED, balance_config, load, write_mix
from mmsr.stages import begin, finish, reuse


def recheck_params(
    config: ReplicateConfig, train: dict[str, Any], sft_params: dict[str, Any]
) -> dict[str, Any]:
    """What the checked train sets depend on (the stage's cache key)."""
    from mmsr.demo import sampling_param

    return {"train": train["params"], "model": sft_params, "checked": config.train_rag_check,
            "max_new_tokens": config.max_new_tokens, "match": "em",
            **sampling_param(config)}  # fmt: skip


def recheck_stage(
    config: ReplicateConfig,
    folder: Path,
    train: dict[str, Any],
    model: str,
    sft_params: dict[str, Any],
    tools,
    console: Console,
    state: dict[str, str],
) -> dict[str, Any]:
    """Drop the train pool's search_required questions the SFT model at `model` cannot
    answer with search, then draw the balanced and unbalanced train sets again; `train`
    is the balance-train stage's record. Record: `balanced`, `unbalanced`, `counts`."""
    from mmsr.data.balance import embed_images, read_decisions, recheck_with_search
    from mmsr.eval.answerer import EngineAnswerer
    from mmsr.eval.commands import write_balanced
    from mmsr.eval.modes import EvalConfig
    from mmsr.eval.samples import load_eval_samples

    params = recheck_params(config, train, sft_params)
    if (done := reuse(folder, params, console, state, BALANCED)) is not None:
        print_recheck(done["counts"], console)
        return done
    begin(folder, params, console)
    started = time.monotonic()
    samples = load_eval_samples("world:train", config.train_pool, shuffle_seed=config.seed)
    recorded = read_decisions(Path(train["balanced"]).with_suffix(".balance.json"))
    balance = dataclasses.replace(balance_config(config, "train"), rag_k=1, match="em")
    console.print(
        f"the SFT model answers {config.train_rag_check} of the train pool's search_required "
        "questions once in the RAG workflow (greedy); those it gets wrong are dropped"
    )
    answer = EvalConfig(max_new_tokens=config.max_new_tokens, seed=config.seed,
                        rag_query="model", rag_reasoning="model",
                        sample_dtype=config.sample_dtype)  # fmt: skip
    policy = load(model, config, console)
    answerer = EngineAnswerer(policy, tools, answer, temperature=0, console=console)
    result = recheck_with_search(samples, recorded, answerer, balance, config.train_rag_check)
    if not result.counts["output_categories"]["search_required"]:
        raise ValueError(
            f"the SFT model answered none of the {result.counts['checked_with_search']} "
            "search_required train questions it checked with search: raise --train-rag-check "
            "or leave it at 0"
        )
    # Only the questions written carry their image bytes (the parquets are self-contained).
    result.samples = [embed_images(s) for s in result.samples]
    counts = write_balanced(result, folder / BALANCED)
    survivors = [s for s, d in zip(samples, result.decisions, strict=True)
                 if d.fate in ("kept", "dropped_balance")]  # fmt: skip
    categories = {d.sample_id: d.category for d in result.decisions}
    unbalanced = unbalanced_mix(survivors, categories, result.counts, counts["output"], config.seed)
    counts["unbalanced"] = write_mix(
        [embed_images(s) for s in unbalanced], categories, folder / UNBALANCED
    )
    print_recheck(counts, console)
    record = {"balanced": str(folder / BALANCED), "unbalanced": str(folder / UNBALANCED),
              "counts": counts, "minutes": round((time.monotonic() - started) / 60, 1)}  # fmt: skip
    return finish(folder, params, record)


def unbalanced_mix(
    survivors: list, categories: dict[str, str], counts: dict[str, Any], n: int, seed: int
) -> list:
    """`n` of the `survivors` drawn at random in the mix the whole pool would have after
    the check: every search_free question survives it, a search_required one in the share
    of the checked that did (`counts` of `recheck_with_search`)."""
    free = [s for s in survivors if categories[s.id] == "search_free"]
    required = [s for s in survivors if categories[s.id] == "search_required"]
    checked = counts["checked_with_search"]
    n_required_pool = counts["classified"].get("search_required", 0)
    expected = n_required_pool * len(required) / checked if checked else 0
    share_free = len(free) / (len(free) + expected) if free else 0.0
    n_free = min(len(free), round(n * share_free))
    rng = random.Random(seed)
    chosen = rng.sample(free, n_free) + rng.sample(required, min(n - n_free, len(required)))
    return sorted(chosen, key=survivors.index)


def print_recheck(counts: dict[str, Any], console: Console) -> None:
    categories, mix = counts["output_categories"], counts["unbalanced"]["output_categories"]
    console.print(
        f"checked {counts['checked_with_search']} search_required train questions with the "
        f"SFT model's RAG: {counts['dropped_unanswerable']} dropped as unanswerable -> "
        f"{counts['output']} balanced ({categories['search_free']} search_free : "
        f"{categories['search_required']} search_required); unbalanced set "
        f"{counts['unbalanced']['output']} ({mix['search_free']} : {mix['search_required']})"
    )
