"""``bench scale``: the same pre-filled work at every fleet size; the live schedule, built before the clock, in due
order, continuing each device's sequence."""

from __future__ import annotations

import itertools
import time

from benchmarks.scale import MIN_MESSAGES, READINGS, READINGS_PER_MESSAGE, _schedule, batches_for
from connectors.kafka import KafkaSettings
from schemas import SENSOR_BATCH, AvroSerde
from streams.producers.simulator import SensorSimulator


def test_the_live_schedule_is_encoded_in_due_order_and_continues_each_devices_sequence():
    fleet = SensorSimulator(devices=20, readings_per_message=READINGS_PER_MESSAGE, seed=5)
    list(itertools.islice(fleet, 40))  # the pre-filled phase: two batches per device
    built = time.time()
    schedule, ids, sim = _schedule(KafkaSettings(namespace="t."), fleet, rate=6000.0, live_s=2.0)
    dues = [due for due, _, _ in schedule]
    assert dues == sorted(dues)
    assert dues[0] > built  # nothing falls due before the schedule is built
    assert dues[-1] - dues[0] < 2.0 + 0.5  # the live window, plus the stagger of one batch span (0.49 s)
    assert len(schedule) == 6000 * 2 // (3 * READINGS_PER_MESSAGE)
    serde = AvroSerde()
    records = [serde.decode(value, SENSOR_BATCH) for _, _, value in schedule]
    assert [r["event_id"] for r in records] == ids and len(set(ids)) == len(ids)
    assert [key.decode() for _, key, _ in schedule] == [r["device_id"] for r in records]
    assert [r["event_time"] / 1000 for r in records] == dues  # due when its last reading happens
    first: dict[str, int] = {}
    for r in records:
        first.setdefault(r["device_id"], r["seq"])
    assert set(first.values()) == {3}  # each device goes on after its two pre-filled batches
    last = {r["device_id"]: r["seq"] for r in records}
    assert {d.device_id: d.seq for d in sim.devices} == {d.device_id: last.get(d.device_id, 2) for d in sim.devices}


def test_every_fleet_size_pre_fills_the_same_readings_unless_batches_are_given():
    per_batch = 3 * READINGS_PER_MESSAGE
    for devices in (1_000, 10_000, 100_000):
        assert devices * batches_for(devices) * per_batch == READINGS
    assert batches_for(1_000, batches=6) == 6  # --batches overrides
    assert batches_for(100_000, batches=1) == 1
    assert batches_for(30, batches=1) * 30 >= MIN_MESSAGES  # enough poll rounds to time, whatever is asked


def test_the_gc_trace_is_split_by_phase_and_set_against_the_slowest_live_batches(tmp_path):
    """``--gc-trace``'s summary: collections before and during the live load, the full collection's object count per
    device before it, the leak check, and the share of the slowest live batches whose time in the flow met a pause."""
    import json

    from benchmarks.scale import _by_span, _gc_summary

    trace = tmp_path / "gc.jsonl"
    lines = [{"t": 5.0, "gen": 2, "ms": 900.0, "collected": 0, "gen2": 1_000, "frozen": 3_000},
             {"t": 12.0, "gen": 1, "ms": 400.0, "collected": 3},
             {"t": 30.0, "gen": 0, "ms": 2.0, "collected": 0},
             {"t": 40.0, "leak": 17, "leak_ms": 5}, {"t": 41.0, "leak": 9, "leak_ms": 1, "pid": 2}]
    trace.write_text("".join(json.dumps(x) + "\n" for x in lines))
    slow = [(11.5, 12.5, 900.0)]  # in the flow while the 400 ms collection ran
    windows = slow + [(float(t), t + 0.1, 100.0) for t in range(13, 112)]
    out = _gc_summary(trace, (10.0, 120.0), windows, devices=100, pid=1)  # pid 2: a helper process of the flow
    assert out["gc_before_live_gen2"] == {"count": 1, "total_ms": 900, "max_ms": 900}
    assert out["gc_live_gen1"] == {"count": 1, "total_ms": 400, "max_ms": 400}
    assert out["gc_live_gen0"]["count"] == 1 and out["gc_live_pauses_ms"] == [400]
    assert out["gc_objects_per_device_before_live"] == 40.0 and out["gc_unfrozen_per_device_before_live"] == 10.0
    assert out["gc_leak_check"] == {"collected": 17, "ms": 5}
    assert out["gc_slow_batches_met_pause"] == 1.0 and out["gc_all_batches_met_pause"] == 0.01
    spans = _by_span([(10.0, 1.0, 3.0, 2.0), (40.0, 1.3, 4.0, 2.6), (70.0, 1.5, 5.0, 2.9)], windows)
    assert spans == {"latency_cpu_ms_per_batch_by_span": [round(300 / 28, 3), round(200 / 30, 3)],
                     "broker_cpu_ms_per_batch_by_span": [round(600 / 28, 3), round(300 / 30, 3)],
                     "load_average_by_span": [3.0, 4.0]}


def test_the_live_maximum_says_when_its_probes_did_not_bracket_it_and_needs_a_latency_phase():
    from typer.testing import CliRunner

    from benchmarks.scale import _bound, command

    assert _bound([]) is None
    assert _bound([{"sustained": False}, {"sustained": False}]) == "below the range"
    assert _bound([{"sustained": True}, {"sustained": True}]) == "at or above the top"
    assert _bound([{"sustained": True}, {"sustained": False}]) == "bracketed"
    import typer

    app = typer.Typer()
    app.command()(command)
    result = CliRunner().invoke(app, ["--live-max", "--live-s", "0"])
    assert result.exit_code != 0 and "--no-live-max" in result.output
