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
