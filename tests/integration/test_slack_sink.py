"""SlackSink against the loopback incoming-webhook receiver, and the dispatcher feeding both channels."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

import pytest
from prometheus_client import REGISTRY

from connectors.testing.alert_receiver import AlertReceiver
from connectors.alerting import AlertDispatcher
from connectors.delivery import DeliveryError
from connectors.pagerduty import PagerDutySettings, PagerDutySink
from connectors.slack import COLOURS, SlackSettings, SlackSink
from tests.unit.test_alert_messages import KEY, alert

pytestmark = pytest.mark.integration


def make_sink(url: str, delays: list[float], **overrides: Any) -> SlackSink:
    settings = {"webhook_url": url, "max_retries": 3, "backoff": 0.5, "timeout": 5}
    settings.update(overrides)
    sink = SlackSink(SlackSettings(**settings))
    sink.policy.sleep = delays.append
    return sink


def post(url: str, data: bytes) -> tuple[int, str]:
    request = urllib.request.Request(url, data=data, method="POST", headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=5) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def test_message_reaches_the_webhook_with_text_and_blocks(alert_receiver: AlertReceiver) -> None:
    make_sink(alert_receiver.slack_url, []).deliver(alert(severity="WARNING"))
    assert alert_receiver.rejected == []
    [message] = alert_receiver.slack_messages
    assert alert_receiver.slack_url.endswith(message["path"])
    body = message["body"]
    assert body["text"].startswith(":warning: WARNING opened: temperature anomaly")
    assert [b["type"] for b in body["blocks"]] == ["section", "context"]
    assert body["attachments"][0]["color"] == COLOURS["WARNING"]


def test_server_errors_and_rate_limits_are_retried(alert_receiver: AlertReceiver) -> None:
    delays: list[float] = []
    alert_receiver.fail_next(1, 500)
    alert_receiver.fail_next(1, 429, retry_after=2)
    make_sink(alert_receiver.slack_url, delays).deliver(alert())
    assert delays == [0.5, 2.0]
    assert len(alert_receiver.slack_messages) == 1


def test_delivery_error_after_the_last_retry(alert_receiver: AlertReceiver) -> None:
    delays: list[float] = []
    alert_receiver.fail_next(5, 503)
    with pytest.raises(DeliveryError, match="gave up after 2 attempts"):
        make_sink(alert_receiver.slack_url, delays, max_retries=1).deliver(alert())
    assert delays == [0.5]
    assert alert_receiver.slack_messages == []


def test_a_refused_message_fails_at_once(alert_receiver: AlertReceiver) -> None:
    delays: list[float] = []
    wrong = alert_receiver.url + "/not-a-webhook"
    with pytest.raises(DeliveryError, match="404") as info:
        make_sink(wrong, delays).deliver(alert())
    assert info.value.status == 404 and delays == []


@pytest.mark.parametrize(
    "body",
    [b"{}", b'{"text": "  "}', b'{"blocks": []}', b'{"blocks": [{"text": "no type"}]}', b"[1]", b"not json"],
)
def test_receiver_refuses_invalid_payloads_like_slack(alert_receiver: AlertReceiver, body: bytes) -> None:
    assert post(alert_receiver.slack_url, body) == (400, "invalid_payload")
    assert alert_receiver.slack_messages == []
    assert alert_receiver.rejected[0]["errors"] == ["invalid_payload"]


def test_receiver_accepts_text_only_or_blocks_only(alert_receiver: AlertReceiver) -> None:
    assert post(alert_receiver.slack_url, b'{"text": "hi"}') == (200, "ok")
    assert post(alert_receiver.slack_url, b'{"blocks": [{"type": "divider"}]}') == (200, "ok")
    assert len(alert_receiver.slack_messages) == 2


def test_receiver_refuses_blocks_over_slacks_limits(alert_receiver: AlertReceiver) -> None:
    section = {"type": "section", "text": {"type": "mrkdwn", "text": "x" * 3001}}
    fields = {"type": "section", "fields": [{"type": "mrkdwn", "text": "x" * 2001}]}
    context = {"type": "context", "elements": [{"type": "mrkdwn", "text": "x" * 3001}]}
    too_many = [{"type": "divider"}] * 51
    for blocks in ([section], [fields], [context], too_many):
        body = json.dumps({"text": "hi", "blocks": blocks}).encode()
        assert post(alert_receiver.slack_url, body) == (400, "invalid_blocks")
    attached = json.dumps({"text": "hi", "attachments": [{"blocks": [fields]}]}).encode()
    assert post(alert_receiver.slack_url, attached) == (400, "invalid_blocks")
    assert alert_receiver.slack_messages == [] and len(alert_receiver.rejected) == 5


def test_an_alert_about_an_entity_of_any_length_is_posted_cut_not_refused(alert_receiver: AlertReceiver) -> None:
    source = "user:" + "u" * 5000  # a poisoner's user id is free text of any length
    sink = make_sink(alert_receiver.slack_url, [], max_retries=0)
    sink.deliver(alert(entity=source, alert_key=f"model-security/{source}", details={"source": source}))
    assert alert_receiver.rejected == []
    [message] = alert_receiver.slack_messages
    fields = [f["text"] for f in message["body"]["attachments"][0]["blocks"][0]["fields"]]
    assert any(f.startswith("*Entity*\nuser:uuu") and f.endswith("…") for f in fields)


def test_receiver_refuses_blocks_whose_texts_together_are_over_slacks_total(alert_receiver: AlertReceiver) -> None:
    fields = {"type": "section", "fields": [{"type": "mrkdwn", "text": "x" * 2000}] * 6}  # each within its limit
    body = json.dumps({"text": "hi", "blocks": [fields]}).encode()
    assert post(alert_receiver.slack_url, body) == (400, "msg_blocks_too_long")
    assert alert_receiver.slack_messages == [] and "over 11000" in alert_receiver.rejected[0]["errors"][0]


def test_an_alert_with_every_part_at_its_limit_is_posted_cut_not_refused(alert_receiver: AlertReceiver) -> None:
    long = "x" * 10_000
    explanation = {"rule": "spike", "expected": 1.0, "lower": 0.0, "upper": 2.0, "deviation": 9.0, "context": [1.0]}
    worst = alert(summary=long, entity=long, source=long, alert_key=long, explanation=explanation,
                  details={f"feature-{i}": long for i in range(20)})
    make_sink(alert_receiver.slack_url, [], max_retries=0).deliver(worst)
    assert alert_receiver.rejected == [] and len(alert_receiver.slack_messages) == 1


def deliveries(sink: str, outcome: str) -> float:
    return REGISTRY.get_sample_value("eddyline_alert_deliveries_total", {"sink": sink, "outcome": outcome}) or 0.0


def test_dispatcher_feeds_both_channels_and_one_failing_does_not_stop_the_other(alert_receiver: AlertReceiver) -> None:
    delays: list[float] = []
    pagerduty = PagerDutySink(
        PagerDutySettings(
            routing_key=KEY,
            url=alert_receiver.pagerduty_url,
            ca_file=str(alert_receiver.ca_file),
            max_retries=1,
            backoff=0.01,
        )
    )
    slack = make_sink(alert_receiver.slack_url, delays, max_retries=1)
    failures: list[str] = []
    dispatcher = AlertDispatcher([pagerduty, slack], on_failure=lambda sink, a, e: failures.append(sink))
    before = deliveries("pagerduty", "failed"), deliveries("slack", "delivered")

    alert_receiver.fail_next(2, 500)  # both attempts of the PagerDuty delivery of the first alert
    for status in ("OPENED", "UPDATED", "RESOLVED"):
        dispatcher.dispatch(alert(status=status))
    assert failures == ["pagerduty"]
    assert deliveries("pagerduty", "failed") - before[0] == 1
    assert deliveries("slack", "delivered") - before[1] == 3
    assert [m["body"]["text"].split(":")[1] for m in alert_receiver.slack_messages] == [
        "rotating_light",
        "rotating_light",
        "white_check_mark",
    ]
    incident = alert_receiver.incidents["anomaly:dev-7:temp"]
    assert incident["status"] == "resolved" and incident["triggers"] == 1


def test_dispatcher_from_settings_uses_the_configured_receiver(
    alert_receiver: AlertReceiver, monkeypatch: pytest.MonkeyPatch, defaults_config
) -> None:
    monkeypatch.setenv("EDDYLINE_PAGERDUTY_ROUTING_KEY", KEY)
    monkeypatch.setenv("EDDYLINE_PAGERDUTY_URL", alert_receiver.pagerduty_url)
    monkeypatch.setenv("EDDYLINE_PAGERDUTY_CA_FILE", str(alert_receiver.ca_file))
    monkeypatch.setenv("EDDYLINE_SLACK_WEBHOOK_URL", alert_receiver.slack_url)
    dispatcher = AlertDispatcher.from_settings()
    assert dispatcher.dispatch(alert()) == {"pagerduty": "delivered", "slack": "delivered"}
    assert alert_receiver.counts["pagerduty_events"] == 1 and alert_receiver.counts["slack_messages"] == 1
    assert alert_receiver.wait_for(lambda r: r.accepted_total == 2, timeout=1)
