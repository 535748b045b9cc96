"""The replication's stages, in order; each is resumable (`mmsr.stages`).

Dependencies (a stage's params embed those of what it uses, so a changed option redoes
the stage and everything downstream of it, and nothing else):

    eye ─┬─ balance-test ───────────────────────────────┐
         ├─ balance-train ─┬─ grpo-main ─────────────────┤
         │                 ├─ grpo-no-penalty ───────────┼─ eval/<model>-<mode> ─ results
         │                 └─ grpo-unbalanced ───────────┤
         └─ sft ───────────┴─ (start of every GRPO run) ─┘

With `--train-rag-check N` the SFT model checks the train pool with search after SFT
(`balance-train-sft`, `mmsr.replicate.recheck`) and the GRPO runs train on its sets.

SFT uses world-synthesised trajectories over world:train as the demo does (the SFT code
synthesises from world splits only), so it does not depend on balancing.
"""

from __future__ import annotations

import dataclasses
import json
import random
import shutil
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from rich.console import Console

from mmsr.demo import (
    EvalSpec,
    build_tools,
    check_eye,
    dtype_param,
    eval_stage,
    grpo_stage,
    load,
    sampling_param,
    sft_stage,
    show_world,
)
from mmsr.eval.modes import rag_actions
from mmsr.replicate.config import ReplicateConfig
from mmsr.stages import (
    DONE_FILE,
    PARAMS_FILE,
    STAGE_TIMES_FILE,
    StageClock,
    begin,
    file_digest,
    finish,
    open_run,
    params_key,
    remembered_times,
    remove,
    reusable,
    reuse,
)

RESULTS_FILES = ("results.md", "results.json", "plots", STAGE_TIMES_FILE)
CHECKED_TRAIN = "balance-train-sft"  # --train-rag-check's stage (mmsr.replicate.recheck)
STAGE_FOLDERS = ("eye", "balance-test", "balance-train", "sft", CHECKED_TRAIN,
                 "grpo-main", "grpo-no-penalty", "grpo-unbalanced", "eval")  # fmt: skip
BALANCED, UNBALANCED = "balanced.parquet", "unbalanced.parquet"
# The default balanced sets: the balance stages' folders of a full run (docs/RESULTS.md).
SHIPPED_SETS = Path(__file__).parent / "sets"


def clear_stages(out: Path) -> None:
    """Delete what the replication wrote under `out`, nothing else."""
    remove(out, (*STAGE_FOLDERS, *RESULTS_FILES))


def run_replication(
    config: ReplicateConfig | None = None, console: Console | None = None
) -> dict[str, Any]:
    """Run (or resume) every stage, then write results.md, results.json and the plots;
    returns the results."""
    from mmsr.replicate.results import write_results

    config = config or ReplicateConfig()
    console = console or Console()
    out = open_run(Path(config.out), config.fresh, (*STAGE_FOLDERS, *RESULTS_FILES))
    clock = StageClock(console)
    started = time.perf_counter()
    console.print(
        f"nano replication in {out}/: eye -> balance -> SFT -> GRPO (main"
        f"{', no penalty, unbalanced' if config.ablations else ''}) -> evaluation -> results "
        "(finished stages are reused; --fresh starts over); training matmuls in "
        f"{precision_param(config).get('matmul', 'fp32')}"
    )
    with clock.stage(1, "The offline world"):
        show_world(console)
    with clock.stage(2, "The eye") as state:
        eye = eye_stage(config, out / "eye", console, state)
    with clock.stage(3, "Search tools"):
        tools = build_tools(config.search_config, console)
    try:
        runs, evals, balance = _train_and_evaluate(config, out, eye, tools, clock, console)
    finally:
        if tools is not None:
            tools.close()
    results = {
        "out": str(out),
        "eye": {k: eye[k] for k in ("policy", "digest", "source")},
        "balance": balance,
        "evals": evals,
        "grpo_steps": {name: run["steps"] for name, run in runs.items()},
        "stages": remembered_times(out, clock.times),
        "seconds": time.perf_counter() - started,
        "config": asdict(config),
    }
    write_results(results, out, console)
    return results


