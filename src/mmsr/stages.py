"""Resumable pipeline stages, shared by `mmsr demo` and the nano replication.

A stage writes into its own folder. When it finishes it leaves `done.json` holding the
options (`params`) it ran under, including those of the stages it depends on, plus what it
produced. A rerun with equal params reuses the record; any difference (one option, or an
upstream stage's) redoes the stage. A stage that starts in a folder left by other params
clears it first, so checkpoints of another recipe are never resumed; with equal params an
interrupted stage keeps its folder and resumes from its own checkpoints.

Pure bookkeeping: no torch, no models; `StageClock` prints each stage's title, then its
wall and CPU time.
"""

from __future__ import annotations

import hashlib
import json
import resource
import shutil
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console

DONE_FILE = "done.json"
PARAMS_FILE = "params.json"


@dataclass
class StageTime:
    name: str
    seconds: float  # wall time
    cpu_seconds: float  # CPU time of this process and of the child processes a stage ran
    # in: below `seconds` x threads when the machine is shared, so both are shown
    status: str  # "ran" | "reused" | "shipped" (a default copied from the package)


@dataclass
class StageClock:
    """Prints each stage as a rule, then its wall time; keeps the times for the summary."""

    console: Console
    times: list[StageTime] = field(default_factory=list)

    @contextmanager
    def stage(self, number: int, title: str) -> Iterator[dict[str, str]]:
        """Times the body; the body sets `state["status"] = "reused"` when it reused work."""
        self.console.rule(f"[bold]{number}. {title}")
        started, cpu_started = time.perf_counter(), cpu_time()
        state = {"status": "ran"}
        yield state
        seconds = time.perf_counter() - started
        cpu = cpu_time() - cpu_started
        self.times.append(StageTime(title, seconds, cpu, state["status"]))
        note = "" if state["status"] == "ran" else f", {state['status']}"
        self.console.print(
            f"[dim]{number}. {title}: {duration(seconds)} (CPU {duration(cpu)}{note})[/]"
        )


STAGE_TIMES_FILE = "stage_times.json"


def remembered_times(folder: Path, times: list[StageTime]) -> list[dict[str, Any]]:
    """`times` as dicts, each reused stage with `ran_seconds` / `ran_cpu_seconds`: what it
    took when it last ran in `folder` (kept in `stage_times.json` there), so a summary
    written again from finished stages still says what each cost. A stage that ran, even
    resumed, replaces its entry."""
    path = folder / STAGE_TIMES_FILE
    known = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    rows = []
    for stage in times:
        row = asdict(stage)
        if stage.status == "ran":
            known[stage.name] = {"seconds": stage.seconds, "cpu_seconds": stage.cpu_seconds}
        elif stage.name in known:
            row["ran_seconds"] = known[stage.name]["seconds"]
            row["ran_cpu_seconds"] = known[stage.name]["cpu_seconds"]
        rows.append(row)
    folder.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(known, indent=2), encoding="utf-8")
    return rows


def cpu_time() -> float:
    """CPU seconds of this process and of its finished child processes (a training stage
    runs in one: `mmsr.replicate.run.training_stage`)."""
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + children.ru_utime + children.ru_stime


def duration(seconds: float) -> str:
    return f"{seconds:.1f} s" if seconds < 60 else f"{int(seconds // 60)} min {seconds % 60:.0f} s"


def params_key(params: dict[str, Any]) -> str:
    """A canonical text of `params` (key order does not matter)."""
    return json.dumps(params, sort_keys=True, default=str)


def reusable(folder: Path, params: dict[str, Any]) -> dict[str, Any] | None:
    """The `done.json` of a finished stage that ran under exactly `params`, else None."""
    done = folder / DONE_FILE
    if not done.is_file():
        return None
    try:
        record = json.loads(done.read_text(encoding="utf-8"))
    except json.JSONDecodeError:
        return None
    return record if params_key(record.get("params", {})) == params_key(params) else None


def reuse(
    folder: Path,
    params: dict[str, Any],
    console: Console,
    state: dict[str, str],
    product: str = "final",
) -> dict[str, Any] | None:
    """The finished stage's record (and says so, naming its `product`) when it ran under
    `params`, else None."""
    done = reusable(folder, params)
    if done is not None:
        state["status"] = "reused"
        console.print(f"reusing {folder / product} (finished earlier)")
    return done


def begin(folder: Path, params: dict[str, Any], console: Console) -> None:
    """Start (or resume) a stage: a folder left by other options is cleared first, so
    that checkpoints of another recipe are never resumed."""
    marker = folder / PARAMS_FILE
    if marker.is_file() and marker.read_text(encoding="utf-8") != params_key(params):
        console.print(f"[yellow]{folder} was made with other options: starting it over[/]")
        shutil.rmtree(folder)
    folder.mkdir(parents=True, exist_ok=True)
    marker.write_text(params_key(params), encoding="utf-8")
    (folder / DONE_FILE).unlink(missing_ok=True)


def finish(folder: Path, params: dict[str, Any], result: dict[str, Any]) -> dict[str, Any]:
    """Mark the stage finished: `done.json` = params + `result` (returned)."""
    record = {"params": params, **result}
    (folder / DONE_FILE).write_text(json.dumps(record, indent=2, default=str), encoding="utf-8")
    return record


def remove(out: Path, names: Iterable[str]) -> None:
    """Delete the stage folders and files `names` under `out` (only those: a run folder may
    hold the user's own files)."""
    for name in names:
        path = out / name
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)


def file_digest(path: Path) -> str | None:
    """The first 16 hex digits of the file's sha256, None when there is no such file."""
    if not path.is_file():
        return None
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16]


def require_positive(config: Any, names: Iterable[str]) -> None:
    """Raise ValueError naming the option (`--sft-steps`) of the first field below 1."""
    for name in names:
        if getattr(config, name) < 1:
            option = "--" + name.replace("_", "-")
            raise ValueError(f"{option} must be >= 1, got {getattr(config, name)}")


def open_run(out: Path, fresh: bool, names: Iterable[str]) -> Path:
    """The run folder `out`, created; `fresh` first deletes what the run wrote (`names`)."""
    if fresh:
        remove(out, names)
    out.mkdir(parents=True, exist_ok=True)
    return out
