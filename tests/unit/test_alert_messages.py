"""What an alert becomes on the wire (PagerDuty event, Slack message), settings, and the dispatcher's containment."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any

import pytest
from prometheus_client import REGISTRY

from connectors.alerting import AlertDispatcher
from connectors.delivery import DeliveryError, HttpRetryPolicy, validate_alert
from connectors.pagerduty import DEFAULT_EVENTS_URL, PagerDutySettings, PagerDutySink, pagerduty_event
from connectors.slack import BLOCKS_TEXT_LIMIT, COLOURS, RESOLVED_COLOUR, SlackSettings, SlackSink, slack_message

KEY = "0123456789abcdef0123456789abcdef"


def alert(**overrides: Any) -> dict[str, Any]:
    record = {
        "event_id": "alert-1",
        "event_time": 1_700_000_000_000,
        "producer": "anomaly-flow",
        "alert_key": "anomaly:dev-7:temp",
        "status": "OPENED",
        "severity": "CRITICAL",
        "source": "anomaly",
        "entity": "dev-7/temp",
        "summary": "temperature anomaly score 0.97 on dev-7",
        "value": 0.97,
        "details": {"threshold": "0.9", "detector": "hst"},
    }
    record.update(overrides)
    return record


@pytest.mark.parametrize("status", ["OPENED", "UPDATED"])
def test_open_and_update_trigger_with_the_alert_key_as_dedup_key(status: str) -> None:
    event = pagerduty_event(alert(status=status, severity="WARNING"), KEY)
    assert event["event_action"] == "trigger"
    assert event["routing_key"] == KEY
    assert event["dedup_key"] == "anomaly:dev-7:temp"
    payload = event["payload"]
    assert payload["summary"] == "temperature anomaly score 0.97 on dev-7"
    assert payload["source"] == "dev-7/temp"
    assert payload["severity"] == "warning"
    assert payload["group"] == "anomaly"
    assert payload["timestamp"].startswith("2023-11-14T22:13:20.000")
    assert payload["custom_details"]["threshold"] == "0.9"
    assert payload["custom_details"]["value"] == 0.97
    assert payload["custom_details"]["alert_status"] == status


def test_resolve_carries_only_the_dedup_key() -> None:
    event = pagerduty_event(alert(status="RESOLVED"), KEY)
    assert event == {"routing_key": KEY, "dedup_key": "anomaly:dev-7:temp", "event_action": "resolve"}


def test_summary_is_cut_to_pagerdutys_limit() -> None:
    event = pagerduty_event(alert(summary="x" * 5000), KEY)
    assert len(event["payload"]["summary"]) == 1024


def test_an_alert_key_over_pagerdutys_limit_is_hashed_to_one_dedup_key_per_incident() -> None:
    key = "model-security/user:" + "u" * 300  # a poisoner's user id can be any length
    trigger = pagerduty_event(alert(alert_key=key), KEY)
    resolve = pagerduty_event(alert(alert_key=key, status="RESOLVED"), KEY)
    assert len(trigger["dedup_key"]) == 255 and trigger["dedup_key"] == resolve["dedup_key"]
    assert trigger["dedup_key"].startswith("model-security/user:uuu")
    assert trigger["payload"]["custom_details"]["alert_key"] == key  # what it stands for, readable
    other = pagerduty_event(alert(alert_key=key + "v"), KEY)["dedup_key"]
    assert other != trigger["dedup_key"] and len(other) == 255
    assert pagerduty_event(alert(alert_key="k" * 255), KEY)["dedup_key"] == "k" * 255


@pytest.mark.parametrize("event_time", [1_700_000_000_000_000, -1, 10**30, True])
def test_an_event_time_that_is_no_time_leaves_the_optional_timestamp_out(event_time: Any) -> None:
    event = pagerduty_event(alert(event_time=event_time), KEY)  # a device that reports microseconds
    assert event["event_action"] == "trigger" and "timestamp" not in event["payload"]


def test_the_receivers_retry_after_goes_out_on_the_delivery_error(monkeypatch: pytest.MonkeyPatch) -> None:
    import httpx2
    import pagerduty

    from connectors.testing.alert_receiver import AlertReceiver

    sink = PagerDutySink(PagerDutySettings(routing_key=KEY, url="https://127.0.0.1:9", max_retries=0))
    answer = httpx2.Response(429, headers={"Retry-After": "30"}, text='{"status": "throttle event"}')

    def throttled(*args: Any, **kwargs: Any) -> str:
        raise pagerduty.HttpError("rate limited", answer)

    monkeypatch.setattr(sink.client, "send_event", throttled)
    with pytest.raises(DeliveryError) as info:
        sink.deliver(alert())
    assert info.value.status == 429 and info.value.retry_after == 30.0
    with AlertReceiver() as receiver:  # Slack, through post_json
        slack = SlackSink(SlackSettings(webhook_url=receiver.slack_url, max_retries=0, timeout=5))
        receiver.fail_next(1, 429, retry_after=45)
        with pytest.raises(DeliveryError) as info:
            slack.deliver(alert())
        assert info.value.status == 429 and info.value.retry_after == 45.0
        receiver.fail_next(1, 503)
        with pytest.raises(DeliveryError) as info:
            slack.deliver(alert())
        assert info.value.status == 503 and info.value.retry_after is None


def test_a_non_finite_number_or_an_endless_detail_still_makes_an_event_pagerduty_takes() -> None:
    explanation = {"rule": "spike", "expected": math.inf, "lower": 0.0, "upper": 1.0, "deviation": math.nan,
                   "context": [1.0, math.inf]}
    event = pagerduty_event(alert(value=-math.inf, explanation=explanation, entity="e" * 10**6,
                                  details={"source": "u" * 10**6}), KEY)
    assert len(json.dumps(event, allow_nan=False)) < 512 * 1024  # JSON has no NaN: the client would not send it
    details = event["payload"]["custom_details"]
    assert details["value"] == "-inf" and details["explanation"]["deviation"] == "nan"
    assert details["source"].startswith("uuu") and len(details["source"]) == len(event["payload"]["source"]) == 4096


def test_value_absent_is_not_invented() -> None:
    event = pagerduty_event(alert(value=None, details={}), KEY)
    assert "value" not in event["payload"]["custom_details"]


@pytest.mark.parametrize(
    ("change", "reason"),
    [({"alert_key": ""}, "alert_key"), ({"status": "ACKED"}, "status"), ({"severity": "FATAL"}, "severity")],
)
def test_an_alert_no_sink_can_render_is_refused_with_the_reason(change: dict[str, Any], reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        validate_alert(alert(**change))
    with pytest.raises(ValueError, match=reason):
        pagerduty_event(alert(**change), KEY)
    with pytest.raises(ValueError, match=reason):
        slack_message(alert(**change))


def test_slack_message_has_fallback_text_blocks_and_severity_colour() -> None:
    message = slack_message(alert(summary="score <0.97> & rising"))
    assert message["text"].startswith(":rotating_light: CRITICAL opened")
    assert "&lt;0.97&gt; &amp; rising" in message["text"]
    assert message["blocks"][0]["type"] == "section"
    assert "anomaly:dev-7:temp" in message["blocks"][1]["elements"][0]["text"]
    attachment = message["attachments"][0]
    assert attachment["color"] == COLOURS["CRITICAL"]
    fields = [f["text"] for f in attachment["blocks"][0]["fields"]]
    assert "*Entity*\ndev-7/temp" in fields
    assert "*Value*\n0.97" in fields
    assert "*detector*\nhst" in fields


def test_slack_message_cuts_texts_of_any_length_to_slacks_limits_without_breaking_an_escape() -> None:
    source = "user:" + "<u&>" * 1000  # a poisoner's user id is free text of any length, escaped three times longer
    message = slack_message(alert(entity=source, summary=f"{source} quarantined", alert_key=f"model-security/{source}",
                                  details={"source": source, "k" * 500: "v"}))
    texts = [message["text"], message["blocks"][0]["text"]["text"], message["blocks"][1]["elements"][0]["text"]]
    fields = [f["text"] for f in message["attachments"][0]["blocks"][0]["fields"]]
    assert max(map(len, texts)) <= 3000 and max(map(len, fields)) <= 2000  # Slack refuses the whole message else
    entity = next(f for f in fields if f.startswith("*Entity*"))
    assert entity.startswith("*Entity*\nuser:&lt;u&amp;&gt;&lt;u") and entity.endswith("…")
    for text in [*texts, *fields]:  # a cut never leaves half an escape behind
        for piece in text.split("&")[1:]:
            assert piece.startswith(("amp;", "lt;", "gt;")), text[-20:]
    assert message["blocks"][1]["elements"][0]["text"].count("`") == 2  # the key's code span is closed


def block_texts(message: Mapping[str, Any]) -> list[str]:
    blocks = [*message["blocks"], *(b for a in message["attachments"] for b in a["blocks"])]
    texts: list[str] = []
    for b in blocks:
        texts += [t["text"] for t in (b.get("text"), *b.get("fields", []), *b.get("elements", [])) if t]
    return texts


def test_slack_message_stays_under_slacks_total_cutting_the_details_before_the_headline() -> None:
    """Each text within its own limit still made 19k characters in all: Slack refuses that (msg_blocks_too_long)."""
    long = "x" * 10_000
    explanation = {"rule": "spike", "expected": 1.0, "lower": 0.0, "upper": 2.0, "deviation": 9.0, "context": [1.0]}
    message = slack_message(alert(summary=long, entity=long, source=long, alert_key=long, explanation=explanation,
                                  details={f"feature-{i}": long for i in range(20)}))
    assert sum(map(len, block_texts(message))) <= BLOCKS_TEXT_LIMIT
    assert len(message["blocks"][0]["text"]["text"]) > 2900  # the headline is cut to its own limit only
    fields = [f["text"] for f in message["attachments"][0]["blocks"][0]["fields"]]
    assert [f.split("*")[1] for f in fields[:5]] == ["Status", "Severity", "Entity", "Source", "Value"]
    assert len(fields) < 10  # details that found no room are left out, not sent as empty fields
    assert message["blocks"][1]["text"]["text"].startswith("*Why*: spike")
    assert message["blocks"][2]["elements"][0]["text"].endswith("|1700000000>")  # the key's time is not cut off


def test_slack_resolved_is_green_whatever_the_severity() -> None:
    message = slack_message(alert(status="RESOLVED", severity="CRITICAL"))
    assert message["attachments"][0]["color"] == RESOLVED_COLOUR
    assert message["text"].startswith(":white_check_mark: CRITICAL resolved")


def test_slack_colours_differ_by_severity() -> None:
    colours = {s: slack_message(alert(severity=s))["attachments"][0]["color"] for s in COLOURS}
    assert len(set(colours.values())) == 4


def test_backoff_doubles_and_retry_after_wins_when_longer() -> None:
    policy = HttpRetryPolicy(max_retries=4, backoff=0.5)
    assert [policy.delay(n) for n in range(4)] == [0.5, 1.0, 2.0, 4.0]
    assert policy.delay(0, retry_after=3.0) == 3.0
    assert policy.delay(3, retry_after=1.0) == 4.0
    assert policy.delay(0, retry_after=10_000) == 60.0
    assert policy.delay(5000) == policy.delay(1023)  # no OverflowError however many retries are configured


def test_settings_come_from_the_environment_and_keys_stay_secret(monkeypatch: pytest.MonkeyPatch, defaults_config) -> None:
    monkeypatch.setenv("EDDYLINE_PAGERDUTY_ROUTING_KEY", KEY)
    monkeypatch.setenv("EDDYLINE_PAGERDUTY_MAX_RETRIES", "5")
    monkeypatch.setenv("EDDYLINE_SLACK_WEBHOOK_URL", "http://127.0.0.1:9/slack/T/B/C")
    pd, slack = PagerDutySettings(), SlackSettings()
    assert pd.enabled and pd.max_retries == 5 and pd.url == DEFAULT_EVENTS_URL
    assert KEY not in repr(pd)
    assert slack.enabled and "127.0.0.1:9" not in repr(slack)


def test_pagerduty_url_must_be_https_and_the_ca_file_readable(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Any, defaults_config
) -> None:
    with pytest.raises(ValueError, match="must be https://"):
        PagerDutySettings(routing_key=KEY, url="http://127.0.0.1:9")
    monkeypatch.setenv("EDDYLINE_PAGERDUTY_URL", "https://127.0.0.1:9/")
    monkeypatch.setenv("EDDYLINE_PAGERDUTY_CA_FILE", str(tmp_path / "missing.pem"))
    settings = PagerDutySettings(routing_key=KEY)
    assert settings.url == "https://127.0.0.1:9" and settings.ca_file == str(tmp_path / "missing.pem")
    with pytest.raises(ValueError, match="ca_file .* is not a readable PEM certificate"):
        PagerDutySink(settings)
    (tmp_path / "garbage.pem").write_text("not a certificate")
    with pytest.raises(ValueError, match="not a readable PEM certificate"):
        PagerDutySink(settings.model_copy(update={"ca_file": str(tmp_path / "garbage.pem")}))


def test_settings_come_from_the_toml_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
    config = tmp_path / "eddyline.toml"
    config.write_text(f'[pagerduty]\nrouting_key = "{KEY}"\nbackoff = 0.25\n[slack]\nmax_retries = 1\n')
    monkeypatch.setenv("EDDYLINE_CONFIG", str(config))
    assert PagerDutySettings().backoff == 0.25
    assert PagerDutySettings().enabled
    assert SlackSettings().max_retries == 1 and not SlackSettings().enabled


def test_unconfigured_sinks_are_left_out(monkeypatch: pytest.MonkeyPatch, defaults_config) -> None:
    for name in ("EDDYLINE_PAGERDUTY_ROUTING_KEY", "EDDYLINE_SLACK_WEBHOOK_URL"):
        monkeypatch.delenv(name, raising=False)
    assert AlertDispatcher.from_settings().sinks == []
    monkeypatch.setenv("EDDYLINE_SLACK_WEBHOOK_URL", "http://127.0.0.1:9/slack/T/B/C")
    assert [s.name for s in AlertDispatcher.from_settings().sinks] == ["slack"]
    with pytest.raises(ValueError, match="routing_key"):
        PagerDutySink(PagerDutySettings())
    with pytest.raises(ValueError, match="webhook_url"):
        SlackSink(SlackSettings(webhook_url=None))


class RecordingSink:
    """Our own AlertSink, standing in for a channel so that containment is tested without HTTP."""

    def __init__(self, name: str, error: Exception | None = None) -> None:
        self.name = name
        self.error = error
        self.delivered: list[Mapping[str, Any]] = []

    def deliver(self, alert: Mapping[str, Any]) -> None:
        if self.error is not None:
            raise self.error
        self.delivered.append(alert)

    def close(self) -> None:
        return None


def deliveries(sink: str, outcome: str) -> float:
    return REGISTRY.get_sample_value("eddyline_alert_deliveries_total", {"sink": sink, "outcome": outcome}) or 0.0


def test_dispatcher_contains_a_failing_sink(caplog: pytest.LogCaptureFixture) -> None:
    failing = RecordingSink("unit-failing", DeliveryError("gave up", status=503))
    broken = RecordingSink("unit-broken", RuntimeError("bug"))
    ok = RecordingSink("unit-ok")
    failures: list[tuple[str, str, str]] = []
    dispatcher = AlertDispatcher(
        [failing, broken, ok], on_failure=lambda sink, a, e: failures.append((sink, a["alert_key"], str(e)))
    )
    before = (
        deliveries("unit-failing", "failed"),
        deliveries("unit-broken", "error"),
        deliveries("unit-ok", "delivered"),
    )
    for a in (alert(alert_key="a1"), alert(alert_key="a2", status="RESOLVED")):
        dispatcher.dispatch(a)
    assert [a["alert_key"] for a in ok.delivered] == ["a1", "a2"]
    assert failures == [
        ("unit-failing", "a1", "gave up"),
        ("unit-broken", "a1", "bug"),
        ("unit-failing", "a2", "gave up"),
        ("unit-broken", "a2", "bug"),
    ]
    assert deliveries("unit-failing", "failed") - before[0] == 2
    assert deliveries("unit-broken", "error") - before[1] == 2
    assert deliveries("unit-ok", "delivered") - before[2] == 2
    record = next(r for r in caplog.records if getattr(r, "sink", None) == "unit-failing")
    assert record.alert_key == "a1" and record.outcome == "failed" and record.http_status == 503


def test_an_invalid_alert_is_counted_as_invalid_not_dropped() -> None:
    sink = PagerDutySink(PagerDutySettings(routing_key=KEY, url="https://127.0.0.1:9"))
    failures: list[Exception] = []
    before = deliveries("pagerduty", "invalid")
    outcomes = AlertDispatcher([sink], on_failure=lambda s, a, e: failures.append(e)).dispatch(alert(status="ACKED"))
    assert outcomes == {"pagerduty": "invalid"}
    assert deliveries("pagerduty", "invalid") - before == 1
    assert "ACKED" in str(failures[0])


def test_a_raising_failure_handler_does_not_stop_the_others() -> None:
    def handler(sink: str, a: Mapping[str, Any], e: Exception) -> None:
        raise RuntimeError("handler bug")

    ok = RecordingSink("unit-ok2")
    dispatcher = AlertDispatcher([RecordingSink("unit-bad", DeliveryError("no")), ok], on_failure=handler)
    assert dispatcher.dispatch(alert()) == {"unit-bad": "failed", "unit-ok2": "delivered"}
    assert len(ok.delivered) == 1