def _train_and_evaluate(config, out: Path, eye, tools, clock: StageClock, console):
    base = eye["policy"]
    number = 4
    balance: dict[str, Any] = {}
    for split in ("test", "train"):
        title = f"Balance world:{split} (the base policy as the preliminary model)"
        with clock.stage(number, title) as st:
            balance[split] = balance_stage(config, split, out / f"balance-{split}", eye, tools,
                                           console, st)  # fmt: skip
        number += 1
    from mmsr.train.sft import WORLD_SCRIPTS_VERSION

    kept_except = config.kept_names_except
    sft_params = {"base": eye["params"], "steps": config.sft_steps,
                  "trajectories": config.sft_trajectories, "freeze": config.freeze_layers,
                  "search": config.search_config, "seed": config.seed,
                  "tools": tools.identity() if tools is not None else None,
                  "scripts": WORLD_SCRIPTS_VERSION, **precision_param(config),
                  **since_added(answer_weight=(config.sft_answer_weight, 1.0),
                                trust_own_name=(config.sft_trust_own_name, True),
                                decision=(config.sft_decision, "flag"),
                                keep_wrong_names=(config.sft_keep_wrong_names, False),
                                keep_wrong_names_except=(kept_except, []))}  # fmt: skip
    words = shipped_words(eye, console)
    with clock.stage(number, "SFT warm-start (the tag format)") as state:
        sft = training_stage(sft_stage, config, (out / "sft", sft_params), tools, console,
                             state, start=base, answer_weight=config.sft_answer_weight,
                             words=words, trust_own_name=config.sft_trust_own_name,
                             decision=config.sft_decision,
                             keep_wrong_names=config.sft_keep_wrong_names,
                             keep_wrong_names_except=kept_except)  # fmt: skip
    number += 1

    train = balance["train"]
    if config.train_rag_check:
        from mmsr.replicate.recheck import recheck_stage

        title = "Drop the train questions the SFT model cannot answer with search"
        with clock.stage(number, title) as state:
            train = recheck_stage(config, out / CHECKED_TRAIN, train, sft["model"], sft_params,
                                  tools, console, state)  # fmt: skip
        balance["train-checked"] = train
        number += 1
    grpo_runs = {"grpo-main": (train["balanced"], config.search_penalty, "balanced")}
    if config.ablations:
        grpo_runs["grpo-no-penalty"] = (train["balanced"], 0.0, "balanced")
        grpo_runs["grpo-unbalanced"] = (train["unbalanced"], config.search_penalty, "unbalanced")
    runs: dict[str, dict[str, Any]] = {}
    for name, (data, penalty, kind) in grpo_runs.items():
        params = {"start": sft_params, "data": train["params"], "set": kind,
                  "steps": config.grpo_steps, "prompts": config.prompts_per_step,
                  "group": config.group_size, "max_new_tokens": config.max_new_tokens,
                  "search_penalty": penalty, "lr": config.grpo_lr,
                  "temperature": config.grpo_temperature, **precision_param(config),
                  **sampling_param(config),
                  **since_added(std_norm=(config.grpo_std_norm, True),
                                std_floor=(config.grpo_std_floor, 0.0),
                                kl_coef=(config.grpo_kl_coef, 0.001),
                                forced_search=(config.grpo_forced_search, 0),
                                forced_answer=(config.grpo_forced_answer, 0),
                                forced_at=(config.grpo_forced_at, "action"),
                                draw=(config.grpo_draw, "shuffle"),
                                seed=(config.grpo_seed, None))}  # fmt: skip
        title = f"GRPO {name.removeprefix('grpo-')} ({kind} train, search penalty {penalty:g})"
        with clock.stage(number, title) as state:
            runs[name] = {"params": params, **training_stage(
                grpo_stage, config, (out / name, sft["model"], params), tools, console, state,
                data=data, search_penalty=penalty, lr=config.grpo_lr,
                temperature=config.grpo_temperature, std_norm=config.grpo_std_norm,
                std_floor=config.grpo_std_floor, kl_coef=config.grpo_kl_coef,
                forced_search=config.grpo_forced_search, forced_answer=config.grpo_forced_answer,
                forced_at=config.grpo_forced_at, draw=config.grpo_draw, seed=config.grpo_seed,
            )}  # fmt: skip
        number += 1

    models = {"sft": (sft["model"], sft_params), **{
        name.removeprefix("grpo-"): (run["model"], run["params"]) for name, run in runs.items()
    }}  # fmt: skip
    plan = evaluation_plan(config.ablations, config.rag_question)
    evals = evaluate_models(config, models, plan, balance["test"], out / "eval", tools, clock,
                            console, number)  # fmt: skip
    return runs, evals, {split: b["counts"] for split, b in balance.items()}


