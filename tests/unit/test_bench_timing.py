"""The benchmarks' CPU reading of a measured flow counts the processes it started (a Bytewax cluster's workers)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

from benchmarks.timing import group_cpu_seconds
from edge_agent.health import process_cpu_seconds

# a launcher that starts a busy worker and waits, as bytewax_cluster starts its processes
LAUNCHER = ("import subprocess, sys; w = subprocess.Popen([sys.executable, '-c', 'while True: pass']); "
            "print(w.pid, flush=True); sys.stdin.read()")


def test_group_cpu_seconds_counts_the_workers_a_launcher_started() -> None:
    launcher = subprocess.Popen([sys.executable, "-c", LAUNCHER], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                text=True, start_new_session=True)
    try:
        assert launcher.stdout is not None
        worker = int(launcher.stdout.readline())
        deadline = time.monotonic() + 60
        while process_cpu_seconds(worker) < 0.3 and time.monotonic() < deadline:
            time.sleep(0.05)
        before = process_cpu_seconds(launcher.pid) + process_cpu_seconds(worker)
        group = group_cpu_seconds(launcher.pid)
        after = process_cpu_seconds(launcher.pid) + process_cpu_seconds(worker)
        assert group is not None and before <= group <= after
        assert group >= process_cpu_seconds(launcher.pid) + 0.3  # the launcher's own CPU misses the worker's
    finally:
        os.killpg(launcher.pid, signal.SIGKILL)
        launcher.wait(10)
