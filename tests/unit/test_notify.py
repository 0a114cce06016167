"""The notify flow's decisions without Kafka or HTTP: backoff, the circuit breaker, retry or dead letter."""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import pytest
from pydantic import ValidationError

from connectors.alerting import AlertDispatcher
from connectors.delivery import Backoff, CircuitBreaker, DeliveryError, HttpRetryPolicy
from connectors.dlq import dlq_info
from connectors.kafka import DeliveryError as KafkaDeliveryError, KafkaSettings
from schemas import ALERT, AvroSerde, wire
from schemas.retry import retry_headers, retry_info
from streams.flows.notify import (
    DEAD,
    DEFERRED,
    DELIVERED,
    DELIVERED_TOPIC,
    DLQ_TOPIC,
    DUPLICATE,
    RATE_LIMITED,
    RETRY,
    RETRY_TOPIC,
    DeliveredLog,
    Delivery,
    Notifier,
    NotifyFlow,
    NotifySettings,
    Recorded,
)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Channel:
    """A channel that answers with ``errors`` in turn (None: delivers), then delivers; it records what it delivered."""

    def __init__(self, name: str, errors: list[Exception | None] | None = None) -> None:
        self.name = name
        self.errors = list(errors or [])
        self.calls = 0
        self.delivered: list[tuple[str, str]] = []

    def deliver(self, alert: Mapping[str, Any]) -> None:
        self.calls += 1
        error = self.errors.pop(0) if self.errors else None
        if error is not None:
            raise error
        self.delivered.append((alert["alert_key"], alert["status"]))

    def close(self) -> None:
        return None


def alert(key: str = "k", status: str = "OPENED", n: int = 0) -> dict[str, Any]:
    return {"event_id": f"{key}-{status}-{n}", "event_time": 1000 + n, "producer": "t", "alert_key": key,
            "status": status, "severity": "ERROR", "source": "s", "entity": "e", "summary": "x"}


def delivery(a: dict[str, Any], destination: str = "pd", attempt: int = 1) -> Delivery:
    return Delivery(destination, attempt, a, b"v", a["alert_key"].encode(), ("alerts", 0, 0))


def notifier(*channels: Channel, **options: Any) -> Notifier:
    settings = NotifySettings(**{"concurrency": 1, "max_attempts": 3, "breaker_failures": 2, "breaker_reset_s": 10.0,
                                 "backoff_s": 1.0, "backoff_cap_s": 8.0, **options})
    return Notifier(AlertDispatcher(list(channels)), settings, clock_ms=lambda: 0,
                    backoff=Backoff(1.0, 8.0, random.Random(1)))


def test_backoff_doubles_with_jitter_up_to_the_cap() -> None:
    backoff = Backoff(1.0, 8.0, random.Random(7))
    for attempt, full in ((1, 1.0), (2, 2.0), (3, 4.0), (4, 8.0), (9, 8.0)):
        delays = [backoff.delay(attempt) for _ in range(200)]
        assert full / 2 <= min(delays) and max(delays) <= full
        assert len(set(delays)) > 100  # jittered, not one value


def test_breaker_opens_after_failures_lets_one_trial_through_and_closes_on_success() -> None:
    clock = Clock()
    breaker = CircuitBreaker(failures=2, reset_s=5.0, clock=clock)
    assert breaker.admit() == "closed"
    breaker.failure()
    assert breaker.state == "closed"
    breaker.failure()
    assert breaker.state == "open" and breaker.admit() is None and breaker.wait_s() == 5.0
    clock.now += 5.0
    assert breaker.admit() == "half_open" and breaker.admit() is None  # one trial at a time
    breaker.failure()
    assert breaker.state == "open"
    clock.now += 5.0
    assert breaker.admit() == "half_open"
    breaker.success()
    assert breaker.state == "closed" and breaker.admit() == "closed"


