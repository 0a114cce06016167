"""Memory over a long run: a device's state does not grow with its readings, and heap that a burst freed goes back to
the system (``streams.memory``). BENCHMARKS.md, "Session 10: memory over a long run"."""

from __future__ import annotations

import gc
import itertools
import weakref

import pytest

from streams.flows.sensor_anomaly import SensorAnomalyProcessor
from streams.memory import (
    GC_THRESHOLDS, HeapReleaser, SurvivorFreezer, flow_collector, free_heap_bytes, release_free_heap, resident_bytes,
)
from streams.processor import Event
from streams.producers.simulator import SensorSimulator
from streams.state import encode_processor


def _fed(batches: int, interval_ms: float) -> list[SensorAnomalyProcessor]:
    sim = SensorSimulator(devices=3, readings_per_message=50, interval_ms=interval_ms, anomaly_rate=0.01, seed=4)
    processors = {d.device_id: SensorAnomalyProcessor(d.device_id) for d in sim.devices}
    for rec in itertools.islice(sim, 3 * batches):
        processors[rec["device_id"]].process([Event("sensor.readings", rec["device_id"], rec)])
    return list(processors.values())


@pytest.mark.parametrize("interval_ms", [1_000, 300_000], ids=["no-cycle", "daily-and-weekly-tables"])
def test_a_devices_state_does_not_grow_with_its_readings(interval_ms: float) -> None:
    """The same devices after 20 and after 200 batches (3,000 and 30,000 readings a series; every 5 minutes, 104
    days, so each series' seasonal tables are allocated in both): the detectors hold the same bytes, and the
    encoded state differs only by a few numbers (sequence high-water mark, counters, an open incident)."""
    short, long = _fed(20, interval_ms), _fed(200, interval_ms)
    for a, b in zip(short, long, strict=True):
        assert [d.state_nbytes() for d in a.detectors.values()] == [d.state_nbytes() for d in b.detectors.values()]
        assert len(encode_processor(b, b.device_id)) <= len(encode_processor(a, a.device_id)) + 256
        assert b.sequence.hwm == 200 and not b.sequence.pending


def test_release_hands_freed_heap_back() -> None:
    if free_heap_bytes() is None:
        pytest.skip("not glibc: nothing to release")
    kept = [bytes(2000) for _ in range(100_000)]  # 200 MB in malloc's arena (above pymalloc's 512 bytes)
    kept = kept[::100]  # 99 of 100 freed, a few kept between them: the free heap cannot shrink from its top
    assert free_heap_bytes() > 150 << 20
    assert release_free_heap() > 100 << 20
    assert len(kept) == 1000


def test_the_releaser_releases_once_per_burst() -> None:
    if free_heap_bytes() is None:
        pytest.skip("not glibc: nothing to release")
    releaser = HeapReleaser(min_free=64 << 20)
    releaser.look()  # whatever this process freed before
    releases = releaser.releases
    kept = [bytes(2000) for _ in range(100_000)]
    kept = kept[::100]
    before = resident_bytes()
    assert releaser.look() > 100 << 20
    assert resident_bytes() < before - (100 << 20)
    assert releaser.look() == 0  # released pages still count as free: no release until the process grows again
    assert releaser.releases - releases == 1 and len(kept) == 1000


def test_the_flow_collector_freezes_what_was_built_and_restores_the_settings_it_found() -> None:
    before = gc.get_threshold()
    callbacks = list(gc.callbacks)
    built = [object() for _ in range(3)]  # noqa: F841 -- kept alive across the freeze
    with flow_collector():
        assert gc.get_threshold() == GC_THRESHOLDS
        assert gc.get_freeze_count() > 0, "what was built before the flow is never scanned again"
    assert gc.get_threshold() == before and gc.get_freeze_count() == 0 and gc.callbacks == callbacks


def _scanned(objects: list[object]) -> list[bool]:
    """Whether a collection would scan each object (frozen objects are in no generation)."""
    scanned = {id(o) for o in gc.get_objects()}
    return [id(o) in scanned for o in objects]


def _parts(processors: list[SensorAnomalyProcessor]) -> list[object]:
    return [x for p in processors for x in (p, p.sequence, *p.detectors.values(), *p.policies.values())]


def test_an_older_collection_in_a_flow_freezes_the_device_states_it_found() -> None:
    """Devices' processors built while the flow runs are scanned by the collector until a generation-1 or full
    collection has seen them survive; from then on they are frozen, and later collections scan only what came
    since. A generation-0 collection freezes nothing."""
    with flow_collector() as freezer:
        gc.disable()  # only the collections below
        try:
            processors = _fed(5, 1_000)
            assert all(_scanned(_parts(processors)))
            gc.collect()
            assert not any(_scanned(_parts(processors))), "the survivors of a full collection are frozen"
            newer = _fed(5, 1_000)
            gc.collect(0)
            assert all(_scanned(_parts(newer)))
            gc.collect(1)
            assert not any(_scanned(_parts(newer))) and freezer.freezes == 2
        finally:
            gc.enable()


def test_a_device_state_holds_no_reference_cycle_so_a_frozen_one_is_freed_when_it_leaves() -> None:
    """Freezing hides cyclic garbage from the collector; a device's state has none, so a frozen processor that
    leaves memory (idle eviction) is freed by reference counting alone, the collector off."""
    with flow_collector():
        processors = _fed(5, 300_000)
        gc.collect()
        refs = [weakref.ref(x) for x in _parts(processors)]
        frozen = gc.get_freeze_count()
        gc.disable()
        try:
            del processors
            assert all(r() is None for r in refs)
            assert gc.get_freeze_count() <= frozen - len(refs)
        finally:
            gc.enable()


def test_every_full_scan_interval_one_full_collection_scans_what_was_frozen() -> None:
    """Cyclic garbage among frozen objects would never be freed: after ``full_scan_s`` everything is unfrozen and
    nothing frozen again until a full collection has scanned it all, which frees such garbage."""
    now = [0.0]
    freezer = SurvivorFreezer(full_scan_s=600, clock=lambda: now[0])
    gc.callbacks.append(freezer)
    gc.disable()
    try:
        cycle: list[object] = []
        cycle.append(cycle)
        ref = weakref.ref(_Node(cycle))
        gc.collect()  # frozen
        del cycle
        gc.collect()
        assert ref() is not None, "frozen cyclic garbage stays"
        now[0] = 600.0
        gc.collect(1)  # everything unfrozen
        assert freezer.thaws == 1 and ref() is not None
        gc.collect(1)  # nothing frozen until a full collection
        assert freezer.freezes == 2
        gc.collect()
        assert ref() is None
        assert (freezer.freezes, freezer.thaws, freezer.scanned_at) == (3, 1, 600.0)  # and freezing resumed
    finally:
        gc.enable()
        gc.callbacks.remove(freezer)
        gc.unfreeze()


class _Node:
    """A weakly referable object in a reference cycle."""

    def __init__(self, cycle: list[object]) -> None:
        self.cycle = cycle
        cycle.append(self)
