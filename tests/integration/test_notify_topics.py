"""``alerts.delivered`` has a retention just above the window it is read back over, on the real broker."""

from __future__ import annotations

import logging

import pytest

from connectors.kafka import EventProducer, KafkaSettings, create_topics, make_admin
from schemas.topics import DELIVERED_TOPIC, TOPIC_CONFIGS
from streams.flows.notify import (
    DeliveredLog,
    NotifySettings,
    Recorded,
    create_notify_topics,
    delivered_retention_ms,
)
from tests.fixtures.config import empty_config

pytestmark = pytest.mark.integration
DAY_MS = 86_400_000


def _partitions(kafka: KafkaSettings) -> int:
    name = kafka.topic(DELIVERED_TOPIC)
    return len(make_admin(kafka).list_topics(name, timeout=10).topics[name].partitions)


def test_the_notify_flow_creates_alerts_delivered_keeping_a_day_more_than_its_window(kafka_settings) -> None:
    settings = NotifySettings(delivered_window_s=3600)
    create_notify_topics(kafka_settings, settings)
    assert delivered_retention_ms(kafka_settings) == 3_600_000 + DAY_MS
    assert _partitions(kafka_settings) == kafka_settings.partitions
    with EventProducer(kafka_settings) as producer:  # the broker takes records on it and gives them back
        DeliveredLog.record(producer, "slack", {"event_id": "e1", "alert_key": "k", "status": "OPENED"})
    assert DeliveredLog(kafka_settings, settings.delivered_window_s).catch_up() == [
        Recorded("slack", "e1", "k", "OPENED")]  # keyed by the alert key


def test_without_a_window_the_table_default_is_the_default_window_and_a_day(kafka_settings) -> None:
    create_topics(kafka_settings, [DELIVERED_TOPIC])  # as ``eddyline topics create`` or any other caller would
    assert TOPIC_CONFIGS[DELIVERED_TOPIC] == {"retention.ms": str(8 * DAY_MS)}
    assert delivered_retention_ms(kafka_settings) == 8 * DAY_MS == NotifySettings().delivered_window_s * 1000 + DAY_MS


def test_an_existing_topic_shorter_than_a_wider_window_is_kept_and_warned_about(
        kafka_settings, caplog: pytest.LogCaptureFixture) -> None:
    create_notify_topics(kafka_settings, NotifySettings(delivered_window_s=3600))
    with caplog.at_level(logging.WARNING, logger="streams.flows.notify"):
        create_notify_topics(kafka_settings, NotifySettings(delivered_window_s=30 * 86_400))
    assert delivered_retention_ms(kafka_settings) == 3_600_000 + DAY_MS  # an existing topic keeps its settings
    [warning] = [r.getMessage() for r in caplog.records if DELIVERED_TOPIC in r.getMessage()]
    assert f"retention.ms to at least {31 * DAY_MS}" in warning and "kafka-configs --alter" in warning, warning
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="streams.flows.notify"):
        create_notify_topics(kafka_settings, NotifySettings(delivered_window_s=1800))  # within: nothing to say
    assert not [r for r in caplog.records if DELIVERED_TOPIC in r.getMessage()]


def test_eddyline_topics_create_makes_alerts_delivered_with_the_configured_window_and_a_day(
        kafka_settings, tmp_path) -> None:
    from typer.testing import CliRunner

    from streams.cli import app

    result = CliRunner().invoke(app, ["topics", "create"], env={
        "EDDYLINE_CONFIG": str(empty_config(tmp_path)), "EDDYLINE_NOTIFY_DELIVERED_WINDOW_S": "7200",
        "EDDYLINE_KAFKA_BOOTSTRAP_SERVERS": kafka_settings.bootstrap_servers,
        "EDDYLINE_KAFKA_NAMESPACE": kafka_settings.namespace})
    assert result.exit_code == 0, result.output
    assert kafka_settings.topic(DELIVERED_TOPIC) in result.output.split()
    assert delivered_retention_ms(kafka_settings) == 7_200_000 + DAY_MS
    assert _partitions(kafka_settings) == kafka_settings.partitions
