"""The live page's view, folded from output events without Kafka: counted once, bounded, alerts open and close."""

from __future__ import annotations

from streams.apps.live.state import LiveLimits, LiveState


def alert(key: str, status: str, t: int, event_id: str | None = None) -> dict:
    return {
        "event_id": event_id or f"{key}-{status}-{t}",
        "event_time": t,
        "producer": "p",
        "alert_key": key,
        "status": status,
        "severity": "ERROR",
        "source": "sensor-anomaly",
        "entity": "d/s",
        "summary": f"{key} {status}",
        "value": 1.0,
        "details": {},
    }


def scores(event_id: str, values: list[float]) -> dict:
    return {
        "event_id": event_id,
        "event_time": 0,
        "producer": "p",
        "source_event_id": "x",
        "device_id": "dev-1",
        "model": "m",
        "threshold": 0.5,
        "series": [{"sensor": "temp", "timestamps": list(range(len(values))), "scores": values}],
    }


def test_alerts_open_update_and_resolve_and_redeliveries_count_once() -> None:
    s = LiveState()
    s.apply("alerts", alert("k1", "OPENED", 1))
    s.apply("alerts", alert("k1", "OPENED", 1))  # redelivered
    s.apply("alerts", alert("k2", "OPENED", 2))
    s.apply("alerts", alert("k1", "UPDATED", 3))
    view = s.snapshot()["alerts"]
    assert [a["key"] for a in view["open"]] == ["k1", "k2"]  # most recently updated first
    assert view["open"][0]["opened"] == 1 and view["open"][0]["updated"] == 3
    s.apply("alerts", alert("k1", "RESOLVED", 4))
    view = s.snapshot()
    assert [a["key"] for a in view["alerts"]["open"]] == ["k2"]
    assert view["alerts"]["counts"] == {"OPENED": 2, "UPDATED": 1, "RESOLVED": 1}
    assert view["duplicates"] == 1


def test_the_open_alerts_shown_are_the_newest_rows_and_all_are_counted() -> None:
    s = LiveState(LiveLimits(rows=2, open_alerts=3))
    for i in range(5):  # a fleet incident: an alert per device, none resolved yet
        s.apply("alerts", alert(f"k{i}", "OPENED", i))
    view = s.snapshot()["alerts"]
    assert [a["key"] for a in view["open"]] == ["k4", "k3"] and view["open_count"] == 3
    assert list(s.open_alerts) == ["k2", "k3", "k4"]


def test_anomalies_are_readings_at_or_over_the_threshold_and_the_list_is_bounded() -> None:
    s = LiveState(LiveLimits(rows=3))
    s.apply("scores.anomaly", scores("a", [0.1, 0.5, 0.9, 0.2, 0.7, 0.6]))
    view = s.snapshot()["anomalies"]
    assert view["scored"] == 6 and view["anomalous"] == 4
    assert [r["score"] for r in view["recent"]] == [0.6, 0.7, 0.9]  # newest first, three kept
    assert view["devices"] == [{"device": "dev-1", "scored": 6, "anomalous": 4, "max_score": 0.9}]


def test_the_anomaly_tally_keeps_the_most_recently_scored_devices() -> None:
    s = LiveState(LiveLimits(scored_devices=2))
    for i, device in enumerate(["dev-1", "dev-2", "dev-3", "dev-2"]):
        s.apply("scores.anomaly", {**scores(f"e{i}", [0.9]), "device_id": device})
    assert sorted(d["device"] for d in s.snapshot()["anomalies"]["devices"]) == ["dev-2", "dev-3"]
    assert s.devices["dev-2"]["anomalous"] == 2 and s.snapshot()["anomalies"]["anomalous"] == 4


def test_rejected_events_are_counted_by_topic_and_reason() -> None:
    s = LiveState()
    before = s.version
    s.reject("drift", "undecodable")
    s.reject("drift", "undecodable")
    assert s.snapshot()["rejected"] == {"drift": {"undecodable": 2}}
    assert s.version > before


def test_conversations_keep_the_most_recently_active() -> None:
    s = LiveState(LiveLimits(conversations=2))
    for i, conv in enumerate(["c1", "c2", "c1", "c3"]):
        s.apply(
            "scores.sentiment",
            {
                "event_id": f"e{i}",
                "event_time": i,
                "producer": "p",
                "source_event_id": "t",
                "conversation_id": conv,
                "segment": i,
                "text": "hi",
                "label": "neutral",
                "score": 0.0,
                "probabilities": {},
                "rolling_score": None,
                "model": "m",
            },
        )
    view = s.snapshot()["sentiment"]
    assert [c["conversation"] for c in view] == ["c3", "c1"]
    assert view[1]["segments"] == 2


