"""`eddyline edge status` folds ``device.health`` as it reads it: its memory is one small state per device and a
fetch's batch, not the topic's retention (a week of heartbeats of a thousand devices is ten million messages).
On the real broker (Tansu); the peak is Python's own allocations, traced."""

from __future__ import annotations

import time
import tracemalloc

from typer.testing import CliRunner

from connectors.kafka import EventProducer, KafkaSettings, create_topics
from schemas.catalog import DEVICE_HEALTH
from streams.cli import app
from tests.unit.test_schemas_serde import EXAMPLES

DEVICES, BEATS = 20, 2000


def test_status_memory_does_not_grow_with_the_topic(kafka_settings: KafkaSettings) -> None:
    create_topics(kafka_settings, ["device.health"], partitions=2)
    start = int(time.time() * 1000) - BEATS * 1000
    with EventProducer(kafka_settings) as out:
        for k in range(BEATS):
            for d in range(DEVICES):
                record = {**EXAMPLES[DEVICE_HEALTH], "device_id": f"pi-{d}", "event_id": f"pi-{d}-{k}",
                          "event_time": start + k * 1000}
                out.produce("device.health", DEVICE_HEALTH, record, key=f"pi-{d}")
    env = {"EDDYLINE_KAFKA_BOOTSTRAP_SERVERS": kafka_settings.bootstrap_servers,
           "EDDYLINE_KAFKA_NAMESPACE": kafka_settings.namespace}
    warm = CliRunner().invoke(app, ["edge", "status"], env={**env, "EDDYLINE_KAFKA_NAMESPACE": "warm."})
    assert warm.exit_code == 0, warm.output  # its modules imported before tracing

    tracemalloc.start()
    try:
        shown = CliRunner().invoke(app, ["edge", "status"], env=env)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert shown.exit_code == 0, shown.output
    assert f"{DEVICES} devices" in shown.stdout, shown.stdout
    # 40,000 heartbeats held decoded took 88 MiB; folded as read, about 10 (a fetch batch of 10,000 messages)
    assert peak < 32 * 2**20, f"peak {peak / 2**20:.0f} MiB for {DEVICES * BEATS} heartbeats of {DEVICES} devices"