def test_a_failed_attempt_is_retried_later_then_dead_lettered_after_max_attempts() -> None:
    pd = Channel("pd", [DeliveryError("503", status=503)] * 5)
    n = notifier(pd, breaker_failures=10)
    [first] = n.deliver([delivery(alert())])
    assert first.outcome == RETRY and first.attempt == 2 and 500 <= first.due_ms <= 1000
    [second] = n.deliver([delivery(alert(), attempt=2)])
    assert second.outcome == RETRY and second.attempt == 3 and 1000 <= second.due_ms <= 2000
    [last] = n.deliver([delivery(alert(), attempt=3)])
    assert last.outcome == DEAD and last.reason == "delivery_failed" and "3 attempts" in last.error


def test_a_refusal_is_dead_lettered_at_once_and_keeps_the_breaker_closed() -> None:
    pd = Channel("pd", [DeliveryError("bad key", status=400)] * 3)
    n = notifier(pd)
    results = n.deliver([delivery(alert(str(i))) for i in range(3)])
    assert [(r.outcome, r.reason) for r in results] == [(DEAD, "refused")] * 3
    assert n.breakers["pd"].state == "closed"


def test_an_open_breaker_defers_without_calling_and_without_using_attempts() -> None:
    pd = Channel("pd", [DeliveryError("down", status=503)] * 3)
    n = notifier(pd)
    results = n.deliver([delivery(alert(str(i))) for i in range(5)])
    assert [r.outcome for r in results] == [RETRY, RETRY, DEFERRED, DEFERRED, DEFERRED]
    assert pd.calls == 2
    assert all(r.attempt == 1 and r.due_ms >= 10_000 for r in results[2:])  # the breaker's reset, then jitter
    n.breakers["pd"].clock = lambda: 10**9  # long after the reset: the next call is a trial
    [trial] = n.deliver([delivery(alert("9"), attempt=2)])
    assert trial.outcome == DEFERRED and trial.attempt == 2  # a failed trial costs the alert no attempt


def test_deliveries_of_one_key_keep_their_order_and_replays_are_skipped() -> None:
    pd, slack = Channel("pd"), Channel("slack")
    n = notifier(pd, slack, concurrency=4)
    batch = [delivery(alert(k, s), dest) for k in ("a", "b", "c") for s in ("OPENED", "RESOLVED")
             for dest in ("pd", "slack")]
    assert {r.outcome for r in n.deliver(batch)} == {DELIVERED}
    for channel in (pd, slack):
        for k in ("a", "b", "c"):
            assert [s for key, s in channel.delivered if key == k] == ["OPENED", "RESOLVED"]
    assert {r.outcome for r in n.deliver(batch)} == {DUPLICATE}
    assert len(pd.delivered) == 6


@pytest.mark.parametrize("resolved_at", [5, -60_000], ids=["resolve-stamped-later", "device-clock-stepped-back"])
def test_a_late_trigger_of_a_resolved_alert_is_resolved_again(resolved_at: int) -> None:
    # The key names the incident: whichever clock stamped the resolve (a device's NTP step), it ends closed.
    pd = Channel("pagerduty", [DeliveryError("503", status=503)])
    n = notifier(pd)
    assert n.deliver([delivery(alert("k", "OPENED", 0), "pagerduty")])[0].outcome == RETRY
    resolve = alert("k", "RESOLVED", 5) | {"event_time": 1000 + resolved_at}
    assert n.deliver([delivery(resolve, "pagerduty")])[0].outcome == DELIVERED
    results = n.deliver([delivery(alert("k", "OPENED", 0), "pagerduty", attempt=2)])
    assert [r.outcome for r in results] == [DELIVERED, DELIVERED]
    assert pd.delivered == [("k", "RESOLVED"), ("k", "OPENED"), ("k", "RESOLVED")]  # the incident ends closed
    assert results[1].delivery.alert["event_id"] == resolve["event_id"]
    assert n.deliver([delivery(alert("k2", "OPENED", 0), "pagerduty")])[0].outcome == DELIVERED  # no other key