def health(device: str, seq: int, agent: str = "1.0", model: str | None = None) -> dict:
    return {"event_id": f"{device}-{seq}", "event_time": seq, "producer": "p", "device_id": device, "seq": seq,
            "device_class": "rpi4", "agent_version": agent, "interval_s": 60.0, "model_version": model,
            "model_state": "running" if model else "none", "model_message": None, "buffer_depth": 2,
            "buffer_readings": 20, "buffer_oldest_age_s": 1.0, "send_rate": 10.0, "sampled_readings": 100,
            "acked_readings": 80, "errors": 0, "dropped_readings": 0, "cpu_percent": 1.0, "rss_mb": 38.2,
            "inference_latency_ms": None, "clock_offset_ms": None}


def fleet_alert(device: str, kind: str, status: str, t: int) -> dict:
    return {**alert(f"fleet-{device}-{kind}", status, t), "source": "fleet", "entity": device,
            "details": {"kind": kind, "device_id": device}}


def test_fleet_panel_groups_devices_by_version_and_state_from_health_and_fleet_alerts() -> None:
    now = [1000.0]
    s = LiveState(LiveLimits(fleet_devices=3), clock=lambda: now[0])
    for i, d in enumerate(("pi-1", "pi-2", "pi-3")):
        s.apply("device.health", health(d, i, model="m2" if d == "pi-3" else None), broker_ms=1_000_000)
    s.apply("device.health", health("pi-1", 5), broker_ms=1_000_000)
    s.apply("device.health", health("pi-1", 5), broker_ms=1_000_000)  # redelivered: counted once
    now[0] = 1060.0
    s.apply("alerts", fleet_alert("pi-2", "silent", "OPENED", 10))
    view = s.snapshot()["fleet"]
    assert view["devices"] == 3
    assert view["groups"] == [{"agent_version": "1.0", "model_version": "m2", "state": "ok", "devices": 1},
                              {"agent_version": "1.0", "model_version": "none", "state": "ok", "devices": 1},
                              {"agent_version": "1.0", "model_version": "none", "state": "silent", "devices": 1}]
    assert [(r["device"], r["state"], r["age_s"]) for r in view["trouble"]] == [("pi-2", "silent", 60.0)]
    s.apply("alerts", fleet_alert("pi-2", "silent", "RESOLVED", 20))
    assert not s.snapshot()["fleet"]["trouble"]
    s.apply("device.health", health("pi-4", 7))  # over the bound: the least recently heard (pi-2) leaves
    assert {r["device"] for r in s.fleet.values()} == {"pi-1", "pi-3", "pi-4"}


def test_a_conversation_shows_its_emotion_and_routing() -> None:
    s = LiveState()
    s.apply("scores.sentiment", {
        "event_id": "s1", "event_time": 1, "producer": "p", "source_event_id": "t1", "conversation_id": "c1",
        "segment": 0, "text": "I am furious", "label": "negative", "score": -0.8, "probabilities": {},
        "rolling_score": -0.8, "model": "m", "emotion": "anger", "emotions": {}, "emotion_model": "nrc"})
    s.apply("routing", {
        "event_id": "r1", "event_time": 1, "producer": "p", "source_event_id": "t1", "conversation_id": "c1",
        "segment": 0, "action": "escalate_supervisor", "previous_action": "keep", "rule": "angry",
        "reason": "anger in 2 of the last 2 segments", "rolling_score": -0.8, "trend": None, "emotion": "anger",
        "emotion_share": 1.0, "emotion_model": "nrc"})
    (row,) = s.snapshot()["sentiment"]
    assert (row["emotion"], row["route"], row["reason"], row["segments"]) == (
        "anger", "escalate_supervisor", "anger in 2 of the last 2 segments", 1)
    assert s.snapshot()["events"]["routing"] == 1


def test_fleet_incidents_of_devices_long_gone_are_bounded_like_the_fleet() -> None:
    s = LiveState(LiveLimits(fleet_devices=3))
    for i in range(50):  # retired devices whose silent alert never resolves
        s.apply("device.health", health(f"pi-{i}", i))
        s.apply("alerts", fleet_alert(f"pi-{i}", "silent", "OPENED", i))
    assert list(s.fleet_incidents) == ["pi-47", "pi-48", "pi-49"]
    assert len(s.snapshot()["fleet"]["trouble"]) == 3


