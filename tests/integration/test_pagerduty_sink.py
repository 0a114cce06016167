"""PagerDutySink (the ``pagerduty`` package's client) against the loopback Events API v2 receiver over TLS."""

from __future__ import annotations

import json
import math
import socket
import ssl
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import pagerduty.api_client
import pytest

from connectors.testing.alert_receiver import AlertReceiver
from connectors.delivery import DeliveryError
from connectors.pagerduty import PagerDutySettings, PagerDutySink, pagerduty_event
from tests.unit.test_alert_messages import KEY, alert

pytestmark = pytest.mark.integration

BACKOFF = 0.01


@pytest.fixture
def sleeps(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[float]]:
    """The waits of the client's retry loop, recorded and then really slept (they are tiny)."""
    recorded: list[float] = []

    def sleep(seconds: float) -> None:
        recorded.append(round(seconds, 6))
        time.sleep(seconds)

    monkeypatch.setattr(pagerduty.api_client, "time", SimpleNamespace(sleep=sleep))
    yield recorded


def make_sink(receiver: AlertReceiver, **overrides: Any) -> PagerDutySink:
    settings = {
        "routing_key": KEY,
        "url": receiver.pagerduty_url,
        "ca_file": str(receiver.ca_file),
        "max_retries": 3,
        "backoff": BACKOFF,
        "timeout": 5,
    }
    settings.update(overrides)
    return PagerDutySink(PagerDutySettings(**settings))


def post(receiver: AlertReceiver, body: Any) -> tuple[int, Any]:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    url = f"{receiver.pagerduty_url}/v2/enqueue"
    request = urllib.request.Request(url, data=data, method="POST", headers={"Content-Type": "application/json"})
    context = ssl.create_default_context(cafile=str(receiver.ca_file))
    try:
        with urllib.request.urlopen(request, timeout=5, context=context) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def test_trigger_reaches_the_receiver_over_tls_as_the_documented_event(
    alert_receiver: AlertReceiver, sleeps: list[float]
) -> None:
    assert alert_receiver.pagerduty_url.startswith("https://")
    make_sink(alert_receiver).deliver(alert())
    assert alert_receiver.rejected == []
    [event] = alert_receiver.events
    assert event == pagerduty_event(alert(), KEY)  # routing key, dedup key, trigger, payload, client
    assert event["payload"]["severity"] == "critical"
    assert event["payload"]["custom_details"]["value"] == 0.97
    assert alert_receiver.incidents["anomaly:dev-7:temp"]["status"] == "triggered"
    assert sleeps == []


def test_two_triggers_with_one_key_are_one_incident_and_resolve_closes_it(alert_receiver: AlertReceiver) -> None:
    sink = make_sink(alert_receiver)
    sink.deliver(alert(status="OPENED"))
    sink.deliver(alert(status="UPDATED", value=0.99))
    sink.deliver(alert(alert_key="other", status="OPENED"))
    assert set(alert_receiver.incidents) == {"anomaly:dev-7:temp", "other"}
    incident = alert_receiver.incidents["anomaly:dev-7:temp"]
    assert incident["triggers"] == 2 and incident["opened"] == 1
    assert incident["payload"]["custom_details"]["value"] == 0.99

    sink.deliver(alert(status="RESOLVED"))
    assert alert_receiver.events[-1] == pagerduty_event(alert(status="RESOLVED"), KEY)
    assert alert_receiver.incidents["anomaly:dev-7:temp"]["status"] == "resolved"
    assert set(alert_receiver.open_incidents()) == {"other"}


def test_a_replayed_alert_does_not_open_a_second_incident(alert_receiver: AlertReceiver) -> None:
    sink = make_sink(alert_receiver)
    for _ in range(3):  # at-least-once delivery repeats the same record
        sink.deliver(alert())
    assert len(alert_receiver.incidents) == 1
    assert alert_receiver.counts["incidents_open"] == 1


