"""Where a Faust worker keeps a state key's state in the changelog, and when it lets it go, against the real broker.

A flow keyed by a record field (the device) gets some of a device's messages keyed by the device and some keyed by
something else (a gateway): the first reach the state straight from their input partition, which the producers'
partitioner (librdkafka: CRC32 of the key) chose, the others through the repartition topic. Both must land in one
changelog partition, or the device has a state in each. A key silent for the idle retention must leave the changelog
(a tombstone) and the table, as the Bytewax engine deletes an evicted key's state after it, so that a restart does
not load it again.

``python -m tests.integration.test_faust_state_keys STATE_DIR IDLE_AFTER_S [RETENTION_S]`` runs the tally flow's
worker, settings from the environment.
"""

from __future__ import annotations

import signal
import sys
import time
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from aiokafka.partitioner import murmur2

from connectors.kafka import EventProducer, KafkaSettings, create_topics, read_topic
from schemas import SENSOR_BATCH
from streams.engines.faust import changelog_topic
from streams.processor import Emit, Event, FlowSpec, Processor
from streams.state import decode_checkpoint
from tests.integration.test_faust_engine import log_records, start, stop, tail
from tests.integration.test_sensor_flow import simulated

pytestmark = pytest.mark.integration


class Tally(Processor):
    """Counts a device's messages: a small state of a key that is not the Kafka key."""

    def __init__(self, key: str) -> None:
        self.key, self.seen = key, 0

    def process(self, events: Sequence[Event]) -> list[Emit]:
        self.seen += len(events)
        return []

    def snapshot(self) -> dict[str, Any]:
        return {"seen": self.seen}

    def restore(self, state: dict[str, Any]) -> None:
        self.seen = state["seen"]

    def params(self) -> dict[str, Any]:
        return {"key": self.key}


def tally_flow() -> FlowSpec:
    return FlowSpec(name="tally", inputs={"sensor.readings": SENSOR_BATCH}, make_processor=Tally,
                    key=lambda e: e.record["device_id"])


def start_tally(settings: KafkaSettings, state: Path, log: Path, idle_after_s: float,
                retention_s: float | None = None) -> Any:
    args = [str(state), str(idle_after_s)] + ([] if retention_s is None else [str(retention_s)])
    return start("tests.integration.test_faust_state_keys", args, settings, log)


def changelog(settings: KafkaSettings) -> list[Any]:
    raw = settings.model_copy(update={"namespace": ""})
    return [m for m in read_topic(raw, changelog_topic(tally_flow(), settings), timeout=10, idle=0.5)
            if not m.key().startswith(b"\x00")]  # the end markers


def latest(settings: KafkaSettings) -> dict[tuple[bytes, int], bytes | None]:
    """(key, changelog partition) -> the latest value there (None: a tombstone)."""
    return {(m.key(), m.partition()): m.value() for m in changelog(settings)}


def seen(value: bytes | None) -> int:
    return -1 if value is None else decode_checkpoint(value)["state"]["seen"]


def wait_for(what: str, done: Any, timeout: float, log: Path) -> None:
    deadline = time.monotonic() + timeout
    while not done():
        assert time.monotonic() < deadline, f"{what} did not happen within {timeout:.0f} s\n{tail(log)}"
        time.sleep(0.5)


def test_the_repartition_partitioner_agrees_with_the_producers_on_every_key(kafka_settings):
    from streams.engines.faust import producers_partition

    records, _ = simulated(devices=1, messages=1)
    create_topics(kafka_settings, ["sensor.readings"])
    keys = [f"device-{i:03d}" for i in range(60)]
    with EventProducer(kafka_settings) as producer:  # librdkafka, its default partitioner
        for key in keys:
            producer.produce("sensor.readings", SENSOR_BATCH, records[0], key=key)
    placed = {m.key().decode(): m.partition() for m in read_topic(kafka_settings, "sensor.readings", expected=60)}
    assert placed == {k: producers_partition(k.encode(), kafka_settings.partitions) for k in keys}


def test_a_device_keyed_and_unkeyed_keeps_one_state_in_the_partition_the_producers_chose(kafka_settings, tmp_path):
    partitions = kafka_settings.partitions
    records, _ = simulated(devices=8, messages=96)
    device = next(d for d in sorted({r["device_id"] for r in records})
                  if zlib.crc32(d.encode()) % partitions != (murmur2(d.encode()) & 0x7FFFFFFF) % partitions)
    mine = [r for r in records if r["device_id"] == device]
    create_topics(kafka_settings, ["sensor.readings"])
    with EventProducer(kafka_settings) as producer:  # librdkafka, its default partitioner
        for i, rec in enumerate(mine):
            producer.produce("sensor.readings", SENSOR_BATCH, rec, key=device if i % 2 else f"gateway-{i}")
    home = zlib.crc32(device.encode()) % partitions
    log = tmp_path / "faust.log"
    proc = start_tally(kafka_settings, tmp_path / "state", log, idle_after_s=600)
    try:
        wait_for("every message tallied", lambda: len(mine) in {seen(v) for (k, _), v in latest(kafka_settings).items()
                                                               if k == device.encode()}, 120, log)
    finally:
        stop(proc, signal.SIGTERM)
    held = {p: seen(v) for (k, p), v in latest(kafka_settings).items() if k == device.encode() and v is not None}
    assert held == {home: len(mine)}, tail(log)


