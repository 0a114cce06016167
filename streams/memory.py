"""A flow process's memory: heap that a burst freed goes back to the system, so that a long-running flow's memory
follows its live data, and Python's cyclic collector scans a fleet's long-lived state once, not at every full
collection (``flow_collector``).

glibc's malloc keeps freed memory in its arenas for reuse and returns only what sits at the top of the main arena.
A flow that catches up on a backlog holds the messages fetched ahead of it (librdkafka's queue per partition), frees
them once the backlog is scored, and then kept that memory for the rest of its life: main's flow at 1,000 devices
stayed at 549 MB resident with 52 MB in use after an 8 M-reading backlog (BENCHMARKS.md, "Session 10: memory over a
long run"). ``malloc_trim`` hands free pages back; ``HeapReleaser`` calls it when ``RELEASE_FREE_BYTES`` are free
and the free heap or the process grew by as much since its last release, so a flow in its steady state pays a
``mallinfo2`` and a read of ``/proc/self/statm`` a look. Elsewhere than glibc it does nothing."""

from __future__ import annotations

import ctypes
import gc
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import cache
from typing import Any

log = logging.getLogger(__name__)

RELEASE_FREE_BYTES = 64 << 20  # free heap (and growth) that make a release worth its pass over the arenas
RELEASE_EVERY_S = 2.0  # how often the releaser looks (an epoch)
GC_THRESHOLDS = (50_000, 2, 10)  # a flow process's gc.set_threshold. 50,000: above what a batch allocates and frees,
# so a flow in its steady state runs no collection at all (none in 150 s live at 100,000 devices; Python's 700 ran
# 2,600); 2: a generation-1 collection scans at most about 150,000 young objects while a fleet's processors are built
# (20, sessions 6-12: up to 1 M, 0.4-1.05 s); what it leaves is frozen (SurvivorFreezer). BENCHMARKS.md, "Session 13:
# long-run tail latency at 100,000 devices"
FULL_SCAN_S = 3600.0  # how often the flow collector lets a full collection scan what it froze (see SurvivorFreezer)


class SurvivorFreezer:
    """A ``gc.callbacks`` hook that freezes (``gc.freeze``) what survived each generation-1 or full collection (what
    Python takes for long-lived), so that later collections scan only what came since: a full collection otherwise
    scans every long-lived object of the process, a fleet's processors included (about 14 a device: 1.3-1.4 M
    objects and 1.1-2.0 s at 100,000 devices on this machine, shared).

    ``gc.freeze`` also sets the collection counters back, so while freezing goes on Python never reaches its full
    collection (it runs one after ten generation-1 collections): there is nothing unfrozen of age to scan.

    Freezing changes nothing for reference counting: a frozen processor whose key is evicted is freed at once,
    since a device's state holds no reference cycle (``tests/unit/test_memory_over_time.py``). What it hides is
    cyclic garbage among frozen objects: temporaries in a cycle (asyncio's, Faust's) that were alive at the collection
    and died later (BENCHMARKS.md, "Session 13" measures them). So every ``full_scan_s`` it unfreezes everything and
    freezes nothing until a full collection has scanned it all and freed such garbage (one long pause per
    ``full_scan_s``, when Python next runs a full collection, as it would without this hook), then resumes.

    Parameters
    ----------
    full_scan_s
        Seconds between full collections that scan everything (0: each one does).
    clock
        Monotonic seconds (a test's own).
    """

    def __init__(self, full_scan_s: float = FULL_SCAN_S, clock: Callable[[], float] = time.monotonic) -> None:
        self.full_scan_s = full_scan_s
        self.clock = clock
        self.scanned_at = clock()  # when a full collection last scanned everything
        self.thawed = False  # everything unfrozen, until a full collection has scanned it
        self.freezes = 0
        self.thaws = 0

    def __call__(self, phase: str, info: dict[str, Any]) -> None:
        generation = info.get("generation", 0)
        if phase != "stop" or generation < 1:
            return
        now = self.clock()
        if self.thawed:
            if generation < 2:
                return
            self.thawed = False
            self.scanned_at = now
        elif now - self.scanned_at >= self.full_scan_s:
            gc.unfreeze()
            self.thawed = True
            self.thaws += 1
            return
        gc.freeze()
        self.freezes += 1


