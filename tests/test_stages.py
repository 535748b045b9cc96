"""The stage clock: wall time, and CPU time that includes a stage's child processes."""

from __future__ import annotations

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
