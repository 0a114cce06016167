"""Bytewax's recovery partitions, read: the epoch a restart would resume from, and a bound on the running epoch.

Bytewax (0.21) keeps in each ``part-*.sqlite3`` the executions (``exs``: number, workers, the epoch each resumed
from) and every worker's frontier (``fronts``). A restart resumes from the lowest frontier of the last execution's
workers (a worker with none counts at the epoch its execution resumed from) and loads each state's latest
snapshot from before that epoch. That epoch can lag the snapshots by any time: sources run ahead of a slow sink,
and in a cluster the slowest process holds it back. ``StagedStates`` deletes a replaced version only once it has
passed the epoch of the snapshot that replaced it.
"""

from __future__ import annotations

import json
import logging
import math
import subprocess
import sys
import threading
import time
import weakref
from datetime import timedelta
from pathlib import Path

__all__ = ["RecoveryEpochs"]

log = logging.getLogger(__name__)

FIRST_EPOCH = 1  # where Bytewax starts a flow with no recovery data


class RecoveryEpochs:
    """Reads a flow's recovery partitions; make it before the flow starts (its clock starts then).

    Parameters
    ----------
    db_dir
        The recovery folder (``RecoveryConfig.db_dir``).
    epoch_interval
        The flow's epoch interval: a worker moves to its next epoch at most once per this.
    """

    def __init__(self, db_dir: Path, epoch_interval: timedelta) -> None:
        self.db_dir = Path(db_dir)
        self.interval_s = epoch_interval.total_seconds()
        self.started = time.monotonic()
        self._lock = threading.Lock()
        self._reader: subprocess.Popen | None = None  # the process that reads the partitions (``_READER``)
        self._stop: weakref.finalize | None = None
        recorded = self._read()
        # at least the epoch this execution resumes from, as every epoch recorded before it started is;
        # None: unknown (a partition unreadable), and then no bound is known either
        self.start_epoch = None if recorded is None else max(
            [FIRST_EPOCH, *(r[2] for r in recorded[0]), *(f[2] for f in recorded[1])])

    def resume_epoch(self) -> int | None:
        """The epoch a restart would resume from now; None where there is no execution yet or a partition
        cannot be read (then nothing may be deleted)."""
        recorded = self._read()
        if recorded is None or not recorded[0]:
            return None
        exs, fronts = recorded
        ex, workers, resumed = max(exs)
        progress = dict.fromkeys(range(workers), resumed)
        for e, worker, frontier in fronts:
            if e == ex and worker in progress:
                progress[worker] = max(progress[worker], frontier)
        return min(progress.values())

    def running_bound(self) -> float:
        """An epoch no worker of this execution can be past yet, from the time since ``start_epoch``
        (infinite where that is unknown)."""
        if self.start_epoch is None:
            return math.inf
        return self.start_epoch + int((time.monotonic() - self.started) / self.interval_s) + 2

    def _read(self) -> tuple[list[tuple[int, int, int]], list[tuple[int, int, int]]] | None:
        parts = [str(part) for part in sorted(self.db_dir.glob("part-*.sqlite3"))]
        with self._lock:
            try:
                if self._reader is None or self._reader.poll() is not None:
                    self._reader = subprocess.Popen([sys.executable, "-c", _READER], stdin=subprocess.PIPE,
                                                    stdout=subprocess.PIPE, text=True)
                    self._stop = weakref.finalize(self, _stop_reader, self._reader)  # also when dropped unclosed
                assert self._reader.stdin is not None and self._reader.stdout is not None
                self._reader.stdin.write(json.dumps(parts) + "\n")
                self._reader.stdin.flush()
                answer = json.loads(self._reader.stdout.readline() or '{"error": "the reader exited"}')
            except (OSError, ValueError) as exc:
                answer = {"error": f"{type(exc).__name__}: {exc}"}
        if "error" in answer:
            log.warning("cannot read the recovery partitions in %s (%s): replaced states are kept", self.db_dir,
                        answer["error"])
            return None
        return [tuple(r) for r in answer["exs"]], [tuple(r) for r in answer["fronts"]]

    def close(self) -> None:
        """Stop the reader process, if one runs."""
        with self._lock:
            if self._stop is not None:
                self._stop()
            self._reader = self._stop = None


def _stop_reader(reader: subprocess.Popen) -> None:
    if reader.poll() is None:
        reader.stdin.close()  # it ends at the end of its input
        try:
            reader.wait(10)
        except subprocess.TimeoutExpired:
            reader.kill()
            reader.wait()
    reader.stdout.close()


# Bytewax keeps its partitions in WAL mode with its own SQLite library. A second SQLite library in the same
# process does not see that library's POSIX locks (they are per process), takes itself for the only connection
# and resets the shared-memory index (``-shm``) under Bytewax's mapping of it: the flow died of SIGBUS once the
# WAL outgrew the index's first 32 KB (large fleets), and a partition was found corrupt. So they are read from a
# process of their own, which Bytewax's locks hold back like any other.
_READER = """
import json, sqlite3, sys
from contextlib import closing
for line in sys.stdin:
    exs, fronts = [], []
    try:
        for part in json.loads(line):
            with closing(sqlite3.connect(f"file:{part}?mode=ro", uri=True, timeout=5.0)) as db:
                exs += db.execute("SELECT ex_num, worker_count, resume_epoch FROM exs").fetchall()
                fronts += db.execute("SELECT ex_num, worker_index, worker_frontier FROM fronts").fetchall()
        answer = {"exs": exs, "fronts": fronts}
    except sqlite3.Error as exc:
        answer = {"error": f"{part}: {exc}"}
    print(json.dumps(answer), flush=True)
"""