@contextmanager
def flow_collector(full_scan_s: float = FULL_SCAN_S) -> Iterator[SurvivorFreezer]:
    """Python's cyclic collector set for a flow process while the flow runs: what was built before (modules,
    models, the flow) is frozen, never scanned again, and so is what survives each older collection
    (``SurvivorFreezer``; ``full_scan_s`` as there), since a full one over a fleet's processors stops the flow for as
    long as it takes (1.1-2.0 s at 100,000 devices, BENCHMARKS.md "Session 13: long-run tail latency at 100,000
    devices"); ``GC_THRESHOLDS`` keep the younger ones small. Yields the hook; restored on the way out."""
    thresholds = gc.get_threshold()
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)
    freezer = SurvivorFreezer(full_scan_s)
    gc.callbacks.append(freezer)
    try:
        yield freezer
    finally:
        gc.callbacks.remove(freezer)
        gc.set_threshold(*thresholds)
        gc.unfreeze()


class _MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]


@cache
def _glibc() -> Any | None:
    """glibc with ``mallinfo2`` (2.33+) and ``malloc_trim`` typed; None on another C library."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallinfo2.restype = _MallInfo2
        libc.malloc_trim.argtypes = [ctypes.c_size_t]
    except (OSError, AttributeError):
        return None
    return libc


def free_heap_bytes() -> int | None:
    """Bytes malloc holds free in its arenas (pages handed back by a release included); None without glibc."""
    libc = _glibc()
    return None if libc is None else int(libc.mallinfo2().fordblks)


def resident_bytes() -> int:
    """This process's resident memory (``/proc/self/statm``)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def release_free_heap() -> int:
    """Hand malloc's free pages back to the system (``malloc_trim``); the resident bytes that went (0 without glibc).
    It walks every arena, holding its lock: call it after a burst was freed, not on a timer alone."""
    libc = _glibc()
    if libc is None:
        return 0
    before = resident_bytes()
    libc.malloc_trim(0)
    return max(0, before - resident_bytes())


class HeapReleaser:
    """A daemon thread that looks every ``every_s`` and releases malloc's free heap (``release_free_heap``) when at
    least ``min_free`` of it is free and, since its last release, either the free heap or the process grew by
    ``min_free``. Released pages still count as free in ``mallinfo2``, so the free figure alone would release again at
    every look; a burst freed shows as more free heap, or (freed again into pages that were released before and came
    back into use) as a larger process.

    Parameters
    ----------
    every_s
        Seconds between looks.
    min_free
        Free heap, and growth of it or of the process since the last release, that make a release worth its pass
        over the arenas.
    """

    def __init__(self, every_s: float = RELEASE_EVERY_S, min_free: int = RELEASE_FREE_BYTES) -> None:
        self.every_s = every_s
        self.min_free = min_free
        self.released = 0  # resident bytes handed back so far
        self.releases = 0
        self._after = (0, 0)  # (free heap, resident bytes) after the last release
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="eddyline-heap-release", daemon=True)

    def start(self) -> HeapReleaser:
        if _glibc() is not None:
            self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(10)

    def look(self) -> int:
        """One look: release if a burst was freed since the last release; the resident bytes that went."""
        free = free_heap_bytes()
        if free is None or free < self.min_free:
            return 0
        free_after, resident_after = self._after
        if free < free_after + self.min_free and resident_bytes() < resident_after + self.min_free:
            return 0
        went = release_free_heap()
        self._after = (free_heap_bytes() or 0, resident_bytes())
        self.released += went
        self.releases += 1
        log.debug("free heap released", extra={"bytes": went, "free": free})
        return went

    def _run(self) -> None:
        while not self._stop.wait(self.every_s):
            self.look()
