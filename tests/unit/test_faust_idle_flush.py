"""A key a Faust worker loaded from the changelog (a restart, a rebalance) and never heard from again is flushed from
its bytes once idle, as Bytewax flushes a resumed key: what its processor held back (a device's batches behind a
lost one) is handed on, not kept in the changelog until the retention deletes it with the state. Without a broker:
the producer and the store are the stand-ins of ``test_faust_retention``."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Sequence
from types import SimpleNamespace
from typing import Any

from connectors.kafka import KafkaSettings
from schemas import ANOMALY_SCORE, SENSOR_BATCH, AvroSerde
from streams.engines.faust import MARKER, _FlowRunner, changelog_topic
from streams.flows.sensor_anomaly import sensor_anomaly_flow
from streams.processor import Emit, Event, FlowSpec, Processor
from streams.producers.simulator import SensorSimulator
from streams.state import decode_checkpoint, encode_processor
from tests.unit.test_faust_retention import Producer, Store, age, runner_with

DEVICE = b"device-000"
OFFSETS = {("sensor.readings@direct", 1): 7}


def waiting_behind_a_lost_batch() -> tuple[bytes, list[str]]:
    """A device's state that holds its batches after a lost one, and their event ids."""
    records = list(itertools.islice(SensorSimulator(devices=1, readings_per_message=10, seed=3), 8))
    del records[2]
    proc = sensor_anomaly_flow().make_processor(DEVICE.decode())
    scored = proc.process([Event("sensor.readings", DEVICE.decode(), r, 1, i) for i, r in enumerate(records)])
    held = [r["event_id"] for r in records if r["event_id"] not in {e.record["source_event_id"] for e in scored
                                                                    if e.topic == "scores.anomaly"}]
    assert held, "the batches after the lost one wait for it"
    return encode_processor(proc, DEVICE.decode(), OFFSETS), held


def silent(runner: Any, key: bytes, seconds: float) -> None:
    """``key`` was loaded (or last spoke) ``seconds`` earlier than it was."""
    if key in runner._used:
        runner._used[key] -= seconds
    age(runner, key, seconds)


def scored(runner: Any) -> list[str]:
    topic = runner.settings.topic("scores.anomaly")
    return [AvroSerde().decode(value, ANOMALY_SCORE)["source_event_id"]
            for t, _, value, _ in runner.app.producer.sent if t == topic]


def test_a_loaded_key_silent_for_idle_after_hands_on_what_it_held_and_stores_what_is_left():
    blob, held = waiting_behind_a_lost_batch()
    runner = runner_with({DEVICE: 1})
    runner.table.data.data[DEVICE] = blob
    asyncio.run(runner.sweep())
    assert runner.app.producer.sent == [], "loaded just now: not idle yet"
    silent(runner, DEVICE, 61)
    asyncio.run(runner.sweep())
    assert scored(runner) == held
    changelog = changelog_topic(runner.spec, runner.settings)
    written = [(value, p) for t, k, value, p in runner.app.producer.sent if t == changelog and k == DEVICE]
    assert len(written) == 1 and written[0][1] == 1, "its state, flushed, in its own partition"
    assert runner.table.data.data[DEVICE] == written[0][0] and runner._live == {} and DEVICE not in runner._used
    assert decode_checkpoint(written[0][0])["offsets"] == OFFSETS, "the offsets it absorbed, kept"
    runner.app.producer.sent.clear()
    runner.forget_moved()  # a rebalance that leaves its partition here: not loaded again
    asyncio.run(runner.sweep())
    assert runner.app.producer.sent == [] and runner._used == {}, "flushed once"


def test_a_loaded_key_past_the_retention_hands_on_what_it_held_before_its_tombstone():
    blob, held = waiting_behind_a_lost_batch()
    runner = runner_with({DEVICE: 1})
    runner.table.data.data[DEVICE] = blob
    silent(runner, DEVICE, 3601)
    asyncio.run(runner.sweep())
    assert scored(runner) == held
    runner.app.producer.sent.clear()
    age(runner, DEVICE, 3601)
    asyncio.run(runner.sweep())
    changelog = changelog_topic(runner.spec, runner.settings)
    assert runner.app.producer.sent == [(changelog, DEVICE, None, 1), (changelog, MARKER, None, 1)]


def test_a_loaded_key_whose_flush_hands_nothing_on_keeps_its_bytes():
    runner = runner_with({DEVICE: 1})
    blob = runner.table.data.data[DEVICE]
    silent(runner, DEVICE, 61)
    asyncio.run(runner.sweep())
    assert runner.app.producer.sent == [] and runner.table.data.data[DEVICE] is blob and DEVICE not in runner._used


class Counted(Processor):
    """Holds nothing back (no ``flush``); counts its restores."""

    restored = 0

    def __init__(self, key: str) -> None:
        self.key = key

    def process(self, events: Sequence[Event]) -> list[Emit]:
        return []

    def snapshot(self) -> dict[str, Any]:
        return {}

    def restore(self, state: dict[str, Any]) -> None:
        Counted.restored += 1

    def params(self) -> dict[str, Any]:
        return {"key": self.key}


def test_loaded_keys_of_processors_that_hold_nothing_back_are_not_decoded():
    spec = FlowSpec(name="counted", inputs={"sensor.readings": SENSOR_BATCH}, make_processor=Counted)
    store = Store()
    keys = [f"device-{i:03d}".encode() for i in range(3)]
    for key in keys:
        store.put(key, encode_processor(Counted(key.decode()), key.decode()), 1)
    app = SimpleNamespace(producer=Producer(), rebalancing=False)
    runner = _FlowRunner(spec, KafkaSettings(namespace="t18."), app, SimpleNamespace(data=store, get=store.data.get),
                         idle_after_s=60, idle_retention_s=3600)
    runner.forget_moved()  # as after the table's recovery
    for key in keys:
        silent(runner, key, 61)
    Counted.restored = 0
    asyncio.run(runner.sweep())
    assert Counted.restored == 0 and runner.app.producer.sent == [] and runner._used == {}
    assert set(store.data) == set(keys)