def test_a_restarted_notifier_remembers_resolves_from_the_delivered_records() -> None:
    before = Channel("pagerduty", [DeliveryError("503", status=503)])
    n = notifier(before)
    assert n.deliver([delivery(alert("k", "OPENED", 0), "pagerduty")])[0].outcome == RETRY
    assert n.deliver([delivery(alert("k", "RESOLVED", 5), "pagerduty")])[0].outcome == DELIVERED
    after = Channel("pagerduty", [None, DeliveryError("503", status=503)])
    restarted = notifier(after)
    restarted.recall_delivered("pagerduty", alert("k", "RESOLVED", 5)["event_id"], "k", "RESOLVED")
    restarted.recall_delivered("pagerduty", alert("j", "OPENED", 0)["event_id"], "j", "OPENED")
    trigger, resolve = restarted.deliver([delivery(alert("k", "OPENED", 0), "pagerduty", attempt=2)])
    assert (trigger.outcome, resolve.outcome) == (DELIVERED, RETRY)  # the resolve again is retried in its turn
    assert AvroSerde().decode(resolve.delivery.value, ALERT)["status"] == "RESOLVED"
    assert [r.outcome for r in restarted.deliver([delivery(alert("j", "UPDATED", 1), "pagerduty")])] == [DELIVERED]


