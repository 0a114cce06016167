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


def test_degraded_folds_heartbeats_as_it_reads_them(monkeypatch) -> None:
    """A fleet's retention of heartbeats (100,000 devices every 30 s: millions a day) must not be held at once:
    memory follows the devices, as in ``edge status``."""
    import gc
    import weakref

    import streams.cli.edge
    from schemas import AvroSerde

    class Message:
        def __init__(self, value: bytes) -> None:
            self._value = value

        def value(self) -> bytes:
            return self._value

    serde, alive = AvroSerde(), []

    def scan(on_message, timeout: float) -> None:
        for seq in range(500):
            record = {**EXAMPLES[DEVICE_HEALTH], "event_id": f"h-{seq}", "seq": seq}
            msg = Message(serde.encode(DEVICE_HEALTH, record))
            alive.append(weakref.ref(msg))
            on_message(msg)
            del msg
        gc.collect()
        held = sum(ref() is not None for ref in alive)
        assert held <= 1, f"{held} of 500 heartbeats held while reading"

    monkeypatch.setattr(streams.cli.edge, "scan_health", scan)
    result = CliRunner().invoke(app, ["edge", "degraded"])
    assert result.exit_code == 0, result.output
    assert "no degraded device among 1" in result.output
