"""`mmsr demo` (what `make demo` runs): the embedded default end to end, on a CPU.

The real pipeline, scaled to minutes; every stage is an existing entry point:

1. world      the offline world (`mmsr.world`): countries, flags, questions;
2. eye        nano's vision tower: the shipped trained weights (`NANO_VISION_ASSET`), or
              the random tower with a one-line notice (`mmsr train align --ship` makes it);
3. search     the local image index and text retrieval (`mmsr.search.make_tools`): built
              on first use (minutes), cached under `$MMSR_CACHE/search/index` afterwards;
4. sft        a short tag-format warm-start (`mmsr.train.sft.train_sft`) -> sft/final;
5. eval-sft   the SFT policy on a fixed slice of world:test, on-demand search (`mmsr.eval`);
6. grpo       a few GRPO steps from sft/final (`mmsr.train.loop.train_grpo`) -> grpo/final;
7. eval-grpo  the GRPO policy on the same slice;

then a summary (accuracy, search ratio, behaviour breakdown, the GRPO steps, stage times),
also written to `<out>/summary.json`. The CPU settings are those of
the nano_sft_cpu and nano_cpu presets (`mmsr/configs/`) with fewer steps
(`tests/test_demo.py` checks they agree).

Resumable: a finished stage leaves `<stage>/done.json` holding the options it ran under
(and those of the stages it depends on); a rerun with the same options reuses it, a changed
option redoes that stage and the ones after it. An interrupted SFT or GRPO stage resumes
from its last checkpoint. `fresh=True` (`--fresh`) deletes the stage folders first.

A handful of GRPO steps on a CPU shows the loop running (rollouts, rewards, update), not a
trained searcher: expect the two evaluations to differ by a question or two at most.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from mmsr.models.precision import check_matmul_dtype
from mmsr.stages import (
    StageClock,
    begin,
    duration,
    file_digest,
    finish,
    open_run,
    remove,
    require_positive,
    reuse,
)

STAGE_FOLDERS = ("sft", "eval-sft", "grpo", "eval-grpo")
SUMMARY_FILE = "summary.json"


@dataclass
class DemoConfig:
    """`mmsr demo`: sizes chosen to fit ~15 minutes on 2 CPU cores (the search indexes'
    first build included)."""

    out: str = "runs/demo"
    """Run folder: sft/, eval-sft/, grpo/, eval-grpo/, summary.json."""
    policy: str = "nano"
    """'nano' or a local Qwen-VL checkpoint folder to start from."""
    sft_steps: int = 10
    """SFT optimizer steps of 8 trajectories (the nano_sft_cpu preset: 30)."""
    sft_trajectories: int = 64
    """World-synthesised SFT trajectories (random search plans, replayed with the tools)."""
    grpo_steps: int = 2
    """GRPO steps (the nano_cpu preset uses 20)."""
    prompts_per_step: int = 2
    """GRPO questions per step (the nano_cpu preset: 4)."""
    group_size: int = 4
    """GRPO trajectories per question (the group that advantages are normalised in)."""
    eval_questions: int = 16
    """Questions of the fixed world:test slice (seeded shuffle) both evaluations use."""
    eval_data: str = "world:test"
    """What the evaluations run on (world:<split>, or an FVQA .parquet / .jsonl)."""
    max_new_tokens: int = 96
    """Tokens per model turn in GRPO rollouts and evaluations (the trained turns are short)."""
    freeze_layers: int = 22
    """Lowest decoder layers kept frozen in SFT and GRPO (nano has 30; the CPU configs')."""
    matmul_dtype: str = "fp32"
    """'bf16': SFT's and GRPO's updates multiply in bf16 (torch.autocast; weights stay fp32);
    'auto': bf16 where the device multiplies bf16 in hardware; 'fp32': all in fp32."""
    sample_dtype: str = "fp32"
    """'bf16': rollouts and evaluations run on a bf16 copy of the policy's weights (the LM
    head and log-probs stay fp32; `EngineConfig.sample_dtype`), 1.45x faster rollouts on
    a CPU with bf16 units; 'auto': bf16 where the device multiplies bf16 in hardware;
    'fp32': the policy itself."""
    search_config: str | None = None
    """Search config YAML (None: the local world backends; 'none': no tools)."""
    seed: int = 0
    """Seed of the SFT scripts, the data order, the rollouts and the evaluation slice."""
    device: str | None = None
    """'cpu', 'cuda', ...; None: the GPU when there is one."""
    fresh: bool = False
    """Delete the stage folders under `out` first (otherwise finished stages are reused)."""

    def __post_init__(self) -> None:
        require_positive(self, ("sft_steps", "sft_trajectories", "grpo_steps",
                                "prompts_per_step", "group_size", "eval_questions",
                                "max_new_tokens"))  # fmt: skip
        check_matmul_dtype(self.matmul_dtype)
        check_matmul_dtype(self.sample_dtype, "--sample-dtype")


# ------------------------------------------------------------------------- the demo
def clear_stages(out: Path) -> None:
    """Delete what the demo wrote under `out` (its stage folders and summary), nothing else."""
    remove(out, (*STAGE_FOLDERS, SUMMARY_FILE))


def run_demo(config: DemoConfig | None = None, console: Console | None = None) -> dict[str, Any]:
    """Run (or resume) the demo; returns the summary (also written to `out/summary.json`)."""
    config = config or DemoConfig()
    console = console or Console()
    out = open_run(Path(config.out), config.fresh, (*STAGE_FOLDERS, SUMMARY_FILE))
    stages = StageClock(console)
    started = time.perf_counter()
    console.print(
        f"mmsr demo: world -> eye -> search -> SFT ({config.sft_steps} steps) -> eval -> "
        f"GRPO ({config.grpo_steps} steps) -> eval, in {out}/ (finished stages are reused; "
        "--fresh starts over)"
    )

    with stages.stage(1, "The offline world"):
        show_world(console)
    with stages.stage(2, "The eye (nano's vision tower)"):
        eye = check_eye(config, console)
    with stages.stage(3, "Search tools"):
        tools = build_tools(config.search_config, console)
    from mmsr.train.sft import WORLD_SCRIPTS_VERSION

    try:
        sft_params = {"policy": config.policy, "eye": eye, "steps": config.sft_steps,
                      "trajectories": config.sft_trajectories, "freeze": config.freeze_layers,
                      "search": config.search_config, "seed": config.seed,
                      "tools": tools.identity() if tools is not None else None,
                      "scripts": WORLD_SCRIPTS_VERSION}  # fmt: skip
        with stages.stage(4, "SFT warm-start (the tag format)") as state:
            sft = sft_stage(config, out / "sft", sft_params, tools, console, state)
        eval_params = {"data": config.eval_data, "n": config.eval_questions,
                       "max_new_tokens": config.max_new_tokens, "seed": config.seed,
                       **sampling_param(config)}  # fmt: skip
        evaluation = EvalSpec(config.eval_data, config.eval_questions, shuffle_seed=config.seed)
        with stages.stage(5, "Evaluate the SFT policy") as state:
            eval_sft = eval_stage(
                config, out / "eval-sft", sft["model"], {"model": sft_params, **eval_params},
                evaluation, tools, console, state,
            )  # fmt: skip
        grpo_params = {"start": sft_params, "steps": config.grpo_steps,
                       "prompts": config.prompts_per_step, "group": config.group_size,
                       "max_new_tokens": config.max_new_tokens,
                       **sampling_param(config)}  # fmt: skip
        with stages.stage(6, "GRPO (learning when to search)") as state:
            grpo = grpo_stage(
                config, out / "grpo", sft["model"], grpo_params, tools, console, state
            )
        with stages.stage(7, "Evaluate the GRPO policy") as state:
            eval_grpo = eval_stage(
                config, out / "eval-grpo", grpo["model"], {"model": grpo_params, **eval_params},
                evaluation, tools, console, state,
            )  # fmt: skip
    finally:
        if tools is not None:
            tools.close()

    total = time.perf_counter() - started
    summary = {
        "out": str(out),
        "eye": eye,
        "evals": {"sft": eval_sft["metrics"], "grpo": eval_grpo["metrics"]},
        "eval_outputs": {"sft": eval_sft["outputs"], "grpo": eval_grpo["outputs"]},
        "grpo_steps": grpo["steps"],
        "stages": [asdict(t) for t in stages.times],
        "seconds": total,
        "config": asdict(config),
    }
    (out / SUMMARY_FILE).write_text(json.dumps(summary, indent=2, default=str), encoding="utf-8")
    _render_summary(summary, config, console)
    return summary


# ------------------------------------------------------------------------- stages
# Shared with the nano replication (`mmsr.replicate`): `config` is any object with the
# DemoConfig fields the function reads (policy, sizes, freeze_layers, search_config, seed,
# device, max_new_tokens).
def show_world(console: Console) -> None:
    from mmsr.world.info import world_info

    info = world_info()
    entities, questions = info["entities"], info["questions"]
    splits = ", ".join(f"{n} {s}" for s, n in questions["by_split"].items())
    console.print(
        f"{entities['total']} countries and territories with their flags "
        f"({entities['familiar']} familiar to SmolLM2, {entities['unfamiliar']} not), "
        f"{info['pages']['total']} pages, {questions['total']} questions of "
        f"{questions['types']} types ({splits})"
    )


def check_eye(config, console: Console) -> str | None:
    """The digest of the shipped eye when nano will load it, else None (printed either way)."""
    from mmsr.models.vision_weights import NANO_VISION_ASSET

    if config.policy != "nano":
        console.print(f"policy {config.policy}: its own vision tower")
        return None
    digest = file_digest(NANO_VISION_ASSET)
    if digest is None:
        console.print(
            f"[yellow]No trained eye shipped ({NANO_VISION_ASSET.name} is missing): nano keeps "
            "its random vision tower, so it cannot read flags and must search. "
            "Make one with `mmsr train align --ship`.[/]"
        )
    else:
        size = NANO_VISION_ASSET.stat().st_size / 1e6
        console.print(f"the shipped eye: {NANO_VISION_ASSET} ({size:.1f} MB, sha256 {digest})")
    return digest


def build_tools(search_config: str | None, console: Console):
    """The search tools of `search_config` (None: the local world backends; 'none': no
    tools, returns None)."""
    if search_config == "none":
        console.print("no search tools (search_config 'none'): every search returns an error")
        return None
    from mmsr.search.config import SearchConfig
    from mmsr.search.index_cache import index_dir
    from mmsr.search.tools import make_tools

    search = SearchConfig.load(search_config)
    console.print(
        f"image search: {search.image_backend}, text search: {search.text_backend}. "
        "Local indexes are built on first use (`mmsr search index`), with progress bars: "
        "about 11 minutes on 2 cores (the image index renders, encodes and learns its metric "
        "over every flag; the text index embeds ~8,900 page chunks with MiniLM), then "
        f"loaded from {index_dir()} in seconds."
    )
    started = time.perf_counter()
    tools = make_tools(search)
    console.print(f"search tools ready in {duration(time.perf_counter() - started)}")
    return tools


def dtype_param(config, option: str, key: str) -> dict[str, str]:
    """A stage key's part for the dtype option `option` of `config` ('auto' resolved on
    this machine), under `key`: none for fp32, so the stages of runs made before the
    option existed are still reused."""
    from mmsr.models.policy import resolve_device
    from mmsr.models.precision import resolve_matmul_dtype

    dtype = resolve_matmul_dtype(getattr(config, option), resolve_device(config.device))
    return {} if dtype == "fp32" else {key: dtype}


def sampling_param(config) -> dict[str, str]:
    """The key part for the rollouts' weights dtype (`sample_dtype`)."""
    return dtype_param(config, "sample_dtype", "sample_dtype")


def load(path: str, config, console: Console):
    from mmsr.models.loading import load_policy

    return load_policy(path, device=config.device, console=console)


def sft_stage(
    config, folder: Path, params, tools, console, state, start: str | None = None, **recipe
) -> dict[str, Any]:
    """SFT from the policy at `start` (default `config.policy`) into `folder`; `recipe` goes
    to `sft_config` (answer_weight). Record: `model` = folder/final."""
    from mmsr.train.sft import train_sft

    if (done := reuse(folder, params, console, state)) is not None:
        return done
    begin(folder, params, console)
    start = start or config.policy
    sft = sft_config(config, folder, start, **recipe)
    policy = load(start, config, console)
    train_sft(sft, policy=policy, tools=tools, console=console)
    return finish(folder, params, {"model": str(folder / "final")})


GRPO_STEP_KEYS = ("reward_mean", "acc", "format_rate", "search_ratio", "correct_no_search",
                  "kl", "step_s", "acc_search_free", "acc_search_required",
                  "search_ratio_search_free", "search_ratio_search_required",
                  "forced_search_acc", "forced_answer_acc", "forced_search_searched",
                  "forced_answer_searched")  # fmt: skip


def grpo_stage(
    config, folder: Path, start: str, params, tools, console, state, **recipe
) -> dict[str, Any]:
    """GRPO from the policy at `start` into `folder`; `recipe` goes to `grpo_config` (data,
    search_penalty). Record: `model` = folder/final, `steps` = the per-step metrics."""
    from mmsr.train.loop import train_grpo
    from mmsr.train.metrics import read_metrics

    if (done := reuse(folder, params, console, state)) is not None:
        return done
    begin(folder, params, console)
    grpo = grpo_config(config, start, folder, **recipe)
    policy = load(start, config, console)
    train_grpo(grpo, policy=policy, tools=tools, console=console)
    rows = [
        {k: row.get(k) for k in ("step", *GRPO_STEP_KEYS)}
        for row in read_metrics(folder / "metrics.jsonl")
    ]
    return finish(folder, params, {"model": str(folder / "final"), "steps": rows})


@dataclass
class EvalSpec:
    """What an evaluation stage runs: which questions, in which mode."""

    data: str  # world:<split>, or an FVQA .parquet / .jsonl
    limit: int | None = None  # the first N questions (after the shuffle)
    shuffle_seed: int | None = None
    mode: str = "ondemand"
    rag_query: str = "question"  # rag mode: the text query is the question or model-written
    rag_reasoning: str = "fixed"  # rag mode: our fixed reasoning, or the model's own


EVAL_KEYS = ("acc", "sr", "call_ratio", "image_search_rate", "text_search_rate", "answered",
             "behaviour", "behaviour_counts", "n")  # fmt: skip


def eval_stage(
    config, folder: Path, model: str, params, spec: EvalSpec, tools, console, state
) -> dict[str, Any]:
    """Evaluate the policy at `model` (greedy) into `folder` (reports, viewer); record:
    `metrics` (the EVAL_KEYS), `outputs` (the files written)."""
    from mmsr.eval.modes import EvalConfig
    from mmsr.eval.run import evaluate, write_run
    from mmsr.eval.samples import load_eval_samples

    if (done := reuse(folder, params, console, state, "metrics.json")) is not None:
        print_eval_line(done["metrics"], console)
        return done
    begin(folder, params, console)
    samples = load_eval_samples(spec.data, spec.limit, shuffle_seed=spec.shuffle_seed)
    evaluation = EvalConfig(
        mode=spec.mode,
        max_new_tokens=config.max_new_tokens,
        seed=config.seed,
        batch_size=8,
        rag_query=spec.rag_query,
        rag_reasoning=spec.rag_reasoning,
        sample_dtype=config.sample_dtype,
    )
    console.print(f"{len(samples)} questions of {spec.data}, {spec.mode} mode, greedy")
    policy = load(model, config, console)
    run = evaluate(policy, tools, samples, evaluation, console=console)
    title = f"{folder.name}: {spec.mode} on {spec.data}"
    paths = write_run(run, folder, samples, title=title)
    print_eval_line(run.metrics, console)
    metrics = {k: run.metrics.get(k) for k in EVAL_KEYS}
    outputs = {k: str(v) for k, v in paths.items()}
    return finish(folder, params, {"model": model, "metrics": metrics, "outputs": outputs})


# ------------------------------------------------------------------------- the recipes
def sft_config(
    config: DemoConfig,
    folder: Path,
    start: str | None = None,
    answer_weight: float = 1.0,
    words: str | None = None,
    trust_own_name: bool = True,
    decision: str = "flag",
    keep_wrong_names: bool = False,
    keep_wrong_names_except: Sequence[str] = (),
):
    """The nano_sft_cpu preset (`mmsr/configs/`) with the demo's sizes, starting from the
    policy at `start` (default `config.policy`); the replication sets its `answer_weight`,
    the recorded `words` of the policy (`SFTConfig.words`), `trust_own_name`,
    `decision`, `keep_wrong_names` and `keep_wrong_names_except`."""
    from mmsr.train.config import SFTConfig, load_config

    preset = load_config(SFTConfig, "nano_sft_cpu")
    return dataclasses.replace(
        preset,
        n_trajectories=config.sft_trajectories,
        steps=config.sft_steps,
        batch_size=min(preset.batch_size, config.sft_trajectories),
        answer_weight=answer_weight,
        words=words,
        trust_own_name=trust_own_name,
        decision=decision,
        keep_wrong_names=keep_wrong_names,
        keep_wrong_names_except=list(keep_wrong_names_except),
        search_config=config.search_config,
        model=_model_options(config, preset.model, start or config.policy),
        optim=_warm_up_within(preset.optim, config.sft_steps),
        run=_run_options(config, preset.run, folder, tensorboard=False),
    )


def grpo_config(
    config: DemoConfig,
    start: str,
    folder: Path,
    data: str = "world:train",
    search_penalty: float = 0.1,
    lr: float | None = None,
    temperature: float | None = None,
    std_norm: bool | None = None,
    std_floor: float | None = None,
    kl_coef: float | None = None,
    forced_search: int = 0,
    forced_answer: int = 0,
    forced_at: str = "action",
    draw: str = "shuffle",
    seed: int | None = None,
):
    """The nano_cpu preset (`mmsr/configs/`) with the demo's sizes, starting from the policy
    at `start`; `data` and `search_penalty` are what the replication's ablations vary; the
    replication sets its own `lr`, rollout `temperature` and whether advantages are divided
    by their group's std (`std_norm`) and the least std they are divided by (`std_floor`;
    None: the preset's), the weight of the KL to the start (`kl_coef`;
    None: the preset's) and how many rollouts per group are forced to search first or to
    answer at once, and where (`forced_search`, `forced_answer`, `forced_at`: `GRPOOptions`),
    and how the questions are drawn (`draw`: `GRPOConfig.draw`); `seed` replaces the demo's
    seed for this run's draws, rollouts and LoRA init (None: `config.seed`)."""
    from mmsr.train.config import GRPOConfig, load_config

    preset = load_config(GRPOConfig, "nano_cpu")
    optim = _warm_up_within(preset.optim, config.grpo_steps)
    return dataclasses.replace(
        preset,
        data=data,
        steps=config.grpo_steps,
        prompts_per_step=config.prompts_per_step,
        draw=draw,
        search_config=config.search_config,
        reward={**preset.reward, "search_penalty": search_penalty},
        model=_model_options(config, preset.model, start),
        optim=optim if lr is None else dataclasses.replace(optim, lr=lr),
        grpo=dataclasses.replace(
            preset.grpo,
            group_size=config.group_size,
            norm_adv_by_std=preset.grpo.norm_adv_by_std if std_norm is None else std_norm,
            adv_std_floor=preset.grpo.adv_std_floor if std_floor is None else std_floor,
            kl_coef=preset.grpo.kl_coef if kl_coef is None else kl_coef,
            forced_search=forced_search,
            forced_answer=forced_answer,
            forced_at=forced_at,
        ),
        engine=dataclasses.replace(
            preset.engine,
            max_new_tokens=config.max_new_tokens,
            temperature=preset.engine.temperature if temperature is None else temperature,
            sample_dtype=config.sample_dtype,
        ),
        run=_run_options(config, preset.run, folder, seed, tensorboard=False, save_every=2),
    )


def _model_options(config: DemoConfig, preset, policy: str):
    return dataclasses.replace(
        preset, policy=policy, device=config.device, freeze_layers=config.freeze_layers,
        matmul_dtype=config.matmul_dtype,
    )  # fmt: skip


def _warm_up_within(optim, steps: int):
    """The preset's optimizer, its warm-up shortened to fit a run of `steps`."""
    return dataclasses.replace(optim, warmup_steps=min(optim.warmup_steps, steps - 1))


def _run_options(config: DemoConfig, preset, folder: Path, seed: int | None = None, **values):
    """The preset's run options writing into `folder`, seeded by `seed` (None: `config.seed`)."""
    seed = config.seed if seed is None else seed
    return dataclasses.replace(preset, out=str(folder), seed=seed, **values)


# ------------------------------------------------------------------------- the summary
def _pct(value) -> str:
    return "-" if value is None else f"{100 * value:.0f}%"


def print_eval_line(metrics: dict[str, Any], console: Console) -> None:
    console.print(
        f"accuracy {_pct(metrics.get('acc'))}, search ratio {_pct(metrics.get('sr'))}, "
        f"answered {_pct(metrics.get('answered'))}"
    )


def _render_summary(summary: dict[str, Any], config: DemoConfig, console: Console) -> None:
    console.rule("[bold]Summary")
    table = Table(
        title=f"on-demand search, {config.eval_questions} questions of {config.eval_data}"
    )
    behaviours = ("correct_no_search", "correct_search", "wrong_no_search", "wrong_search")
    for column in ("policy", "acc", "search ratio", "image", "text", "answered", *behaviours):
        table.add_column(
            column.replace("_", " "), justify="left" if column == "policy" else "right"
        )
    labels = {
        "sft": f"SFT ({config.sft_steps} steps)",
        "grpo": f"+ GRPO ({config.grpo_steps} steps)",
    }
    for key, label in labels.items():
        m = summary["evals"][key]
        share = m.get("behaviour") or {}
        table.add_row(
            label, _pct(m.get("acc")), _pct(m.get("sr")), _pct(m.get("image_search_rate")),
            _pct(m.get("text_search_rate")), _pct(m.get("answered")),
            *(_pct(share.get(b)) for b in behaviours),
        )  # fmt: skip
    console.print(table)

    steps = Table(title="GRPO steps (training rollouts, sampled at T = 1)")
    columns = ("step", "reward_mean", "acc", "format_rate", "search_ratio", "kl", "step_s")
    for column in columns:
        steps.add_column(column, justify="right")
    for row in summary["grpo_steps"]:
        steps.add_row(*(_cell(row.get(c)) for c in columns))
    console.print(steps)

    times = Table(title="stage wall times (and this process's CPU time)")
    times.add_column("stage")
    times.add_column("wall", justify="right")
    times.add_column("CPU", justify="right")
    times.add_column("", justify="left")
    for stage in summary["stages"]:
        status = "" if stage["status"] == "ran" else stage["status"]
        times.add_row(
            stage["name"], duration(stage["seconds"]), duration(stage["cpu_seconds"]), status
        )
    cpu = sum(stage["cpu_seconds"] for stage in summary["stages"])
    times.add_row("[bold]total", f"[bold]{duration(summary['seconds'])}", duration(cpu), "")
    console.print(times)
    outputs = summary["eval_outputs"]["grpo"]
    console.print(
        f"reports: {outputs.get('html', outputs.get('markdown', ''))}; trajectories: "
        f"{outputs.get('viewer', '')} (and the same under eval-sft/); "
        f"summary: {Path(summary['out']) / SUMMARY_FILE}"
    )
    console.print(
        "[dim]A few GRPO steps on a CPU show the loop at work, not a trained searcher; "
        "docs/TRAINING.md has the longer recipes.[/]"
    )


def _cell(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.3f}" if abs(value) < 100 else f"{value:.0f}"
    return str(value)