class Record:
    """An ``alerts.delivered`` message as ``read_to_end`` gives it."""

    def __init__(self, value: bytes, key: bytes | None) -> None:
        self._value, self._key = value, key

    def value(self) -> bytes:
        return self._value

    def key(self) -> bytes | None:
        return self._key

    def timestamp(self) -> tuple[int, int]:
        return (1, time.time_ns() // 1_000_000)

    def partition(self) -> int:
        return 0

    def offset(self) -> int:
        return 0


def test_the_delivered_records_are_read_back_with_their_alert_key_and_status(monkeypatch: pytest.MonkeyPatch) -> None:
    import streams.flows.notify as notify

    records = [Record(b'{"destination":"pagerduty","event_id":"e2","status":"RESOLVED"}', b"k"),
               Record(b'{"destination":"slack","event_id":"e1"}', None), Record(b"garbage", b"k")]
    monkeypatch.setattr(notify, "read_to_end", lambda *a, **k: (records, set()))
    log = DeliveredLog(KafkaSettings(bootstrap_servers="127.0.0.1:1"), 3600.0)
    assert log.catch_up() == [Recorded("pagerduty", "e2", "k", "RESOLVED"), Recorded("slack", "e1", "", "")]
    # what a (re)assigned flow does with them
    pd = Channel("pagerduty")
    with offline_flow(notifier(pd)) as flow:
        flow.delivered.catch_up = log.catch_up  # type: ignore[method-assign]
        flow._assigned(flow.consumer, [])
        late = flow.notifier.deliver([delivery(alert("k", "OPENED", 0) | {"event_id": "e0"}, "pagerduty", 2)])
    assert [r.outcome for r in late] == [DELIVERED, DELIVERED] and pd.delivered == [("k", "OPENED"), ("k", "RESOLVED")]


def test_a_chat_channel_gets_each_alert_event_once_even_a_late_trigger() -> None:
    slack = Channel("slack", [DeliveryError("503", status=503)])
    n = notifier(slack)
    assert n.deliver([delivery(alert("k", "OPENED", 0), "slack")])[0].outcome == RETRY
    assert n.deliver([delivery(alert("k", "RESOLVED", 5), "slack")])[0].outcome == DELIVERED
    results = n.deliver([delivery(alert("k", "OPENED", 0), "slack", attempt=2)])
    assert [r.outcome for r in results] == [DELIVERED]  # a message is not state: no second resolve
    assert slack.delivered == [("k", "RESOLVED"), ("k", "OPENED")]
    n.recall_delivered("slack", alert("k", "UPDATED", 7)["event_id"])  # recorded by an earlier run
    assert n.deliver([delivery(alert("k", "UPDATED", 7), "slack")])[0].outcome == DUPLICATE


def test_an_unknown_destination_is_dead_lettered_with_the_configured_ones() -> None:
    [r] = notifier(Channel("pd")).deliver([delivery(alert(), "teams")])
    assert r.outcome == DEAD and r.reason == "unknown_destination" and "pd" in r.error


def test_retry_headers_round_trip_and_bad_ones_are_named() -> None:
    info = retry_info(list(retry_headers("pagerduty", 3, 1234, "HTTP 503").items()))
    assert (info.destination, info.attempt, info.due_ms, info.error) == ("pagerduty", 3, 1234, "HTTP 503")
    with pytest.raises(ValueError, match="attempt"):
        retry_info({"eddyline.retry.due": b"1"})
    with pytest.raises(ValueError, match="integers"):
        retry_info(retry_headers("slack", 1, 5) | {"eddyline.retry.due": b"soon"})


def test_cli_errors_of_the_notify_commands_say_what_to_do(defaults_config) -> None:
    from typer.testing import CliRunner

    from streams.cli import app

    result = CliRunner().invoke(app, ["run", "notify", "--engine", "faust"])
    assert result.exit_code == 2 and "drop --engine" in result.output
    result = CliRunner().invoke(app, ["run", "notify"])
    assert result.exit_code == 2 and "no alert destination is configured" in result.output
    result = CliRunner().invoke(app, ["alerts", "redrive", "--timeout", "0"])
    assert result.exit_code == 2 and "--timeout" in result.output


def test_a_rate_limited_alert_waits_for_retry_after_without_using_its_attempts() -> None:
    limited = DeliveryError("HTTP 429", status=429, retry_after=30.0)
    slack = Channel("slack", [limited] * 12 + [DeliveryError("HTTP 503", status=503, retry_after=20.0)])
    n = notifier(slack, max_attempts=3, max_rate_limited=12, breaker_failures=100, backoff_cap_s=300.0)
    d = delivery(alert(), "slack")
    for times in range(1, 12):  # far more than max_attempts, inside a rate-limit window
        [r] = n.deliver([d])
        assert (r.outcome, r.reason, r.attempt, r.rate_limited) == (DEFERRED, "rate_limited", 1, times)
        assert r.due_ms >= 30_000  # never sooner than the receiver asked
        d = Delivery(d.destination, r.attempt, d.alert, d.value, d.key, d.origin, r.rate_limited)
    [last] = n.deliver([d])  # the bound: nothing is deferred for ever
    assert (last.outcome, last.reason) == (DEAD, "rate_limited") and "12 rate-limited answers" in last.error
    [failed] = n.deliver([delivery(alert("other"), "slack")])  # a 5xx's Retry-After counts too
    assert failed.outcome == RETRY and failed.attempt == 2 and failed.due_ms >= 20_000


def test_a_retry_after_longer_than_the_cap_is_cut_to_it() -> None:
    slack = Channel("slack", [DeliveryError("HTTP 429", status=429, retry_after=86_400.0)])
    [r] = notifier(slack, breaker_failures=100, backoff_cap_s=8.0).deliver([delivery(alert(), "slack")])
    assert r.outcome == DEFERRED and 4_000 <= r.due_ms <= 8_000


def test_a_huge_attempt_number_is_rescheduled_at_the_cap_and_max_attempts_is_bounded() -> None:
    assert 4.0 <= Backoff(1.0, 8.0, random.Random(1)).delay(1100) <= 8.0
    assert 0 < HttpRetryPolicy(backoff=0.5).delay(5000) < float("inf")
    pd = Channel("pd", [DeliveryError("HTTP 503", status=503)])
    [r] = notifier(pd, max_attempts=100_000, breaker_failures=100).deliver([delivery(alert(), attempt=1100)])
    assert r.outcome == RETRY and r.attempt == 1101 and 4_000 <= r.due_ms <= 8_000
    with pytest.raises(ValidationError, match="max_attempts"):
        NotifySettings(max_attempts=100_001)


class Msg:
    def __init__(self, topic: str, offset: int, value: bytes, key: bytes, headers: dict[str, bytes] | None = None):
        self._topic, self._offset, self._value, self._key = topic, offset, value, key
        self._headers = list((headers or {}).items())

    def topic(self) -> str:
        return self._topic

    def partition(self) -> int:
        return 0

    def offset(self) -> int:
        return self._offset

    def value(self) -> bytes:
        return self._value

    def key(self) -> bytes:
        return self._key

    def headers(self) -> list[tuple[str, bytes]]:
        return self._headers

    def error(self) -> None:
        return None


class FakeConsumer:
    def __init__(self) -> None:
        self.commits: list[list[tuple[str, int, int]]] = []

    def commit(self, offsets: list[Any], asynchronous: bool) -> None:
        self.commits.append([(tp.topic, tp.partition, tp.offset) for tp in offsets])

    def pause(self, partitions: list[Any]) -> None:
        return None

    def seek(self, partition: Any) -> None:
        return None

    def subscribe(self, *args: Any, **kwargs: Any) -> None:
        return None

    def unsubscribe(self) -> None:
        return None

    def close(self) -> None:
        return None


class FakeProducer:
    """Kafka that loses the first ``failing`` flushes' messages, then takes them."""

    def __init__(self, failing: int = 0) -> None:
        self.failing = failing
        self.sent: list[tuple[str, bytes | str | None, dict[str, bytes]]] = []

    def produce_raw(self, topic: str, value: bytes, key: Any, headers: dict[str, bytes] | None = None) -> None:
        self.sent.append((topic, key, dict(headers or {})))

    def flush(self, timeout: float = 30.0) -> None:
        if self.failing:
            self.failing -= 1
            lost, self.sent = self.sent, []
            raise KafkaDeliveryError(f"{len(lost)} messages were not delivered: Local: Message timed out")

    def close(self, timeout: float | None = None) -> None:
        return None


@contextmanager
def offline_flow(n: Notifier, failing_flushes: int = 0) -> Iterator[NotifyFlow]:
    """A NotifyFlow whose Kafka clients are stand-ins: no broker."""
    flow = NotifyFlow(KafkaSettings(bootstrap_servers="127.0.0.1:1"), n)
    flow.consumer.close()
    flow.producer.close(0.0)
    flow.consumer, flow.producer = FakeConsumer(), FakeProducer(failing_flushes)  # type: ignore[assignment]
    try:
        yield flow
    finally:
        n.close()


def encoded(a: dict[str, Any]) -> bytes:
    return AvroSerde().encode(ALERT, a | {"details": {}, "value": None, "explanation": None})


def test_an_alert_whose_batch_never_reached_kafka_is_delivered_when_read_again() -> None:
    pd = Channel("pagerduty", [DeliveryError("HTTP 503", status=503)])
    with offline_flow(notifier(pd, rejoin_wait_s=0.0), failing_flushes=1) as flow:
        msg = Msg(flow.alerts_name, 41, encoded(alert()), b"k")
        with pytest.raises(KafkaDeliveryError):
            flow.handle([msg])  # PagerDuty failed, and its retry record was lost with the flush
        flow._rejoin("flush failed", threading.Event())  # what run() does: read again from the committed offset
        assert flow.consumer.commits == []
        flow.handle([msg, msg])
        assert pd.delivered == [("k", "OPENED")]  # once, though the batch read it twice
        assert flow.consumer.commits == [[(flow.alerts_name, 0, 42)]]
        flow.handle([msg])  # a replay after the batch is in Kafka
    assert pd.calls == 2 and flow.consumer.commits[-1] == [(flow.alerts_name, 0, 42)]


def test_a_delivery_record_lost_with_a_flush_is_written_again_before_the_batch_is_committed() -> None:
    # Slack has no dedup key: the batch read again is not posted again (the notifier remembers it), and must
    # not be committed without its record, which a restarted flow or the partitions' next owner reads back.
    slack = Channel("slack")
    with offline_flow(notifier(slack, rejoin_wait_s=0.0), failing_flushes=1) as flow:
        msg = Msg(flow.alerts_name, 7, encoded(alert()), b"k")
        with pytest.raises(KafkaDeliveryError):
            flow.handle([msg])  # Slack took it; its record was lost with the flush
        flow._rejoin("flush failed", threading.Event())
        flow.handle([msg])
    assert slack.calls == 1 and flow.consumer.commits == [[(flow.alerts_name, 0, 8)]]
    assert [(topic, key) for topic, key, _ in flow.producer.sent] == [(DELIVERED_TOPIC, "k")]


def test_a_retry_due_beyond_any_scheduled_wait_holds_its_partition_only_that_long() -> None:
    now = [1_700_000_000_000]
    pd, slack = Channel("pagerduty"), Channel("slack")
    n = notifier(pd, slack, backoff_cap_s=8.0, breaker_reset_s=10.0)
    n.clock_ms = lambda: now[0]
    with offline_flow(n) as flow:
        retry = flow.retry_name
        msgs = [Msg(retry, 10, encoded(alert("far")), b"far", retry_headers("pagerduty", 2, now[0] + 6 * 3_600_000)),
                Msg(retry, 11, encoded(alert("ready")), b"ready", retry_headers("slack", 2, now[0] - 1000))]
        assert flow.handle(msgs) == 0
        assert flow.paused == {(retry, 0): now[0] + 18_000}  # backoff_cap_s + breaker_reset_s, not six hours
        now[0] += 18_000
        flow.paused.clear()
        assert flow.handle(msgs) == 2
        early = Msg(retry, 12, encoded(alert("soon")), b"soon", retry_headers("slack", 2, now[0] + 5_000))
        assert flow.handle([early]) == 0 and flow.paused == {(retry, 0): now[0] + 5_000}  # a due time it keeps
    assert pd.delivered == [("far", "OPENED")] and slack.delivered == [("ready", "OPENED")]


def test_a_rate_limited_retry_carries_its_count_on_the_retry_topic() -> None:
    now = [0]
    slack = Channel("slack", [DeliveryError("HTTP 429", status=429, retry_after=30.0)] * 2)
    n = notifier(slack, max_rate_limited=2, breaker_failures=100, backoff_cap_s=60.0)
    n.clock_ms = lambda: now[0]
    with offline_flow(n) as flow:
        flow.handle([Msg(flow.alerts_name, 0, encoded(alert()), b"k")])
        [(topic, _, headers)] = flow.producer.sent
        assert topic == RETRY_TOPIC and headers[RATE_LIMITED] == b"1" and retry_info(headers).attempt == 1
        now[0] = retry_info(headers).due_ms
        flow.handle([Msg(flow.retry_name, 0, encoded(alert()), b"k", headers)])
        [(topic, _, headers)] = flow.producer.sent[1:]
    assert topic == DLQ_TOPIC and dlq_info(headers)["reason"] == "rate_limited"


def test_alerts_written_with_a_configured_schema_registry_are_delivered(monkeypatch: pytest.MonkeyPatch) -> None:
    """Scoring flows write alerts with the configured registry's ids: read with the local registry only, every alert
    went to the dead letters as ``unknown_schema``. Ids of the packaged schemas (a resolve sent again) still read."""
    from connectors.schema_registry import configured_serde
    from connectors.testing.schema_registry import SchemaRegistryStandIn

    pd = Channel("pagerduty")
    with SchemaRegistryStandIn() as registry:
        monkeypatch.setenv("EDDYLINE_SCHEMA_REGISTRY_URL", registry.url)
        with offline_flow(notifier(pd)) as flow:
            full = alert("r") | {"details": {}, "value": None, "explanation": None}
            value = configured_serde().encode(ALERT, full, topic=flow.alerts_name)  # what EventProducer.produce does
            assert registry.subjects == {f"{flow.alerts_name}-value": [wire.unframe(value)[0]]}
            flow.handle([Msg(flow.alerts_name, 0, value, b"r"), Msg(flow.alerts_name, 1, encoded(alert("l")), b"l")])
    assert pd.delivered == [("r", "OPENED"), ("l", "OPENED")]
    assert DLQ_TOPIC not in {topic for topic, _, _ in flow.producer.sent}
