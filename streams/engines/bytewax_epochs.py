"""Bytewax's recovery partitions, read: the epoch a restart would resume from, and a bound on the running epoch.

Bytewax (0.21) keeps in each ``part-*.sqlite3`` the executions (``exs``: number, workers, the epoch each resumed
from) and every worker's frontier (``fronts``). A restart resumes from the lowest frontier of the last execution's
workers (a worker with none counts at the epoch its execution resumed from) and loads each state's latest
snapshot from before that epoch. That epoch can lag the snapshots by any time: sources run ahead of a slow sink,
and in a cluster the slowest process holds it back. ``StagedStates`` deletes a replaced version only once it has
passed the epoch of the snapshot that replaced it.
"""

from __future__ import annotations

import logging
import math
import sqlite3
import time
from contextlib import closing
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
        exs: list[tuple[int, int, int]] = []
        fronts: list[tuple[int, int, int]] = []
        for part in sorted(self.db_dir.glob("part-*.sqlite3")):
            try:
                with closing(sqlite3.connect(f"file:{part}?mode=ro", uri=True, timeout=5.0)) as db:
                    exs += db.execute("SELECT ex_num, worker_count, resume_epoch FROM exs").fetchall()
                    fronts += db.execute("SELECT ex_num, worker_index, worker_frontier FROM fronts").fetchall()
            except sqlite3.Error as exc:
                log.warning("cannot read the recovery partition %s (%s): replaced states are kept", part, exc)
                return None
        return exs, fronts
