"""`eddyline alerts redrive` as on-call runs it, on the real broker (Tansu): it says how many letters it sent again
and why they had died, and in a namespace the notify flow never ran in it says so instead of "redrove 0" (and
creates no topics there)."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from connectors.dlq import dlq_headers
from connectors.kafka import DeliveryError, EventProducer, KafkaSettings, make_admin, read_topic, scan_to_end
from streams.cli import app
from streams.flows import notify
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


def _letters(kafka: KafkaSettings, *reasons: str) -> None:
    create_notify_topics(kafka, NotifySettings())
    with EventProducer(kafka) as out:
        for i, reason in enumerate(reasons):
            out.produce_raw(DLQ_TOPIC, reason.encode(), b"k%d" % i, dlq_headers(
                kafka.topic("alerts"), reason, "why", 0, i))


def test_redrive_skips_letters_that_sending_again_cannot_deliver_and_says_so(kafka_settings: KafkaSettings) -> None:
    """Bytes that are no alert, or an alert that breaks its rules, came back to dlq.alerts after every redrive."""
    _letters(kafka_settings, "undecodable", "delivery_failed", "invalid_alert", "undecodable")
    result = CliRunner().invoke(app, ["alerts", "redrive"], env=_env(kafka_settings))
    assert result.exit_code == 0, result.output
    assert "redrove 1 dead-lettered alerts" in result.stdout, result.output
    assert "skipped 3" in result.stdout and "reason undecodable: 2" in result.stdout, result.output
    assert "reason invalid_alert: 1" in result.stdout
    assert [m.value() for m in read_topic(kafka_settings, RETRY_TOPIC, timeout=5)] == [b"delivery_failed"]
    again = CliRunner().invoke(app, ["alerts", "redrive"], env=_env(kafka_settings))
    assert "redrove 0 dead-lettered alerts" in again.stdout and "skipped" not in again.stdout, again.output


def test_redrive_reads_every_letter_waiting_at_its_start_however_short_idle_is(kafka_settings: KafkaSettings) -> None:
    """``--idle`` timed from before the first fetch, so a short one (or a slow broker) redrove none of them."""
    _letters(kafka_settings, "delivery_failed", "delivery_failed", "delivery_failed")
    assert notify.redrive(kafka_settings, dry_run=True).redriven == 3
    result = CliRunner().invoke(app, ["alerts", "redrive", "--idle", "0.1", "--dry-run"], env=_env(kafka_settings))
    assert result.exit_code == 0, result.output
    assert "would redrive 3 dead-lettered alerts" in result.stdout, result.output
    assert "--idle is no longer used" in result.output


def test_redrive_that_ran_out_of_time_says_what_it_left_and_what_to_do(
        kafka_settings: KafkaSettings, monkeypatch: pytest.MonkeyPatch) -> None:
    """A backlog not read within the time limit was left part-done without a word."""
    monkeypatch.setattr(notify, "scan_to_end", lambda *a, **k: scan_to_end(*a, **k) | {0},  # as if 0 ran out
                        raising=False)
    _letters(kafka_settings, "delivery_failed")
    result = CliRunner().invoke(app, ["alerts", "redrive", "--timeout", "30"], env=_env(kafka_settings))
    assert result.exit_code == 1, result.output
    assert "redrove 1 dead-lettered alerts" in result.stdout
    assert f"{kafka_settings.topic(DLQ_TOPIC)} not read to its end within 30 s (partitions left: 0)" in result.output
    assert "`eddyline alerts redrive` again" in result.output and "raise --timeout" in result.output


def test_a_redrive_that_dies_half_way_sends_again_only_the_letters_since_its_last_commit(
        kafka_settings: KafkaSettings, monkeypatch: pytest.MonkeyPatch) -> None:
    """Offsets were committed once at the end: a run that died after 5 of 10 letters sent all 10 again next time."""
    settings = NotifySettings(batch_size=2)
    _letters(kafka_settings, *["delivery_failed"] * 10)
    produce_raw, sent = EventProducer.produce_raw, []

    def dies_after_five(self: EventProducer, topic: str, *args: object, **kwargs: object) -> None:
        if len(sent) == 5:
            raise RuntimeError("the operator's session dropped")
        sent.append(topic)
        produce_raw(self, topic, *args, **kwargs)

    monkeypatch.setattr(EventProducer, "produce_raw", dies_after_five)
    with pytest.raises(RuntimeError, match="session dropped"):
        notify.redrive(kafka_settings, settings=settings)
    monkeypatch.setattr(EventProducer, "produce_raw", produce_raw)
    assert notify.redrive(kafka_settings, settings=settings).redriven == 6  # the 5th was sent, not yet committed
    assert len(read_topic(kafka_settings, RETRY_TOPIC, timeout=10)) == 11


def test_a_broker_that_stops_acknowledging_mid_redrive_is_a_line_saying_what_to_do(
        kafka_settings: KafkaSettings, monkeypatch: pytest.MonkeyPatch) -> None:
    """The producer's DeliveryError came out of the command as a traceback."""
    _letters(kafka_settings, "delivery_failed")

    def unacknowledged(self: EventProducer, timeout: float = 30.0) -> None:
        raise DeliveryError(f"1 messages still unacknowledged after {timeout} s")

    monkeypatch.setattr(EventProducer, "flush", unacknowledged)
    result = CliRunner().invoke(app, ["alerts", "redrive"], env=_env(kafka_settings))
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit), result.output
    assert "redrive stopped: 1 messages still unacknowledged" in result.output
    assert "run `eddyline alerts redrive` again once Kafka answers" in result.output
