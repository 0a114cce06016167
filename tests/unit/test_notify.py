"""The notify flow's decisions without Kafka or HTTP: backoff, the circuit breaker, retry or dead letter."""

from __future__ import annotations

import random
from collections.abc import Mapping
from typing import Any

import pytest

from connectors.alerting import AlertDispatcher
from connectors.delivery import Backoff, CircuitBreaker, DeliveryError
from schemas.retry import retry_headers, retry_info
from streams.flows.notify import DEAD, DEFERRED, DELIVERED, DUPLICATE, RETRY, Delivery, Notifier, NotifySettings


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Channel:
    """A channel that fails while ``errors`` holds any, then delivers; it records what it delivered."""

    def __init__(self, name: str, errors: list[Exception] | None = None) -> None:
        self.name = name
        self.errors = list(errors or [])
        self.calls = 0
        self.delivered: list[tuple[str, str]] = []

    def deliver(self, alert: Mapping[str, Any]) -> None:
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)
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


def test_a_late_trigger_of_a_resolved_alert_is_resolved_again() -> None:
    pd = Channel("pagerduty", [DeliveryError("503", status=503)])
    n = notifier(pd)
    assert n.deliver([delivery(alert("k", "OPENED", 0), "pagerduty")])[0].outcome == RETRY
    assert n.deliver([delivery(alert("k", "RESOLVED", 5), "pagerduty")])[0].outcome == DELIVERED
    results = n.deliver([delivery(alert("k", "OPENED", 0), "pagerduty", attempt=2)])
    assert [r.outcome for r in results] == [DELIVERED, DELIVERED]
    assert pd.delivered == [("k", "RESOLVED"), ("k", "OPENED"), ("k", "RESOLVED")]  # the incident ends closed


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
    result = CliRunner().invoke(app, ["alerts", "redrive", "--idle", "0"])
    assert result.exit_code == 2 and "--idle must be positive" in result.output