def evaluate_models(
    config: ReplicateConfig,
    models: dict[str, tuple[str, dict[str, Any]]],
    plan: list[tuple[str, str]],
    data: dict[str, Any],
    folder: Path,
    tools,
    clock: StageClock,
    console: Console,
    number: int,
) -> dict[str, dict[str, Any]]:
    """Each (model, mode) of `plan` on the balanced set `data` (a balance stage's record),
    greedy, one stage each under `folder`; `models` maps a name to (path, stage params).
    Returns the metrics by model, then mode."""
    evals: dict[str, dict[str, Any]] = {}
    for model, mode in plan:
        path, params = models[model]
        eval_params = {"model": params, "data": data["params"], "mode": mode,
                       "max_new_tokens": config.max_new_tokens, "seed": config.seed,
                       **sampling_param(config)}  # fmt: skip
        spec = eval_spec(data["balanced"], mode)
        if spec.mode == "rag":  # the workflow's forced text is part of the result
            eval_params["rag_actions"] = [text for text, _ in rag_actions("?", spec.rag_query)]
            eval_params["rag_reasoning"] = spec.rag_reasoning
        with clock.stage(number, f"Evaluate {model}, {mode} mode") as state:
            done = eval_stage(config, folder / f"{model}-{mode}", path, eval_params, spec,
                              tools, console, state)  # fmt: skip
        evals.setdefault(model, {})[mode] = done["metrics"]
        number += 1
    return evals


def since_added(**parts: tuple[Any, Any]) -> dict[str, Any]:
    """Stage-key parts of options added after runs were made, each given as (value, the
    value those runs had): a part appears only where the value differs, so those runs'
    stages are still reused."""
    return {key: value for key, (value, before) in parts.items() if value != before}


def precision_param(config: ReplicateConfig) -> dict[str, str]:
    """The training stages' key part for the matmul dtype (`demo.dtype_param`)."""
    return dtype_param(config, "matmul_dtype", "matmul")


def training_stage(
    stage,
    config: ReplicateConfig,
    args: tuple,
    tools,
    console: Console,
    state: dict[str, str],
    **recipe,
) -> dict[str, Any]:
    """`stage(config, *args, tools, console, state, **recipe)` (`sft_stage`, `grpo_stage`),
    in a fresh Python process when `config.fresh_processes` and the stage has work to do:
    the child loads its own search tools (seconds) and returns the stage's record; a
    stage it cannot start or that fails raises here."""
    folder, params = args[0], args[-1]
    if not config.fresh_processes or reusable(folder, params) is not None:
        return stage(config, *args, tools, console, state, **recipe)
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    import torch

    console.print("[dim]in a fresh process (its memory goes back to the system after)[/]")
    spawn = multiprocessing.get_context("spawn")  # no fork: the parent holds torch threads
    with ProcessPoolExecutor(max_workers=1, mp_context=spawn) as child:
        job = child.submit(_run_stage_in_child, stage.__name__, config, args, recipe,
                           torch.get_num_threads())  # fmt: skip
        return job.result()