def test_acknowledge_then_resolve_and_a_new_trigger_reopens(alert_receiver: AlertReceiver) -> None:
    sink = make_sink(alert_receiver)
    sink.deliver(alert())
    sink.acknowledge("anomaly:dev-7:temp")
    assert alert_receiver.events[-1] == {
        "routing_key": KEY,
        "event_action": "acknowledge",
        "dedup_key": "anomaly:dev-7:temp",
    }
    assert alert_receiver.incidents["anomaly:dev-7:temp"]["status"] == "acknowledged"
    sink.deliver(alert(status="RESOLVED"))
    sink.deliver(alert(status="RESOLVED"))  # a second resolve is accepted and changes nothing
    incident = alert_receiver.incidents["anomaly:dev-7:temp"]
    assert incident["status"] == "resolved" and incident["resolves"] == 1 and incident["acknowledges"] == 1
    sink.deliver(alert(status="OPENED"))
    incident = alert_receiver.incidents["anomaly:dev-7:temp"]
    assert incident["status"] == "triggered" and incident["opened"] == 2 and incident["triggers"] == 1
    with pytest.raises(ValueError, match="alert_key"):
        sink.acknowledge("")


def test_server_errors_are_retried_with_exponential_backoff(alert_receiver: AlertReceiver, sleeps: list[float]) -> None:
    alert_receiver.fail_next(2, 503)
    make_sink(alert_receiver).deliver(alert())
    assert sleeps == [BACKOFF, 2 * BACKOFF]
    assert alert_receiver.counts["failures_injected"] == 2
    assert len(alert_receiver.events) == 1


def test_rate_limits_are_retried_with_backoff(alert_receiver: AlertReceiver, sleeps: list[float]) -> None:
    alert_receiver.fail_next(1, 429, retry_after=3)
    make_sink(alert_receiver).deliver(alert())
    assert sleeps == [BACKOFF]  # the client does not wait for Retry-After
    assert len(alert_receiver.events) == 1


def test_rate_limits_are_not_retried_forever(alert_receiver: AlertReceiver, sleeps: list[float]) -> None:
    alert_receiver.fail_next(10, 429)
    with pytest.raises(DeliveryError, match="gave up after 3 attempts") as info:
        make_sink(alert_receiver, max_retries=2).deliver(alert())
    assert info.value.status == 429
    assert alert_receiver.counts["requests"] == 3
    assert sleeps == [BACKOFF, 2 * BACKOFF]


def test_max_retries_bounds_retries_of_mixed_statuses(alert_receiver: AlertReceiver, sleeps: list[float]) -> None:
    for status in (500, 503, 429, 502):
        alert_receiver.fail_next(1, status)
    with pytest.raises(DeliveryError, match="gave up after 3 attempts") as info:
        make_sink(alert_receiver, max_retries=2).deliver(alert())
    assert info.value.status == 429
    assert alert_receiver.counts["requests"] == 3 and alert_receiver.events == []


def test_no_retries_when_max_retries_is_zero(alert_receiver: AlertReceiver, sleeps: list[float]) -> None:
    alert_receiver.fail_next(1, 429)
    with pytest.raises(DeliveryError, match="gave up after 1 attempts"):
        make_sink(alert_receiver, max_retries=0).deliver(alert())
    assert alert_receiver.counts["requests"] == 1 and sleeps == []
    make_sink(alert_receiver, max_retries=0).deliver(alert())
    assert len(alert_receiver.events) == 1


def test_delivery_error_after_the_last_retry(alert_receiver: AlertReceiver, sleeps: list[float]) -> None:
    alert_receiver.fail_next(10, 500)
    with pytest.raises(DeliveryError, match="gave up after 3 attempts") as info:
        make_sink(alert_receiver, max_retries=2).deliver(alert())
    assert info.value.status == 500
    assert "injected failure 500" in info.value.body
    assert sleeps == [BACKOFF, 2 * BACKOFF]
    assert alert_receiver.counts["failures_injected"] == 3
    assert alert_receiver.events == []


