"""Timing a flow process from its outputs: fetches counted at a watcher, and the process's own CPU time.

``bench scale`` (since session 5) and ``bench peers`` time a flow over a pre-filled topic this way. A flow
produces a poll batch's outputs together, so they reach a watcher in bursts; a fast flow writes a whole topic
in a few of them, too few for a line fitted through arrival times. Counting per fetch does not need many: the
readings whose outputs arrived after the first fetch that brought any, over the time from that fetch to the
last, the first burst's work simply done before the clock starts.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from confluent_kafka import Consumer

from edge_agent.health import process_cpu_seconds

FETCH_WAIT_MS = 10  # the watcher's fetch.wait.max.ms: librdkafka's 500 ms default holds outputs back in bursts
FETCH_S = 0.2  # one fetch gathers what arrives within this long (or ``FETCH_MAX`` outputs)
FETCH_MAX = 5000


class MeasurementError(RuntimeError):
    """A run that cannot be measured (a flow that died, too few outputs, too few bursts); says what to do."""


@dataclass(frozen=True)
class Throughput:
    """How fast a measured process went: wall-clock readings/s, and CPU seconds per million readings.

    On cores shared with other work the wall-clock rate follows the load; the process's own CPU time per
    reading does much less, so ratios of CPU costs are the steadier comparison.

    Parameters
    ----------
    readings_per_s
        Wall clock, from the outputs' arrivals.
    cpu_s_per_m_readings
        The process's user + system CPU seconds per million readings over the same span (its threads and,
        where its process group is counted (``group_cpu_seconds``), the processes it started; not the
        broker's); ``None`` where ``/proc`` is missing.
    span_s
        Seconds the timed outputs took to arrive (from the first fetch to the last), where counted per fetch.
    fetches
        Watcher fetches that brought outputs, where counted per fetch.
    """

    readings_per_s: float
    cpu_s_per_m_readings: float | None
    span_s: float | None = None
    fetches: int | None = None


@dataclass(frozen=True)
class Fetch:
    """One watcher fetch that brought outputs.

    Parameters
    ----------
    when
        ``perf_counter`` when the fetch returned.
    outputs
        Output records it brought.
    cpu_s
        The measured process's CPU seconds at that moment (``None`` without ``/proc``).
    """

    when: float
    outputs: int
    cpu_s: float | None


def _stat(pid: int | str) -> list[str] | None:
    """The fields of ``/proc/PID/stat`` after the command name (state, ppid, pgrp, ...); None if unreadable."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None



def group_cpu_seconds(pgid: int) -> float | None:
    """User + system CPU seconds of the live processes of a process group, all their threads; None without /proc.

    A flow started in its own session (``start_new_session``) leads its group, so this is the flow and the
    processes it started: a Bytewax cluster's workers (``bench engines``, 2 processes), which ``process_cpu_seconds`` of
    the launcher alone would leave out.

    Parameters
    ----------
    pgid
        The process group: the pid of the process that leads it.
    """
    if _stat(pgid) is None:
        return None
    total = 0.0
    for entry in Path("/proc").iterdir():
        fields = _stat(entry.name) if entry.name.isdigit() else None
        if fields is not None and int(fields[2]) == pgid:
            try:
                total += process_cpu_seconds(entry.name)
            except OSError:  # it ended since: its time is gone with it, as for one that ended before
                pass
    return total


def watch_fetches(watcher: Consumer, messages: int, alive: Callable[[], None], cpu_s: Callable[[], float | None],
                  timeout_s: float, log: Path) -> list[Fetch]:
    """The fetches that brought the first ``messages`` outputs to ``watcher``.

    Parameters
    ----------
    watcher
        A consumer assigned to the output topic, fetching with ``FETCH_WAIT_MS``.
    messages
        Outputs to wait for.
    alive
        Raises if the measured process has died.
    cpu_s
        The measured process's CPU seconds so far.
    timeout_s
        How long to wait for all of them before ``MeasurementError``.
    log
        The measured process's log, named in that error.
    """
    fetches: list[Fetch] = []
    got = 0
    deadline = time.monotonic() + timeout_s
    while got < messages and time.monotonic() < deadline:
        alive()
        # never ask for more than is due: the last fetch returns when its outputs are in, not a wait later
        n = sum(1 for msg in watcher.consume(min(FETCH_MAX, messages - got), FETCH_S) if msg.error() is None)
        if n:
            fetches.append(Fetch(time.perf_counter(), n, cpu_s()))
            got += n
    if got < messages:
        raise MeasurementError(f"only {got} of {messages} outputs arrived in {timeout_s:.0f} s; see {log}")
    return fetches


def fetch_rate(fetches: list[Fetch], per_message: int, hint: str = "pre-fill more messages (--messages)"
               ) -> Throughput:
    """Readings/s and CPU seconds per million readings after the first fetch that brought outputs.

    Parameters
    ----------
    fetches
        From ``watch_fetches``.
    per_message
        Readings per output.
    hint
        What to do when there are fewer than three fetches to time.
    """
    span = fetches[-1].when - fetches[0].when
    if len(fetches) < 3 or span <= 0:
        raise MeasurementError(f"{sum(f.outputs for f in fetches)} outputs arrived in {len(fetches)} fetches: "
                               f"too few to time; {hint}")
    readings = sum(f.outputs for f in fetches[1:]) * per_message
    first, last = fetches[0].cpu_s, fetches[-1].cpu_s
    cpu = None if first is None or last is None else (last - first) / readings * 1e6
    return Throughput(readings / span, cpu, span, len(fetches))
