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


def test_anomalies_are_readings_at_or_over_the_threshold_and_the_list_is_bounded() -> None:
    s = LiveState(LiveLimits(rows=3))
    s.apply("scores.anomaly", scores("a", [0.1, 0.5, 0.9, 0.2, 0.7, 0.6]))
    view = s.snapshot()["anomalies"]
    assert view["scored"] == 6 and view["anomalous"] == 4
    assert [r["score"] for r in view["recent"]] == [0.6, 0.7, 0.9]  # newest first, three kept
    assert view["devices"] == [{"device": "dev-1", "scored": 6, "anomalous": 4, "max_score": 0.9}]


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