def test_a_refused_event_fails_at_once_without_retries(alert_receiver: AlertReceiver, sleeps: list[float]) -> None:
    sink = make_sink(alert_receiver, routing_key="too-short")
    with pytest.raises(DeliveryError, match="refused the event: HTTP 400.*routing_key") as info:
        sink.deliver(alert())
    assert info.value.status == 400
    assert "Length of 'routing_key' is incorrect" in info.value.body
    assert sleeps == []
    assert alert_receiver.counts["requests"] == 1
    assert alert_receiver.rejected[0]["status"] == 400


def test_an_alert_with_a_huge_detail_or_no_finite_value_still_pages(alert_receiver: AlertReceiver) -> None:
    source = "user:" + "u" * 600_000  # free text of any length: whole, the event is over the 512 KB PagerDuty takes
    explanation = {"rule": "spike", "expected": math.inf, "lower": 0.0, "upper": 1.0, "deviation": math.nan,
                   "context": [1.0, -math.inf]}
    make_sink(alert_receiver, max_retries=0).deliver(
        alert(entity=source, value=math.nan, details={"source": source}, explanation=explanation))
    assert alert_receiver.rejected == []
    details = alert_receiver.incidents["anomaly:dev-7:temp"]["payload"]["custom_details"]
    assert details["source"].startswith("user:uuu") and details["source"].endswith("…")
    assert details["value"] == "nan" and details["explanation"]["context"] == [1.0, "-inf"]


def test_an_alert_with_many_long_details_and_a_long_context_still_pages(alert_receiver: AlertReceiver) -> None:
    """Each detail was cut to 4096 characters, but not their total: 200 of them made an event PagerDuty refuses."""
    explanation = {"rule": "spike", "expected": 1.0, "lower": 0.0, "upper": 2.0, "deviation": 9.0,
                   "context": [21.5] * 50_000}
    details = {f"feature-{i:03}": "x" * 5000 for i in range(200)} | {"detector": "hst"}
    make_sink(alert_receiver, max_retries=0).deliver(alert(details=details, explanation=explanation))
    assert alert_receiver.rejected == []
    sent = alert_receiver.incidents["anomaly:dev-7:temp"]["payload"]["custom_details"]
    assert sent["why"].startswith("spike: expected 1") and sent["alert_status"] == "OPENED"
    assert sent["detector"] == "hst"  # small ones stay
    assert "explanation" not in sent and "feature-000" in sent  # the largest go first, then the last of a size
    left_out = [k for k in [*details, "explanation"] if k not in sent]
    assert sent["details_left_out"].startswith(f"{len(left_out)} details, the largest")


def test_network_errors_are_retried_then_reported(alert_receiver: AlertReceiver, sleeps: list[float]) -> None:
    sink = make_sink(alert_receiver, max_retries=2)
    alert_receiver.stop()  # nothing listens there any more
    with pytest.raises(DeliveryError, match="gave up after 3 attempts; last: network error") as info:
        sink.deliver(alert())
    assert info.value.status is None
    assert sleeps == [BACKOFF, 2 * BACKOFF]


def test_a_receiver_that_never_answers_times_out(sleeps: list[float]) -> None:
    with socket.create_server(("127.0.0.1", 0)) as silent:  # accepts connections, never speaks TLS
        url = f"https://127.0.0.1:{silent.getsockname()[1]}"
        sink = PagerDutySink(PagerDutySettings(routing_key=KEY, url=url, max_retries=1, backoff=BACKOFF, timeout=0.2))
        with pytest.raises(DeliveryError, match="network error"):
            sink.deliver(alert())
    assert sleeps == [BACKOFF]


def test_an_untrusted_certificate_is_refused(alert_receiver: AlertReceiver, sleeps: list[float]) -> None:
    with pytest.raises(DeliveryError, match="CERTIFICATE_VERIFY_FAILED"):
        make_sink(alert_receiver, ca_file=None, max_retries=0).deliver(alert())
    assert alert_receiver.wait_for(lambda r: r.tls_handshake_failures == 1, timeout=5)
    assert alert_receiver.counts["requests"] == 0