def _run_stage_in_child(name: str, config: ReplicateConfig, args: tuple, recipe: dict,
                        threads: int) -> dict[str, Any]:  # fmt: skip
    import torch

    from mmsr import demo

    torch.set_num_threads(threads)
    console = Console()
    tools = build_tools(config.search_config, console)
    try:
        return getattr(demo, name)(config, *args, tools, console, {"status": "ran"}, **recipe)
    finally:
        if tools is not None:
            tools.close()


# The RAG baseline of the paper: image search, then a text query written by the model after
# the image results ("rag-model"). `rag_question` adds the variant whose text query is the
# question (retrieve-then-read, "rag"); targets compare with the stronger one.
EVAL_MODES = ("direct", "rag-model", "ondemand")


def eval_spec(data: str, mode: str) -> EvalSpec:
    """The RAG runs let the model write each turn's reasoning and force only the
    workflow's actions: with our fixed reasoning text, SFT nano (trained on its own
    wording) wrote "The results say: ..." as its query and answered with the country."""
    if mode == "rag-model":
        return EvalSpec(data, mode="rag", rag_query="model", rag_reasoning="model")
    if mode == "rag":
        return EvalSpec(data, mode="rag", rag_reasoning="model")
    return EvalSpec(data, mode=mode)


def evaluation_plan(ablations: bool, rag_question: bool = False) -> list[tuple[str, str]]:
    """(model, mode) pairs evaluated on the balanced test set. The SFT model's on-demand run
    is also the SFT-only ablation. The ablations run on demand for their targets and
    directly (~35 s each) so that their search decisions can be told apart from the main
    model's (`mmsr.eval.decisions`: where they searched against what they know)."""
    modes = ("direct", "rag", "rag-model", "ondemand") if rag_question else EVAL_MODES
    plan = [(model, mode) for model in ("sft", "main") for mode in modes]
    if ablations:
        plan += [(model, mode) for model in ("no-penalty", "unbalanced")
                 for mode in ("direct", "ondemand")]  # fmt: skip
    return plan


# ------------------------------------------------------------------------- eye
def eye_stage(config: ReplicateConfig, folder: Path, console: Console, state) -> dict[str, Any]:
    """The policy every later stage starts from: nano with the shipped eye (its digest is
    recorded), or with an eye retrained here (`--align`), saved as a checkpoint folder."""
    if not config.align:
        digest = check_eye(config, console)
        source = "shipped" if digest else ("own" if config.policy != "nano" else "random")
        params = {"policy": config.policy, "align": False, "eye": digest}
        return {"policy": config.policy, "digest": digest, "source": source, "params": params}
    params = {"policy": "nano", "align": True}
    if (done := reuse(folder, params, console, state, "policy")) is None:
        done = _align(folder, params, console)
    return {**done, "source": "aligned here"}


def _align(folder: Path, params: dict[str, Any], console: Console) -> dict[str, Any]:
    from mmsr.models.nano import load_nano
    from mmsr.models.policy import Policy
    from mmsr.train.align import CHECKPOINT_NAME, AlignConfig, train_align
    from mmsr.train.checkpoint import save_final
    from mmsr.world.load import load_world

    begin(folder, params, console)
    weights = folder / "nano_vision.safetensors"
    run_dir = folder / "align"
    console.print(f"training the eye with `mmsr train align` defaults into {weights}")
    model, processor = load_nano(console=console, vision_weights=None)
    resume = (run_dir / CHECKPOINT_NAME).is_file()
    policy = Policy(model=model, processor=processor, name="nano")
    train_align(policy, load_world(), AlignConfig(), run_dir, weights, resume, console)
    model, processor = load_nano(console=console, vision_weights=weights)
    save_final(model, processor, folder / "policy")
    result = {"policy": str(folder / "policy"), "digest": file_digest(weights), "params": params}
    return finish(folder, params, result)


# ------------------------------------------------------------------------- balance
def balance_config(config: ReplicateConfig, split: str):
    """The `mmsr data balance` options of the replication's balance stage of `split`."""
    from mmsr.data.balance import BalanceConfig

    ratio = config.train_target_ratio if split == "train" else config.target_ratio
    return BalanceConfig(k=config.balance_k, threshold=config.balance_threshold,
                         rag_k=config.balance_rag_k, target_ratio=ratio,
                         seed=config.seed, match=config.balance_match)  # fmt: skip


