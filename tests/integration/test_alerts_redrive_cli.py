"""`eddyline alerts redrive` as on-call runs it, on the real broker (Tansu): it says how many letters it sent again
and why they had died, and in a namespace the notify flow never ran in it says so instead of "redrove 0" (and
creates no topics there)."""

from __future__ import annotations

from typer.testing import CliRunner

from connectors.dlq import dlq_headers
from connectors.kafka import EventProducer, KafkaSettings, make_admin, read_topic
from streams.cli import app
from streams.flows.notify import DLQ_TOPIC, RETRY_TOPIC, NotifySettings, create_notify_topics


def _env(kafka: KafkaSettings) -> dict[str, str]:
    return {"EDDYLINE_KAFKA_BOOTSTRAP_SERVERS": kafka.bootstrap_servers, "EDDYLINE_KAFKA_NAMESPACE": kafka.namespace}


def test_redrive_in_a_namespace_the_notify_flow_never_ran_in_says_so_and_creates_nothing(
        kafka_settings: KafkaSettings) -> None:
    result = CliRunner().invoke(app, ["alerts", "redrive", "--idle", "0.5"], env=_env(kafka_settings))
    assert result.exit_code == 2, result.output
    assert f"no topic {kafka_settings.topic(DLQ_TOPIC)}" in result.output
    assert "EDDYLINE_KAFKA_NAMESPACE" in result.output
    made = [t for t in make_admin(kafka_settings).list_topics(timeout=10).topics
            if t.startswith(kafka_settings.namespace)]
    assert made == []


def test_redrive_counts_the_letters_it_sent_again_by_reason(kafka_settings: KafkaSettings) -> None:
    create_notify_topics(kafka_settings, NotifySettings())
    with EventProducer(kafka_settings) as out:
        out.produce_raw(DLQ_TOPIC, b"an alert", b"key", dlq_headers(
            kafka_settings.topic("alerts"), "delivery_failed", "gave up after 5 attempts", 0, 0))
    result = CliRunner().invoke(app, ["alerts", "redrive"], env=_env(kafka_settings))
    assert result.exit_code == 0, result.output
    assert "redrove 1 dead-lettered alerts" in result.stdout and "reason delivery_failed: 1" in result.stdout
    assert [m.value() for m in read_topic(kafka_settings, RETRY_TOPIC, expected=1, timeout=10)] == [b"an alert"]