@pytest.mark.parametrize(
    ("change", "error"),
    [
        ({"event_action": "escalate"}, "'event_action' is missing or invalid"),
        ({"payload": {"summary": "s", "source": "x", "severity": "fatal"}}, "'payload.severity'"),
        ({"payload": {"summary": " ", "source": "x", "severity": "info"}}, "'payload.summary'"),
        ({"payload": {"summary": "s", "severity": "info"}}, "'payload.source'"),
        ({"routing_key": "k"}, "Length of 'routing_key'"),
        ({"event_action": "resolve", "dedup_key": None}, "'dedup_key' is required"),
    ],
)
def test_receiver_refuses_invalid_events_like_pagerduty(
    alert_receiver: AlertReceiver, change: dict[str, Any], error: str
) -> None:
    event = {
        "routing_key": KEY,
        "event_action": "trigger",
        "dedup_key": "k1",
        "payload": {"summary": "s", "source": "x", "severity": "info"},
    }
    event.update(change)
    event = {k: v for k, v in event.items() if v is not None}
    status, body = post(alert_receiver, event)
    assert status == 400
    assert body["status"] == "invalid event"
    assert any(error in e for e in body["errors"]), body
    assert alert_receiver.events == [] and alert_receiver.incidents == {}


def test_receiver_answers_like_pagerduty_and_makes_a_key_when_none_is_given(alert_receiver: AlertReceiver) -> None:
    event = {
        "routing_key": KEY,
        "event_action": "trigger",
        "payload": {"summary": "s", "source": "x", "severity": "info"},
    }
    status, body = post(alert_receiver, event)
    assert status == 202
    assert body["status"] == "success" and body["message"] == "Event processed"
    assert body["dedup_key"] in alert_receiver.incidents
    status, body = post(alert_receiver, b"{not json")
    assert status == 400 and "Malformed JSON" in body["errors"][0]


def test_the_receiver_forgets_its_certificate_when_stopped() -> None:
    with AlertReceiver(tls=True) as receiver:
        ca_file = receiver.ca_file
        assert ca_file.read_text().startswith("-----BEGIN CERTIFICATE-----")
    assert not ca_file.exists()
    with AlertReceiver() as plain, pytest.raises(RuntimeError, match="tls=True"):
        _ = plain.ca_file


def test_receiver_checks_the_routing_key_when_told_which_are_valid() -> None:
    with AlertReceiver(routing_keys={KEY}, tls=True) as receiver:
        sink = make_sink(receiver, routing_key="f" * 32)
        with pytest.raises(DeliveryError, match="Invalid routing key"):
            sink.deliver(alert())
        make_sink(receiver).deliver(alert())
        assert len(receiver.events) == 1
    assert not receiver.running


def test_receiver_survives_garbage_requests(alert_receiver: AlertReceiver) -> None:
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", alert_receiver.port, timeout=5)
    conn.putrequest("POST", "/v2/enqueue")
    conn.putheader("Content-Length", "banana")
    conn.endheaders()
    assert conn.getresponse().status == 400
    conn.close()
    conn = http.client.HTTPConnection("127.0.0.1", alert_receiver.port, timeout=5)
    conn.request("POST", "/nowhere", body=b"{}", headers={"Content-Type": "application/json"})
    assert conn.getresponse().status == 404
    conn.close()
    with socket.create_connection(("127.0.0.1", alert_receiver.https_port), timeout=5) as plain:
        plain.sendall(b"POST /v2/enqueue HTTP/1.1\r\nContent-Length: 2\r\n\r\n{}")  # plain HTTP to the TLS port
        assert alert_receiver.wait_for(lambda r: r.tls_handshake_failures == 1, timeout=5)
    make_sink(alert_receiver).deliver(alert())
    assert len(alert_receiver.events) == 1