def balance_params(config: ReplicateConfig, split: str, eye: dict[str, Any]) -> dict[str, Any]:
    """What the balanced sets of `split` depend on (the stage's cache key)."""
    pool = config.train_pool if split == "train" else config.test_pool
    return {"base": eye["params"], "split": split, "pool": pool,
            "balance": dataclasses.asdict(balance_config(config, split)),
            "lenient": config.balance_lenient, "max_new_tokens": config.balance_max_new_tokens,
            "search": config.search_config}  # fmt: skip


def balance_stage(
    config: ReplicateConfig, split: str, folder: Path, eye, tools, console, state
) -> dict[str, Any]:
    """Balance a seeded subset of world:<split> with the eye's policy as the preliminary
    model (FVQA method, `mmsr data balance`); the train split also gets an unbalanced set of
    the same size drawn from the same subset. The shipped sets are copied when they were
    made under these options, and drawn again from their recorded decisions when only the
    target ratio differs."""
    from mmsr.eval.commands import balance_to_parquet, redraw_to_parquet
    from mmsr.eval.modes import EvalConfig
    from mmsr.eval.samples import load_eval_samples

    balance = balance_config(config, split)
    params = balance_params(config, split, eye)
    pool = params["pool"]
    # The record names its files: runs before stop 17 wrote "train.parquet" for both splits.
    if (done := reuse(folder, params, console, state, "")) is not None:
        _print_counts(split, done["counts"], console)
        return done
    if not config.rebalance and (done := copy_shipped_sets(split, params, folder, console)):
        state["status"] = "shipped"
        _print_counts(split, done["counts"], console)
        return done
    begin(folder, params, console)
    started = time.monotonic()
    samples = load_eval_samples(f"world:{split}", pool, shuffle_seed=config.seed)
    recorded = None if config.rebalance else shipped_decisions(split, params)
    try:
        if recorded is not None:
            console.print(
                f"drawing {len(samples)} world:{split} questions to {balance.target_ratio:g} "
                f"search_required : 1 search_free from the shipped sets' decisions "
                f"({recorded.parent.name}/{recorded.name}); no model answers"
            )
            counts = redraw_to_parquet(samples, recorded, folder / BALANCED, balance)
        else:
            console.print(
                f"{len(samples)} world:{split} questions, {config.balance_k} sampled answers "
                f"each without search, then {config.balance_rag_k} RAG answer(s) per "
                "search_required one"
            )
            policy = load(eye["policy"], config, console)
            answer = EvalConfig(max_new_tokens=config.balance_max_new_tokens, seed=config.seed)
            counts = balance_to_parquet(samples, policy, tools, folder / BALANCED, balance,
                                        answer, lenient=config.balance_lenient,
                                        console=console)  # fmt: skip
    except RuntimeError as err:  # nothing survived: an options problem, named as ours
        raise ValueError(
            f"balancing world:{split}: {err}. Options here: --balance-threshold, "
            f"--balance-rag-k 0, a larger --{split}-pool"
        ) from err
    result = {"balanced": str(folder / BALANCED), "counts": counts}
    if split == "train":
        result["unbalanced"] = str(folder / UNBALANCED)
        counts["unbalanced"] = write_unbalanced(
            samples, folder / BALANCED, folder / UNBALANCED, counts["output"], config.seed
        )
    _print_counts(split, counts, console)
    result["minutes"] = round((time.monotonic() - started) / 60, 1)
    return finish(folder, params, result)


