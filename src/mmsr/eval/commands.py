"""What `mmsr eval` and `mmsr data balance` do, so that `cli.py` stays a thin option parser.

Both raise `ValueError` / `FileNotFoundError` / `RuntimeError` with a message naming the
bad option or file; the CLI turns those into a clean error exit.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console

from mmsr.eval.modes import EvalConfig


@dataclass
class JudgeOptions:
    kind: str = "rule"  # "rule" | "llm"
    url: str = ""  # OpenAI-compatible base URL, e.g. http://127.0.0.1:8000/v1
    model: str = ""
    key_env: str = "OPENAI_API_KEY"
    on_error: str = "fallback"  # "fallback" | "fail"

    def build(self):
        from mmsr.eval.judges import LLMJudge

        if self.kind == "rule":
            return None
        if self.kind != "llm":
            raise ValueError(f"--judge {self.kind!r} must be 'rule' or 'llm'")
        if self.on_error not in ("fallback", "fail"):
            raise ValueError(f"--judge-on-error {self.on_error!r} must be 'fallback' or 'fail'")
        if not self.url:
            raise ValueError("--judge llm needs --judge-url (an OpenAI-compatible base URL)")
        return LLMJudge(base_url=self.url, model=self.model, key_env=self.key_env)


def _tools(mode: str, search_config: Path | None, needs_search: bool = True):
    from mmsr.search.config import SearchConfig
    from mmsr.search.tools import make_tools

    config = SearchConfig.load(search_config)
    if not needs_search or mode == "direct":
        return make_tools(config, image=False, text=False)  # no index to load
    return make_tools(config)


def run_eval(
    *,
    model: str,
    data: str,
    config: EvalConfig,
    out: Path | None,
    limit: int | None,
    judge: JudgeOptions,
    search_config: Path | None = None,
    device: str | None = None,
    console: Console | None = None,
) -> dict[str, Any]:
    """The metrics of one run; writes the reports and viewer under `out` when given."""
    from mmsr.eval.run import evaluate, write_run
    from mmsr.eval.samples import load_eval_samples
    from mmsr.models.loading import load_policy

    samples = load_eval_samples(data, limit)
    llm_judge = judge.build()  # bad judge options fail before the model loads
    policy = load_policy(model, device=device, console=console)
    tools = _tools(config.mode, search_config)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", RuntimeWarning)
            run = evaluate(
                policy, tools, samples, config, llm_judge=llm_judge, on_error=judge.on_error
            )
        errors = Console(stderr=True)  # stdout may be the --json answer
        for warning in caught:
            errors.print(f"[yellow]warning:[/] {warning.message}")
    finally:
        tools.close()
        if llm_judge is not None:
            llm_judge.close()
    run.metrics["model"] = str(model)
    run.metrics["data"] = data
    if out is not None:
        paths = write_run(run, out, samples, title=f"mmsr eval: {config.mode} on {data}")
        run.metrics["outputs"] = {name: str(path) for name, path in paths.items()}
    return run.metrics


def rejudge_run(
    *,
    run_dir: Path,
    judge: JudgeOptions,
    match: str = "em",
    out: Path | None = None,
    console: Console | None = None,
) -> dict[str, Any]:
    """Judge a saved run again (e.g. with an LLM judge) without the model: reads
    `run_dir/trajectories.jsonl`, recomputes the metrics and rewrites the outputs to `out`
    (default: `run_dir`)."""
    import dataclasses
    import json

    from mmsr.eval.run import judge_and_measure, read_run_records, write_run

    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise FileNotFoundError(f"--from-run {run_dir}: no such folder")
    records = read_run_records(run_dir, "--from-run")
    saved: dict[str, Any] = {}
    if (run_dir / "metrics.json").is_file():
        saved = json.loads((run_dir / "metrics.json").read_text(encoding="utf-8"))
    known = {f.name for f in dataclasses.fields(EvalConfig)}
    options = {k: v for k, v in (saved.get("config") or {}).items() if k in known}
    options.setdefault("mode", records[0].mode)
    options["match"] = match
    config = EvalConfig(**options)
    llm_judge = judge.build()
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", RuntimeWarning)
            run = judge_and_measure(records, config, llm_judge=llm_judge, on_error=judge.on_error)
        for warning in caught:
            Console(stderr=True).print(f"[yellow]warning:[/] {warning.message}")
    finally:
        if llm_judge is not None:
            llm_judge.close()
    for key in ("model", "data"):
        if key in saved:
            run.metrics[key] = saved[key]
    target = Path(out) if out is not None else run_dir
    paths = write_run(run, target, title=f"mmsr eval: {config.mode} (judged again)")
    run.metrics["outputs"] = {name: str(path) for name, path in paths.items()}
    return run.metrics


def run_balance(
    *,
    model: str,
    data: str,
    out: Path,
    balance,  # mmsr.data.balance.BalanceConfig
    eval_config: EvalConfig,
    temperature: float = 1.0,
    lenient: bool = False,
    limit: int | None = None,
    search_config: Path | None = None,
    device: str | None = None,
    console: Console | None = None,
    from_decisions: Path | None = None,
) -> dict[str, Any]:
    """Build a search-balanced FVQA parquet from `data`; returns the counts. With
    `from_decisions` (an earlier run's `.balance.json` over the same questions) no model
    runs: its recorded categories are drawn to `balance.target_ratio` again."""
    from mmsr.data.balance import embed_images
    from mmsr.eval.samples import load_eval_samples
    from mmsr.models.loading import load_policy

    out = Path(out)
    if out.suffix.lower() != ".parquet":
        raise ValueError(f"--out {out} must end in .parquet (FVQA layout)")
    if from_decisions is not None:
        from_decisions = Path(from_decisions)
        if not from_decisions.is_file():
            raise FileNotFoundError(f"--from-decisions {from_decisions}: no such file")
        if out.with_suffix(".balance.json").resolve() == from_decisions.resolve():
            raise ValueError(
                f"--out {out} would overwrite --from-decisions {from_decisions}: write the "
                "new set elsewhere"
            )
    samples = load_eval_samples(data, limit)
    base_dir = None if data.startswith("world:") else Path(data).parent
    # Embedded here, before the model loads, so that a missing image fails at once.
    samples = [embed_images(s, base_dir) for s in samples]
    if from_decisions is not None:
        counts = redraw_to_parquet(samples, from_decisions, out, balance)
        return {**counts, "from_decisions": str(from_decisions)}
    policy = load_policy(model, device=device, console=console)
    tools = _tools("rag", search_config, needs_search=balance.rag_k > 0)
    try:
        counts = balance_to_parquet(
            samples, policy, tools, out, balance, eval_config, temperature, lenient,
            console=console,
        )  # fmt: skip
    finally:
        tools.close()
    return {**counts, "model": str(model)}


def balance_to_parquet(
    samples,
    policy,
    tools,
    out: Path,
    balance,  # mmsr.data.balance.BalanceConfig
    eval_config: EvalConfig,
    temperature: float = 1.0,
    lenient: bool = False,
    base_dir: Path | None = None,
    console=None,
) -> dict[str, Any]:
    """Balance `samples` with `policy` as the preliminary model; writes the FVQA parquet
    `out` (images embedded) and its `<out>.balance.json` decisions; returns the counts.
    `base_dir`: where relative image paths of the samples are resolved; `console`: where
    the answers' progress bars go."""
    from mmsr.data.balance import build_balanced, embed_images
    from mmsr.eval.answerer import EngineAnswerer

    samples = [embed_images(s, base_dir) for s in samples]  # a self-contained output
    answerer = EngineAnswerer(
        policy, tools, eval_config, temperature=temperature, lenient=lenient, console=console
    )
    return write_balanced(build_balanced(samples, answerer, balance), Path(out))


def redraw_to_parquet(
    samples, decisions: Path, out: Path, balance, base_dir: Path | None = None
) -> dict[str, Any]:
    """`balance_to_parquet` without a model: the classification recorded in `decisions`
    (a `.balance.json` of the same `samples`, same order) drawn to `balance.target_ratio`."""
    from mmsr.data.balance import embed_images, read_decisions, redraw

    samples = [embed_images(s, base_dir) for s in samples]
    return write_balanced(redraw(samples, read_decisions(decisions), balance), Path(out))


def write_balanced(result, out: Path) -> dict[str, Any]:
    """The balanced parquet `out` and its `<out>.balance.json`; the counts."""
    from mmsr.data.balance import write_decisions
    from mmsr.data.io import write_samples

    if not result.samples:
        raise RuntimeError(
            f"no question survived balancing ({result.counts}); lower --threshold or use --rag-k 0"
        )
    out.parent.mkdir(parents=True, exist_ok=True)
    write_samples(result.samples, out)
    decisions = out.with_suffix(".balance.json")
    write_decisions(result, decisions)
    return {**result.counts, "out": str(out), "decisions": str(decisions)}