def test_the_page_json_has_no_nan_or_infinity_a_browser_would_refuse() -> None:
    import json

    import pytest

    from streams.apps.live.state import page_json

    s = LiveState()
    s.apply("scores.sentiment", {
        "event_id": "s1", "event_time": 1, "producer": "p", "source_event_id": "t1", "conversation_id": "c1",
        "segment": 0, "text": "hi", "label": "neutral", "score": float("nan"), "probabilities": {},
        "rolling_score": float("inf"), "model": "m", "emotion": None, "emotions": {}, "emotion_model": None})

    def refuse(token: str) -> None:
        pytest.fail(f"{token} in the page's JSON: JSON.parse refuses it")

    view = json.loads(page_json(s.snapshot() | s.selected({})), parse_constant=refuse)
    (row,) = view["sentiment"]
    assert (row["score"], row["rolling"]) == (None, None)
    assert view["call_chart"]["data"][1:] == [[None], [None]]


def test_the_pages_clock_formatting_takes_any_timestamp_a_device_sends() -> None:
    """new Date(ms).toISOString() throws past year 275760, and the render stopped at the first such reading."""
    import re
    import shutil
    import subprocess
    from pathlib import Path

    import pytest

    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed")
    js = (Path(__file__).parents[2] / "streams/apps/live/static/app.js").read_text()
    [helper] = re.findall(r"^const time = .*?^};?$", js, flags=re.S | re.M)
    out = subprocess.run([node, "-e", helper + "\nconsole.log(time(0), time(1e20), time(NaN))"],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["00:00:00", "100000000000000000000", "NaN"]


def test_a_device_was_last_heard_at_its_heartbeats_broker_time_not_when_the_page_read_it() -> None:
    """A restarted page reads every heartbeat again at once: a device silent for an hour showed 'heard 0 s ago'."""
    s = LiveState(clock=lambda: 10_000.0)
    s.apply("device.health", health("pi-1", 1), broker_ms=6_400_000)  # read now, heard an hour before
    s.apply("device.health", health("pi-2", 2))  # no broker timestamp: the device's own event time
    s.apply("alerts", fleet_alert("pi-1", "silent", "OPENED", 10))
    s.apply("alerts", fleet_alert("pi-2", "silent", "OPENED", 10))
    ages = {r["device"]: r["age_s"] for r in s.snapshot()["fleet"]["trouble"]}
    assert ages == {"pi-1": 3600.0, "pi-2": 10_000.0}


def test_an_event_the_view_cannot_take_is_counted_as_rejected_and_the_page_goes_on() -> None:
    """An event a view's handler raises on (a model version with '|' once broke the quality join) killed the page's
    reader for good; here a handler that raises stands for any such bug."""
    s = LiveState(LiveLimits(quality_window_ms=100, quality_wait_ms=100, quality_lateness_ms=0))

    def broken(rec: dict) -> None:
        raise ValueError(f"cannot file {rec['event_id']}")

    s._feedback = broken  # type: ignore[method-assign]
    for i in range(3):
        s.apply("feedback", {"event_id": f"f{i}", "event_time": i * 100 + 50, "producer": "p", "model_name": "churn",
                             "prediction_id": f"p{i}", "label": 1.0})
    s.apply("alerts", alert("k1", "OPENED", 1))
    view = s.snapshot()
    assert view["rejected"] == {"feedback": {"ValueError": 3}}
    assert [a["key"] for a in view["alerts"]["open"]] == ["k1"] and view["events"]["alerts"] == 1


def test_the_quality_table_keeps_the_latest_model_versions() -> None:
    """Every version a retraining ever promoted kept a row: hundreds over months, all sent on every push."""
    s = LiveState(LiveLimits(rows=3, quality_window_ms=100, quality_wait_ms=100, quality_lateness_ms=0))
    for i in range(8):  # a new version per window, each prediction answered
        s.apply("predictions", {"event_id": f"p{i}", "event_time": i * 1000, "producer": "p", "model_name": "clicks",
                                "model_version": str(i), "subject_id": "u", "item_id": None,
                                "features_digest": "x", "features": {}, "score": 0.7, "label": None,
                                "latency_ms": 1.0, "error": None})
        s.apply("feedback", {"event_id": f"f{i}", "event_time": i * 1000 + 50, "producer": "p",
                             "model_name": "clicks", "prediction_id": f"p{i}", "label": 1.0})
    versions = [w["model_version"] for w in s.snapshot()["quality"]["windows"]]
    assert versions == ["4", "5", "6"]  # the three most recently closed (7's window is still open)