def copy_shipped_sets(
    split: str, params: dict[str, Any], folder: Path, console: Console
) -> dict[str, Any] | None:
    """The default sets shipped with mmsr (this stage's output with the default options and
    the shipped eye, docs/RESULTS.md), copied into `folder`, when they were made under
    exactly `params`; else None (then the stage balances here)."""
    source = SHIPPED_SETS / f"balance-{split}"
    shipped = reusable(source, params)
    if shipped is None:
        return None
    begin(folder, params, console)
    for path in source.iterdir():
        if path.name not in (DONE_FILE, PARAMS_FILE):
            shutil.copy2(path, folder / path.name)
    result = {"counts": shipped["counts"], "minutes": shipped.get("minutes"), "shipped": True}
    for key in ("balanced", "unbalanced"):
        if key in shipped:
            result[key] = str(folder / Path(shipped[key]).name)
    console.print(
        # No colon right after the split: rich would read "world:train:" as an emoji code.
        f"the shipped balanced sets of world:{split} were made with these options "
        f"({source.name}, {shipped.get('minutes', '?')} min to build on 2 cores); "
        "--rebalance builds them here"
    )
    return finish(folder, params, result)


def shipped_decisions(split: str, params: dict[str, Any]) -> Path | None:
    """The shipped sets' recorded decisions (every pooled question's category) when they
    were classified under `params` and drawn to another target ratio: drawing them again
    takes seconds where classifying takes ~10 min. None otherwise."""
    source = SHIPPED_SETS / f"balance-{split}"
    if not (source / DONE_FILE).is_file():
        return None
    shipped = json.loads((source / DONE_FILE).read_text(encoding="utf-8"))["params"]
    ratio = shipped["balance"]["target_ratio"]
    as_shipped = {**params, "balance": {**params["balance"], "target_ratio": ratio}}
    return (
        source / "balanced.balance.json" if params_key(shipped) == params_key(as_shipped) else None
    )


def shipped_words(eye: dict[str, Any], console: Console) -> str | None:
    """The shipped eye's words (`mmsr/replicate/sets/sft-words/`, saved by a full run's SFT:
    what base nano says about each question it is asked, `RecordedSpeaker`) when `eye` is
    the policy that spoke them; else None (then SFT has the policy speak, ~7 min)."""
    from mmsr.train.sft import WORDS_FILE

    source = SHIPPED_SETS / "sft-words"
    if reusable(source, {"base": eye["params"]}) is None:
        return None
    console.print(f"SFT reads base nano's recorded words from {source.name}/{WORDS_FILE}")
    return str(source / WORDS_FILE)


def write_unbalanced(samples, balanced: Path, out: Path, n: int, seed: int) -> dict[str, Any]:
    """`n` of the pooled `samples` drawn at random (seeded) whatever their category: the
    unbalanced ablation's train set, the same size as the balanced one. Each keeps the
    category its balancing decision gave it, so the mix can be reported."""
    from mmsr.data.balance import embed_images

    decisions = json.loads(balanced.with_suffix(".balance.json").read_text(encoding="utf-8"))
    category = {d["sample_id"]: d["category"] for d in decisions["decisions"]}
    chosen = random.Random(seed).sample(list(samples), min(n, len(samples)))
    return write_mix([embed_images(s) for s in chosen], category, out)


def write_mix(chosen: list, categories: dict[str, str], out: Path) -> dict[str, Any]:
    """The parquet `out` of the `chosen` samples, each with its category; their counts."""
    from mmsr.data.io import write_samples

    write_samples([dataclasses.replace(s, category=categories.get(s.id)) for s in chosen], out)
    mix = {c: sum(categories.get(s.id) == c for s in chosen)
           for c in ("search_free", "search_required")}  # fmt: skip
    return {"output": len(chosen), "output_categories": mix}


def _print_counts(split: str, counts: dict[str, Any], console: Console) -> None:
    categories = counts["output_categories"]
    line = (
        f"world:{split} ({counts['input']} questions) -> {counts['output']} balanced "
        f"({categories['search_free']} search_free : {categories['search_required']} "
        f"search_required; {counts['dropped_unanswerable']} dropped as unanswerable)"
    )
    if "unbalanced" in counts:
        mix = counts["unbalanced"]["output_categories"]
        line += (
            f"; unbalanced set {counts['unbalanced']['output']} "
            f"({mix['search_free']} : {mix['search_required']})"
        )
    console.print(line)
