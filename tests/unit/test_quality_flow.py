"""The click flow feeding the quality flow, in memory through run_local."""

from __future__ import annotations

from connectors.movielens import click_events, load
from streams.flows import clicks, quality
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
    imp = lambda i, t: Event("clicks", "u", {**base, "event_id": i, "event_time": t, "user_id": "u",
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
        _pred("e", 9000, 0.1), _fb("e", 9100, 0.0),  # move both watermarks past both windows
        _pred("late", 150, 0.5),  # window [0, 1000) is closed by now
        _pred("f", 20000, 0.1), _fb("f", 20100, 0.0),
    ]
    out = [e.record for e in run_local(spec, events) if e.event_type == quality.METRICS_TYPE]
    first = out[0]
    assert (first["window_start"], first["predictions"], first["labelled"], first["missing_feedback"]) == (0, 3, 2, 1)
    assert first["accuracy"] == 1.0 and first["auc"] == 1.0
    assert first["latency_p50_ms"] == 1.0
    assert sum(r["late_events"] for r in out) == 1
    assert [r["window_start"] for r in out] == sorted({r["window_start"] for r in out})


def test_metrics_sink_sets_prometheus_gauges() -> None:
    from prometheus_client import REGISTRY

    from streams.sinks.quality import QualityMetricsSink

    spec = quality.flow("m", window_ms=1000, max_wait_ms=500)
    QualityMetricsSink().write(run_local(spec, [_pred("a", 100, 0.9), _fb("a", 200, 1.0), _pred("z", 20000),
                                                _fb("z", 20000, 0.0)]))
    labels = {"model": "m", "version": "1"}
    assert REGISTRY.get_sample_value("eddyline_model_accuracy", labels) == 1.0
    assert REGISTRY.get_sample_value("eddyline_model_predictions", labels) == 1.0


def test_the_quality_flow_s_dashboards_sink_is_attached_by_the_flow_registry() -> None:
    from streams.flows import flow_spec
    from streams.sinks.quality import quality_metrics_sink

    assert flow_spec("quality").sinks == [quality_metrics_sink]


def _model_stream(n: int = 60, step: int = 500) -> tuple[list[Event], list[Event]]:
    preds = [_pred(f"p{i}", i * step, 0.9 if i % 3 else 0.2) for i in range(n)]
    fbs = [_fb(f"p{i}", i * step + 100, float(i % 3 != 0 or i % 2 == 0)) for i in range(n) if i % 7]  # some missing
    return preds, fbs


def _windows(events: list[Event]) -> list[dict]:
    spec = quality.flow("m", window_ms=2000, max_wait_ms=1000, allowed_lateness_ms=0)
    return [e.record for e in run_local(spec, events)]


def test_topics_read_at_their_own_pace_give_the_same_windows_as_in_step() -> None:
    """Through Kafka one topic is often read far ahead of the other: neither's clock may rule alone."""
    preds, fbs = _model_stream()
    ticks = [_pred("tick", 100_000), _fb("tick", 100_000, 1.0)]  # both inputs move on: every window closes
    in_step = sorted(preds + fbs, key=lambda e: e.record["event_time"]) + ticks
    predictions_first = preds + fbs + ticks
    feedback_first = fbs + preds + ticks
    want = _windows(in_step)
    assert sum(w["labelled"] for w in want) == len(fbs)
    assert sum(w["missing_feedback"] for w in want) == len(preds) - len(fbs)
    assert sum(w["late_events"] for w in want) == 0
    assert _windows(predictions_first) == want
    assert _windows(feedback_first) == want


def test_a_window_waits_for_the_feedback_stream_then_closes_once_it_has_come_far_enough() -> None:
    proc = quality.QualityProcessor("m", window_ms=1000, max_wait_ms=500, allowed_lateness_ms=0)
    assert proc.process([_pred("a", 100, 0.9), _pred("b", 5000, 0.9)]) == []  # feedback has said nothing yet
    assert proc.process([_fb("a", 200, 1.0)]) == []  # feedback at 200: window [0, 1000) may still get answers
    [closed] = [e.record for e in proc.process([_fb("x", 1600, 1.0)])]
    assert (closed["window_start"], closed["predictions"], closed["labelled"], closed["missing_feedback"]) == (0, 1, 1, 0)


def test_a_stalled_feedback_stream_counts_predictions_missing_after_a_run_without_feedback() -> None:
    proc = quality.QualityProcessor("m", window_ms=1000, max_wait_ms=500, allowed_lateness_ms=0, stall_after=10)
    assert proc.process([_pred(f"p{i}", i * 1000, 0.9) for i in range(9)]) == []  # could be reading skew
    closed = [e.record for e in proc.process([_pred("p9", 9000, 0.9)])]  # ten in a row: stalled
    assert [w["window_start"] for w in closed] == list(range(0, 8000, 1000))  # 9000 - 500 wait: up to 8000
    assert all(w["missing_feedback"] == 1 and w["labelled"] == 0 for w in closed)
    late = [e.record for e in proc.process([_fb("p0", 100, 1.0), _pred("p20", 20000), _fb("p20", 20000, 1.0)])]
    assert sum(w["late_events"] for w in late) == 1  # the feedback that came after all is counted, not dropped


def test_quality_settings_fill_in_what_the_flow_is_not_given(monkeypatch) -> None:
    monkeypatch.setenv("EDDYLINE_QUALITY_WINDOW_MS", "250")
    monkeypatch.setenv("EDDYLINE_QUALITY_STALL_AFTER", "7")
    proc = quality.flow("m").make_processor("m")
    assert (proc.window_ms, proc.stall_after, proc.max_wait_ms) == (250, 7, 31 * 60_000)
    assert quality.flow("m", window_ms=1000, max_wait_ms=0).make_processor("m").params()["max_wait_ms"] == 0


def test_feedback_whose_prediction_gave_up_is_counted_late_not_dropped() -> None:
    proc = quality.QualityProcessor("m", window_ms=1000, max_wait_ms=500, allowed_lateness_ms=0)
    proc.process([_pred("a", 100, 0.9), _fb("other", 700, 1.0), _pred("z", 3000), _fb("z2", 3000, 0.0)])
    proc.process([_fb("a", 800, 1.0)])  # a's prediction counted missing already
    out = [e.record for e in proc.process([_pred("y", 9000), _fb("y", 9000, 1.0)])]
    assert sum(w["missing_feedback"] for w in out) >= 1
    assert sum(w["late_events"] for w in out) == 2  # the stray feedback and the one after its prediction gave up


def test_quality_state_survives_a_snapshot_between_skewed_batches() -> None:
    import pickle

    preds, fbs = _model_stream()
    events = preds[:30] + fbs[:10] + preds[30:] + fbs[10:] + [_pred("tick", 100_000), _fb("tick", 100_000, 1.0)]
    whole = _windows(events)
    spec = quality.flow("m", window_ms=2000, max_wait_ms=1000, allowed_lateness_ms=0)
    procs: dict = {}
    first = run_local(spec, events[:45], procs)
    procs = {k: pickle.loads(pickle.dumps(p)) for k, p in procs.items()}
    rest = run_local(spec, events[45:], procs)
    assert [e.record for e in first + rest] == whole
