"""`eddyline edge status` forgets a device as the fleet flow does: one silent past ``[fleet] forget_after_s`` (renamed,
retired) is not listed, and its heartbeats still in ``device.health`` do not crash the command. On the real broker
(Tansu)."""

from __future__ import annotations

import json
import time

from typer.testing import CliRunner

from connectors.kafka import EventProducer, KafkaSettings, create_topics
from schemas.catalog import DEVICE_HEALTH
from streams.cli import app
from tests.unit.test_schemas_serde import EXAMPLES


def test_a_renamed_device_is_forgotten_by_the_fleet_clock_and_a_long_silent_one_by_wall_time(
        kafka_settings: KafkaSettings) -> None:
    create_topics(kafka_settings, ["device.health"], partitions=1)
    start = int(time.time() * 1000) - 3_600_000
    with EventProducer(kafka_settings) as out:
        def beat(device: str, t: int) -> None:
            record = {**EXAMPLES[DEVICE_HEALTH], "device_id": device, "event_id": f"{device}-{t}", "event_time": t}
            out.produce("device.health", DEVICE_HEALTH, record, key=device, timestamp_ms=t)

        beat("pi-old", start)  # then renamed pi-new, which has reported every minute since
        for k in range(1, 56):  # the last five minutes ago
            beat("pi-new", start + k * 60_000)
    env = {"EDDYLINE_KAFKA_BOOTSTRAP_SERVERS": kafka_settings.bootstrap_servers,
           "EDDYLINE_KAFKA_NAMESPACE": kafka_settings.namespace, "EDDYLINE_FLEET_FORGET_AFTER_S": "1200"}

    renamed = CliRunner().invoke(app, ["edge", "status", "--json"], env=env)
    assert renamed.exit_code == 0, renamed.output
    assert [json.loads(line)["device_id"] for line in renamed.stdout.splitlines()] == ["pi-new"]

    env["EDDYLINE_FLEET_FORGET_AFTER_S"] = "60"  # the whole fleet silent: the flow's clock stopped, wall time did not
    table = CliRunner().invoke(app, ["edge", "status"], env=env)
    assert table.exit_code == 0, table.output
    assert "no device has reported" in table.stdout, table.stdout