def test_an_upgrade_moves_a_state_the_old_partitioner_placed_and_a_restart_keeps_the_moved_one(
    kafka_settings, tmp_path
):
    """Before, the repartition topic placed a key by murmur2: its state lies in that partition. The first batch now
    brings it to its CRC32 partition; the state moves there (a tombstone where it was) and stays the one state of the
    key over a restart, which loads both partitions in one pass, the emptied one last."""
    from confluent_kafka import Producer

    from connectors.kafka import logged_config, producer_config
    from streams.engines.faust import ensure_topics
    from streams.state import encode_processor

    partitions = kafka_settings.partitions
    records, _ = simulated(devices=8, messages=96)
    device = next(d for d in sorted({r["device_id"] for r in records})
                  if zlib.crc32(d.encode()) % partitions < (murmur2(d.encode()) & 0x7FFFFFFF) % partitions)
    home, old = zlib.crc32(device.encode()) % partitions, (murmur2(device.encode()) & 0x7FFFFFFF) % partitions
    mine = [r for r in records if r["device_id"] == device]
    spec = tally_flow()
    ensure_topics(spec, kafka_settings)
    before = Tally(device)
    before.seen = 100
    producer = Producer(logged_config(producer_config(kafka_settings)))
    producer.produce(changelog_topic(spec, kafka_settings), key=device.encode(), partition=old,
                     value=encode_processor(before, device, {}))
    producer.flush()

    def unkeyed(recs: list[dict]) -> None:
        with EventProducer(kafka_settings) as producer:
            for i, rec in enumerate(recs):
                producer.produce("sensor.readings", SENSOR_BATCH, rec, key=f"gateway-{i}")

    def tallied(n: int) -> bool:
        return latest(kafka_settings).get((device.encode(), home)) is not None and seen(
            latest(kafka_settings)[(device.encode(), home)]) == n

    unkeyed(mine[:4])
    log = tmp_path / "faust.log"
    proc = start_tally(kafka_settings, tmp_path / "state", log, idle_after_s=600)
    try:
        wait_for("the moved state tallied", lambda: tallied(104), 120, log)
    finally:
        stop(proc, signal.SIGTERM)
    assert latest(kafka_settings)[(device.encode(), old)] is None, "deleted where the old partitioner put it"
    unkeyed(mine[4:5])
    proc = start_tally(kafka_settings, tmp_path / "state", log, idle_after_s=600)
    try:
        wait_for("the restarted worker's tally", lambda: any(seen(v) > 104 or 0 < seen(v) < 100 for (k, p), v in
                                                             latest(kafka_settings).items() if k == device.encode()),
                 120, log)
    finally:
        stop(proc, signal.SIGTERM)
    held = {p: seen(v) for (k, p), v in latest(kafka_settings).items() if k == device.encode() and v is not None}
    assert held == {home: 105}, tail(log)


def test_a_key_silent_past_the_retention_leaves_the_changelog_and_the_table(kafka_settings, tmp_path):
    records, _ = simulated(devices=2, messages=6)
    create_topics(kafka_settings, ["sensor.readings"])
    with EventProducer(kafka_settings) as producer:
        for rec in records:
            producer.produce("sensor.readings", SENSOR_BATCH, rec, key=rec["device_id"])
    devices = {r["device_id"].encode() for r in records}
    log = tmp_path / "faust.log"
    proc = start_tally(kafka_settings, tmp_path / "state", log, idle_after_s=0.5, retention_s=1)
    try:
        def forgotten() -> bool:
            now = latest(kafka_settings)
            return {k for k, _ in now} == devices and all(v is None for v in now.values())

        wait_for("a tombstone for each device", forgotten, 90, log)
    finally:
        stop(proc, signal.SIGTERM)
    assert {m.key() for m in changelog(kafka_settings) if m.value() is not None} == devices  # written, then let go
    stopping = [r for r in log_records(log) if r.get("msg") == "worker stopping"]
    assert stopping and stopping[-1]["keys"] == 0, tail(log)  # gone from the table too, not only the changelog
    restarted = len(log_records(log))
    proc = start_tally(kafka_settings, tmp_path / "state", log, idle_after_s=600)
    try:
        wait_for("the restarted worker's bulk load", lambda: any(
            r.get("msg") == "changelog loaded in bulk" for r in log_records(log)[restarted:]), 90, log)
    finally:
        stop(proc, signal.SIGTERM)
    loaded = [r["keys"] for r in log_records(log)[restarted:] if r.get("msg") == "changelog loaded in bulk"]
    assert loaded == [0], tail(log)


def main() -> None:
    from streams import logs
    from streams.engines.faust import ensure_topics, run_worker

    logs.setup()
    state, idle_after_s = Path(sys.argv[1]), float(sys.argv[2])
    retention = {"idle_retention_s": float(sys.argv[3])} if len(sys.argv) > 3 else {}
    from tests.integration.test_faust_state_keys import tally_flow as flow  # states name their class: not __main__'s

    spec, settings = flow(), KafkaSettings()
    ensure_topics(spec, settings)
    raise SystemExit(run_worker(spec, settings, state_dir=state, loglevel="INFO", lag_interval_s=None,
                                idle_after_s=idle_after_s, **retention))


if __name__ == "__main__":
    main()
