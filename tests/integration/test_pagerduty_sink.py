"""PagerDutySink against the loopback Events API v2 receiver: payloads checked, incidents folded, retries."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

import pytest

from connectors.alert_receiver import AlertReceiver
from connectors.alerting import DeliveryError
from connectors.pagerduty import PagerDutySettings, PagerDutySink
from tests.unit.test_alert_messages import KEY, alert

pytestmark = pytest.mark.integration


def make_sink(receiver: AlertReceiver, delays: list[float], **overrides: Any) -> PagerDutySink:
    settings = {"routing_key": KEY, "url": receiver.pagerduty_url, "max_retries": 3, "backoff": 0.5, "timeout": 5}
    settings.update(overrides)
    sink = PagerDutySink(PagerDutySettings(**settings))
    sink.policy.sleep = delays.append  # record the backoff instead of waiting it out
    return sink


def post(url: str, body: Any) -> tuple[int, Any]:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method="POST", headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=5) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def test_trigger_reaches_the_receiver_as_a_valid_event(alert_receiver: AlertReceiver) -> None:
    delays: list[float] = []
    make_sink(alert_receiver, delays).deliver(alert())
    assert alert_receiver.rejected == []
    [event] = alert_receiver.events
    assert event["routing_key"] == KEY
    assert event["event_action"] == "trigger"
    assert event["dedup_key"] == "anomaly:dev-7:temp"
    assert event["payload"]["severity"] == "critical"
    assert event["payload"]["custom_details"]["value"] == 0.97
    assert alert_receiver.incidents["anomaly:dev-7:temp"]["status"] == "triggered"
    assert delays == []


def test_two_triggers_with_one_key_are_one_incident_and_resolve_closes_it(alert_receiver: AlertReceiver) -> None:
    sink = make_sink(alert_receiver, [])
    sink.deliver(alert(status="OPENED"))
    sink.deliver(alert(status="UPDATED", value=0.99))
    sink.deliver(alert(alert_key="other", status="OPENED"))
    assert set(alert_receiver.incidents) == {"anomaly:dev-7:temp", "other"}
    incident = alert_receiver.incidents["anomaly:dev-7:temp"]
    assert incident["triggers"] == 2 and incident["opened"] == 1
    assert incident["payload"]["custom_details"]["value"] == 0.99

    sink.deliver(alert(status="RESOLVED"))
    assert alert_receiver.incidents["anomaly:dev-7:temp"]["status"] == "resolved"
    assert set(alert_receiver.open_incidents()) == {"other"}


def test_a_replayed_alert_does_not_open_a_second_incident(alert_receiver: AlertReceiver) -> None:
    sink = make_sink(alert_receiver, [])
    for _ in range(3):  # at-least-once delivery repeats the same record
        sink.deliver(alert())
    assert len(alert_receiver.incidents) == 1
    assert alert_receiver.counts["incidents_open"] == 1


def test_server_errors_are_retried_with_exponential_backoff(alert_receiver: AlertReceiver) -> None:
    delays: list[float] = []
    alert_receiver.fail_next(2, 503)
    make_sink(alert_receiver, delays).deliver(alert())
    assert delays == [0.5, 1.0]
    assert alert_receiver.counts["failures_injected"] == 2
    assert len(alert_receiver.events) == 1


def test_rate_limit_honours_retry_after(alert_receiver: AlertReceiver) -> None:
    delays: list[float] = []
    alert_receiver.fail_next(1, 429, retry_after=3)
    make_sink(alert_receiver, delays).deliver(alert())
    assert delays == [3.0]
    assert len(alert_receiver.events) == 1


def test_delivery_error_after_the_last_retry(alert_receiver: AlertReceiver) -> None:
    delays: list[float] = []
    alert_receiver.fail_next(10, 500)
    with pytest.raises(DeliveryError, match="gave up after 3 attempts") as info:
        make_sink(alert_receiver, delays, max_retries=2).deliver(alert())
    assert info.value.status == 500
    assert delays == [0.5, 1.0]
    assert alert_receiver.counts["failures_injected"] == 3
    assert alert_receiver.events == []


def test_a_refused_event_fails_at_once_without_retries(alert_receiver: AlertReceiver) -> None:
    delays: list[float] = []
    sink = make_sink(alert_receiver, delays, routing_key="too-short")
    with pytest.raises(DeliveryError, match="routing_key") as info:
        sink.deliver(alert())
    assert info.value.status == 400
    assert "Length of 'routing_key' is incorrect" in info.value.body
    assert delays == []
    assert alert_receiver.counts["requests"] == 1
    assert alert_receiver.rejected[0]["status"] == 400


def test_network_errors_are_retried_then_reported(alert_receiver: AlertReceiver) -> None:
    url = alert_receiver.pagerduty_url
    alert_receiver.stop()  # nothing listens there any more
    delays: list[float] = []
    sink = PagerDutySink(PagerDutySettings(routing_key=KEY, url=url, max_retries=2, backoff=0.25, timeout=2))
    sink.policy.sleep = delays.append
    with pytest.raises(DeliveryError, match="network error"):
        sink.deliver(alert())
    assert delays == [0.25, 0.5]


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
    status, body = post(f"{alert_receiver.pagerduty_url}/v2/enqueue", event)
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
    status, body = post(f"{alert_receiver.pagerduty_url}/v2/enqueue", event)
    assert status == 202
    assert body["status"] == "success" and body["message"] == "Event processed"
    assert body["dedup_key"] in alert_receiver.incidents
    status, body = post(f"{alert_receiver.pagerduty_url}/v2/enqueue", b"{not json")
    assert status == 400 and "Malformed JSON" in body["errors"][0]


def test_receiver_checks_the_routing_key_when_told_which_are_valid() -> None:
    with AlertReceiver(routing_keys={KEY}) as receiver:
        sink = make_sink(receiver, [], routing_key="f" * 32)
        with pytest.raises(DeliveryError, match="Invalid routing key"):
            sink.deliver(alert())
        make_sink(receiver, []).deliver(alert())
        assert len(receiver.events) == 1
    assert not receiver.running


def test_acknowledge_then_resolve_and_a_new_trigger_reopens(alert_receiver: AlertReceiver) -> None:
    url = f"{alert_receiver.pagerduty_url}/v2/enqueue"
    sink = make_sink(alert_receiver, [])
    sink.deliver(alert())
    assert post(url, {"routing_key": KEY, "event_action": "acknowledge", "dedup_key": "anomaly:dev-7:temp"})[0] == 202
    assert alert_receiver.incidents["anomaly:dev-7:temp"]["status"] == "acknowledged"
    sink.deliver(alert(status="RESOLVED"))
    sink.deliver(alert(status="RESOLVED"))  # a second resolve is accepted and changes nothing
    incident = alert_receiver.incidents["anomaly:dev-7:temp"]
    assert incident["status"] == "resolved" and incident["resolves"] == 1
    sink.deliver(alert(status="OPENED"))
    incident = alert_receiver.incidents["anomaly:dev-7:temp"]
    assert incident["status"] == "triggered" and incident["opened"] == 2 and incident["triggers"] == 1


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
    make_sink(alert_receiver, []).deliver(alert())
    assert len(alert_receiver.events) == 1
