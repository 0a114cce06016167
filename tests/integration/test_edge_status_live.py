"""`eddyline edge status` and `edge degraded` on a live fleet: heartbeats keep coming while they read.

``device.health`` never goes quiet while agents run, so a reader that waits for the topic to go idle read for its
whole ``--timeout``. Both commands, and ``read_latest`` (the state of a compacted topic), read each partition up
to its end as of their start and return, with every device, while the heartbeat source is still sending. Some partitions stay empty (two devices, four partitions):
an empty partition is done at once. On the real broker (Tansu), whose ListOffsets answers are not used.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from typer.testing import CliRunner

from connectors.kafka import EventProducer, KafkaSettings, create_topics, read_latest, read_to_end
from schemas.catalog import DEVICE_HEALTH
from streams.cli import app
from tests.unit.test_schemas_serde import EXAMPLES

DEVICES = ("pi-a", "pi-b")
SOURCE_LIFETIME_S = 60.0  # the heartbeat source gives up after this; a reader waiting for idle returns after it


@contextmanager
def heartbeats(kafka: KafkaSettings) -> Iterator[threading.Event]:
    """Heartbeats of ``DEVICES`` every 20 ms until the block ends; the event is set if the source ran out first."""
    done, ran_out = threading.Event(), threading.Event()
    out = EventProducer(kafka)

    def beat(seq: int) -> None:
        for device in DEVICES:
            record = {**EXAMPLES[DEVICE_HEALTH], "device_id": device, "event_id": f"{device}-{seq}", "seq": seq,
                      "dead_letters": 0}  # a healthy device: a dead letter in its first heartbeat is a state
            out.produce("device.health", DEVICE_HEALTH, record, key=device)

    def run() -> None:
        seq = 1
        while not done.wait(0.02):
            beat(seq)
            out.poll(0)
            seq += 1
        out.flush(30)

    beat(0)
    out.flush(30)  # every device is on the topic before the command starts
    source = threading.Thread(target=run, daemon=True)
    source.start()
    timer = threading.Timer(SOURCE_LIFETIME_S, lambda: (ran_out.set(), done.set()))
    timer.start()
    try:
        yield ran_out
    finally:
        timer.cancel()
        done.set()
        source.join(60)
        out.close()


def _env(kafka: KafkaSettings) -> dict[str, str]:
    return {"EDDYLINE_KAFKA_BOOTSTRAP_SERVERS": kafka.bootstrap_servers, "EDDYLINE_KAFKA_NAMESPACE": kafka.namespace}


def test_edge_status_and_degraded_return_while_heartbeats_keep_coming(kafka_settings: KafkaSettings) -> None:
    create_topics(kafka_settings, ["device.health"], partitions=4)
    with heartbeats(kafka_settings) as ran_out:
        status = CliRunner().invoke(app, ["edge", "status", "--json", "--timeout", "120"], env=_env(kafka_settings))
        assert not ran_out.is_set(), "edge status read until the heartbeats stopped"
        degraded = CliRunner().invoke(app, ["edge", "degraded", "--timeout", "120"], env=_env(kafka_settings))
        assert not ran_out.is_set(), "edge degraded read until the heartbeats stopped"
    assert status.exit_code == 0, status.output
    rows = [json.loads(line) for line in status.stdout.splitlines()]
    assert sorted(r["device_id"] for r in rows) == sorted(DEVICES), rows
    assert {r["state"] for r in rows} == {"ok"}, rows
    assert degraded.exit_code == 0, degraded.output
    assert f"no degraded device among {len(DEVICES)}" in degraded.output


def test_read_latest_returns_at_the_end_while_heartbeats_keep_coming(kafka_settings: KafkaSettings) -> None:
    create_topics(kafka_settings, ["device.health"], partitions=4)
    with heartbeats(kafka_settings) as ran_out:
        latest = read_latest(kafka_settings, "device.health", timeout=120)
        assert not ran_out.is_set(), "read_latest read until the heartbeats stopped"
    assert sorted(latest) == sorted(d.encode() for d in DEVICES)


def test_read_to_end_stops_at_the_end_as_of_its_start_and_resumes_from_positions(
        kafka_settings: KafkaSettings) -> None:
    create_topics(kafka_settings, ["records"], partitions=3)
    with EventProducer(kafka_settings) as out:
        for i in range(5):
            out.produce_raw("records", b"first-%d" % i, key=b"one-key")
    positions: dict[int, int] = {}
    messages, pending = read_to_end(kafka_settings, "records", positions, timeout=60)
    assert not pending and [m.value() for m in messages] == [b"first-%d" % i for i in range(5)]
    with EventProducer(kafka_settings) as out:
        for i in range(2):
            out.produce_raw("records", b"then-%d" % i, key=b"one-key")
    messages, pending = read_to_end(kafka_settings, "records", positions, timeout=60)
    assert not pending and [m.value() for m in messages] == [b"then-0", b"then-1"]
    messages, pending = read_to_end(kafka_settings, "records", positions, timeout=60)
    assert (messages, pending) == ([], set())
