"""The stage clock: wall time, CPU time that includes a stage's child processes, and the
time a reused stage took when it ran."""

from __future__ import annotations

import json
import subprocess
import sys

from rich.console import Console

from mmsr.stages import StageClock


def test_a_stages_cpu_time_counts_the_child_process_it_ran_in():
    clock = StageClock(Console(quiet=True))
    busy = "import time\nend = time.process_time() + 0.4\nwhile time.process_time() < end: pass"
    with clock.stage(1, "child"):
        subprocess.run([sys.executable, "-c", busy], check=True)
    with clock.stage(2, "idle"):
        pass
    child, idle = clock.times
    assert child.cpu_seconds >= 0.4 and child.seconds >= 0.4
    assert idle.cpu_seconds < 0.1 and (child.status, idle.status) == ("ran", "ran")


def test_a_reused_stage_keeps_the_time_it_took_when_it_ran(tmp_path):
    from mmsr.stages import STAGE_TIMES_FILE, StageTime, remembered_times

    first = remembered_times(tmp_path, [StageTime("SFT", 600.0, 1100.0, "ran"),
                                        StageTime("Eye", 0.1, 0.1, "shipped")])  # fmt: skip
    assert "ran_seconds" not in first[0] and "ran_seconds" not in first[1]  # nothing known yet
    again = remembered_times(tmp_path, [StageTime("SFT", 0.0, 0.0, "reused"),
                                        StageTime("GRPO", 300.0, 590.0, "ran")])  # fmt: skip
    assert again[0] == {"name": "SFT", "seconds": 0.0, "cpu_seconds": 0.0, "status": "reused",
                        "ran_seconds": 600.0, "ran_cpu_seconds": 1100.0}  # fmt: skip
    # a stage that runs again (a resumed one too) replaces what was known of it
    remembered_times(tmp_path, [StageTime("SFT", 42.0, 80.0, "ran")])
    last = remembered_times(tmp_path, [StageTime("SFT", 0.0, 0.0, "reused")])
    assert last[0]["ran_seconds"] == 42.0
    assert set(json.loads((tmp_path / STAGE_TIMES_FILE).read_text())) == {"SFT", "GRPO"}
