"""The click flow feeding the quality flow, in memory through run_local."""

from __future__ import annotations

from benchmarks.movielens import click_events, load
from streams import clicks, quality
from streams.processor import Event, run_local


def _pred(pid: str, t: int, score: float = 0.8, version: str = "1") -> Event:
    return Event("predictions", "m", {"event_id": pid, "event_time": t, "model_name": "m", "model_version": version,
                                       "score": score, "latency_ms": 1.0, "error": None})


def _fb(pid: str, t: int, label: float) -> Event:
    return Event("feedback", "m", {"event_id": f"f{pid}", "event_time": t, "model_name": "m",
                                    "prediction_id": pid, "label": label})


def test_click_flow_predicts_before_learning_and_emits_feedback_for_each_prediction() -> None:
    events = [Event("clicks", e["user_id"], e) for e in click_events(load(limit=600))]
    out = run_local(clicks.flow(), events)
    preds = [e.record for e in out if e.topic == "predictions"]
    fbs = [e.record for e in out if e.topic == "feedback"]
    assert len(preds) == 600 and len(fbs) == 600
    assert {f["prediction_id"] for f in fbs} == {p["event_id"] for p in preds}
    assert all(p["model_name"] == clicks.MODEL_NAME and p["model_version"] and p["latency_ms"] >= 0 for p in preds)
    assert preds[0]["score"] == 0.5  # nothing learned before the first prediction
    again = run_local(clicks.flow(), events)
    assert [e.record["event_id"] for e in again] == [e.record["event_id"] for e in out]


def test_unrated_impression_becomes_a_click_or_a_non_click_after_the_wait() -> None:
    proc = clicks.ClickProcessor(click_wait_ms=1000)
    base = {"producer": "t", "position": None, "rating": None, "context": {}}
    imp = lambda i, t: Event("clicks", "u", {**base, "event_id": i, "event_time": t, "user_id": "u",  # noqa: E731
                                             "item_id": "a", "action": "IMPRESSION", "impression_id": None})
    out = proc.process([imp("i1", 0), imp("i2", 10)])
    out += proc.process([Event("clicks", "u", {**base, "event_id": "c1", "event_time": 20, "user_id": "u",
                                               "item_id": "a", "action": "CLICK", "impression_id": "i1"})])
    out += proc.process([imp("i3", 5000)])
    labels = [e.record["label"] for e in out if e.topic == "feedback"]
    assert labels == [1.0, 0.0]


def test_quality_windows_join_in_event_time_count_missing_and_late() -> None:
    spec = quality.flow("m", window_ms=1000, max_wait_ms=500)
    events = [
        _pred("a", 100, 0.9), _fb("a", 300, 1.0),
        _fb("b", 350, 0.0), _pred("b", 200, 0.2),  # feedback before its prediction
        _pred("c", 400, 0.7),  # never gets feedback
        _pred("d", 2100, 0.6), _fb("d", 2200, 1.0),
        _pred("e", 9000, 0.1),  # moves the watermark past both windows
        _pred("late", 150, 0.5),  # window [0, 1000) is closed by now
        _pred("f", 20000, 0.1),
    ]
    out = [e.record for e in run_local(spec, events) if e.event_type == quality.METRICS_TYPE]
    first = out[0]
    assert (first["window_start"], first["predictions"], first["labelled"], first["missing_feedback"]) == (0, 3, 2, 1)
    assert first["accuracy"] == 1.0 and first["auc"] == 1.0
    assert first["latency_p50_ms"] == 1.0
    assert sum(r["late_events"] for r in out) == 1
    assert [r["window_start"] for r in out] == sorted({r["window_start"] for r in out})


def test_metrics_sink_sets_prometheus_gauges() -> None:
    from prometheus_client import CollectorRegistry

    reg = CollectorRegistry()
    sink = quality.QualityMetricsSink(registry=reg)
    spec = quality.flow("m", window_ms=1000, max_wait_ms=500)
    sink.write(run_local(spec, [_pred("a", 100, 0.9), _fb("a", 200, 1.0), _pred("z", 20000)]))
    assert reg.get_sample_value("eddyline_model_accuracy", {"model": "m", "version": "1"}) == 1.0
    assert reg.get_sample_value("eddyline_model_predictions", {"model": "m", "version": "1"}) == 1.0
