"""`eddyline edge degraded` reads the whole device.health topic: one bad message is counted, not a crash."""

from __future__ import annotations

from typer.testing import CliRunner

from connectors.kafka import EventProducer, KafkaSettings, create_topics
from schemas.catalog import DEVICE_HEALTH
from streams.cli import app
from tests.unit.test_schemas_serde import EXAMPLES


def test_a_bad_health_message_is_skipped_and_counted(kafka_settings: KafkaSettings) -> None:
    create_topics(kafka_settings, ["device.health"], partitions=1)
    with EventProducer(kafka_settings) as out:
        for seq in range(3):
            record = {**EXAMPLES[DEVICE_HEALTH], "event_id": f"h-{seq}", "seq": seq}
            out.produce("device.health", DEVICE_HEALTH, record, key=record["device_id"])
        out.produce_raw("device.health", b"not avro", key=b"pi-kitchen")
    env = {"EDDYLINE_KAFKA_BOOTSTRAP_SERVERS": kafka_settings.bootstrap_servers,
           "EDDYLINE_KAFKA_NAMESPACE": kafka_settings.namespace}
    result = CliRunner().invoke(app, ["edge", "degraded"], env=env)
    assert result.exit_code == 0, result.output
    assert "skipped 1 message(s)" in result.output and "no degraded device among 1" in result.output
