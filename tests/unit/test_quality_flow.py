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


def test_an_empty_model_version_or_a_nan_latency_costs_one_point_at_most_never_the_flow() -> None:
    """Records the schema accepts: an empty tag is written as "none"; a window whose latency is NaN (which
    InfluxDB cannot store) is left out and counted, and the other windows of the batch are still written."""
    from connectors.influx import InfluxSettings, InfluxSink
    from streams.sinks.quality import QualityMetricsSink
    from tests.unit.test_influx import WriteServer

    nan = _pred("n", 150, version="2")
    nan.record["latency_ms"] = float("nan")
    events = [_pred("a", 100, 0.9, version=""), _fb("a", 200, 1.0), nan, _fb("n", 250, 0.0),
              _pred("z", 20000), _fb("z", 20000, 0.0)]
    emits = run_local(quality.flow("m", window_ms=1000, max_wait_ms=500), events)
    assert {e.record["model_version"] for e in emits if e.event_type == quality.METRICS_TYPE} >= {"", "2"}
    server = WriteServer()
    try:
        sink = QualityMetricsSink(InfluxSink(InfluxSettings(url=server.url, flush_interval_ms=50, max_retries=0)))
        sink.write(emits)
        sink.close()
    finally:
        server.stop()
    assert sink.points_refused == {"field_not_finite": 1}
    assert sink.influx.tags_normalised == {"empty": 1}
    assert [line.split(" ")[0] for line in server.lines] == ["model_quality,model_name=m,model_version=none"]


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


def test_feedback_for_a_failed_prediction_is_no_late_event() -> None:
    """Producers send feedback for every prediction, failed ones too: each was counted late, after its wait."""
    failed = _pred("b", 300)
    failed.record["error"] = "timeout"
    early = _pred("c", 500)
    early.record["error"] = "timeout"
    proc = quality.QualityProcessor("m", window_ms=1000, max_wait_ms=500, allowed_lateness_ms=0)
    out = proc.process([_pred("a", 100), _fb("a", 200, 1.0), failed, _fb("b", 400, 0.0),
                        _fb("c", 450, 1.0), early, _fb("b", 460, 0.0), _pred("z", 9000), _fb("z", 9000, 1.0)])
    first = next(e.record for e in out if e.record["window_start"] == 0)
    assert (first["predictions"], first["labelled"], first["missing_feedback"], first["error_rate"]) == (3, 1, 0, 2 / 3)
    assert sum(e.record["late_events"] for e in out) == 0 and proc.duplicates["feedback"] == 1  # b's, twice


def test_a_model_version_holding_a_bar_is_windowed_like_any_other() -> None:
    """Window keys are ``version|start``: a version "2|canary" made every later event of the model raise."""
    proc = quality.QualityProcessor("m", window_ms=1000, max_wait_ms=500, allowed_lateness_ms=0)
    out = proc.process([_pred("a", 100, version="2|canary"), _fb("a", 200, 1.0), _pred("z", 9000, version="2|canary"),
                        _fb("z", 9000, 1.0)])
    first = next(e.record for e in out if e.record["window_start"] == 0)
    assert (first["model_version"], first["predictions"], first["labelled"]) == ("2|canary", 1, 1)
    assert [e.record["model_version"] for e in proc.flush()] == ["2|canary"]


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


def _click(i: str, t: int, user: str = "u", action: str = "IMPRESSION", impression: str | None = None,
           rating: float | None = None, partition: int = -1) -> Event:
    return Event("clicks", user, {"event_id": i, "event_time": t, "producer": "t", "user_id": user, "item_id": "a",
                                  "action": action, "impression_id": impression, "position": None, "rating": rating,
                                  "context": {"genres": "Drama"}}, partition, -1)


def test_a_click_rated_nan_is_dead_lettered_with_the_reason() -> None:
    import math

    from connectors.dlq import dlq_info
    from connectors.kafka import KafkaSettings
    from schemas import CLICK, AvroSerde
    from streams.engines.output import DeadLetter, FlowOutput

    value = AvroSerde().encode(CLICK, _click("i1", 0, rating=math.nan).record, check=False)
    output = FlowOutput(clicks.flow(), KafkaSettings(namespace="t9."))
    dead = output.decode("t9.clicks", b"u", value, 0, 7)
    assert isinstance(dead, DeadLetter) and dead.error == "click.rating: is NaN or infinite"
    assert dlq_info(output.dead_letter(dead).headers)["reason"] == "invalid"


def test_a_rating_that_is_not_finite_is_counted_and_never_learned() -> None:
    """Past validation (run_local, a test), one such rating would make the shared model predict NaN for everyone."""
    import math

    proc = clicks.ClickProcessor("clicks-bad-rating")
    proc.process([_click("i0", 0, "ann", rating=5.0)])
    before = proc.model.snapshot()
    out = proc.process([_click("i1", 1, "eve", rating=math.inf), _click("i2", 2, "eve", rating=math.nan)])
    assert [e.topic for e in out] == ["predictions", "predictions"] and proc.bad_ratings == 2
    assert proc.model.snapshot() == before and not proc.pending
    [pred] = proc.process([_click("i3", 3, "bob")])
    assert math.isfinite(pred.record["score"]) and all(map(math.isfinite, pred.record["features"].values()))


def test_a_partition_read_behind_the_others_does_not_turn_its_clicks_into_non_clicks() -> None:
    proc = clicks.ClickProcessor(click_wait_ms=30 * 60_000)
    ahead = [_click(f"a{k}", 40 * 60_000 + k, "alice", partition=0) for k in range(3)]
    behind = [_click("b", 0, "bob", partition=1), _click("c", 60_000, "bob", "CLICK", "b", partition=1)]
    out = proc.process(ahead + behind)
    labels = {e.record["prediction_id"]: e.record["label"] for e in out if e.topic == "feedback"}
    [bob] = [e.record["event_id"] for e in out if e.topic == "predictions" and e.record["subject_id"] == "bob"]
    assert labels == {bob: 1.0} and len(proc.pending) == 3 and proc.unmatched_clicks == 0
    assert proc.watermark == 60_000  # the slowest partition's clock
    out = proc.process([_click("b2", 80 * 60_000, "bob", partition=1)])
    assert not [e for e in out if e.topic == "feedback"]  # partition 0 has not come that far
    out = proc.process([_click("a9", 80 * 60_000, "alice", partition=0)])  # both past alice's: they expire
    assert sorted(e.record["label"] for e in out if e.topic == "feedback") == [0.0, 0.0, 0.0]


def test_a_silent_partition_stops_holding_expiry_back_and_a_click_too_late_is_counted() -> None:
    proc = clicks.ClickProcessor(click_wait_ms=1000)
    proc.idle_after = 5
    proc.process([_click("x", 0, "xena", partition=3)])  # partition 3 then says nothing more
    out = proc.process([_click(f"a{k}", 10_000 + k, "alice", partition=0) for k in range(5)])
    assert not [e for e in out if e.topic == "feedback"]  # five events: partition 3 may only be slow
    out = proc.process([_click("a5", 10_005, "alice", partition=0)])
    assert [e.record["label"] for e in out if e.topic == "feedback"] == [0.0]  # xena's impression expired
    proc.process([_click("xc", 500, "xena", "CLICK", "x", partition=3)])
    proc.process([_click("rc", 10_006, "alice", "CLICK", "r", rating=5.0, partition=0)])  # a rated replay's click
    assert proc.unmatched_clicks == 1


def test_click_state_from_before_per_partition_clocks_restores() -> None:
    from streams.state import decode, encode

    proc = clicks.ClickProcessor(click_wait_ms=1000)
    proc.process([_click("i1", 100), _click("i2", 150)])
    old = {k: v for k, v in decode(encode(proc.snapshot())).items()
           if k not in ("partitions", "arrivals", "unmatched_clicks", "bad_ratings")}
    restored = clicks.ClickProcessor(click_wait_ms=1000)
    restored.restore(old)
    assert restored.watermark == 150 and set(restored.pending) == {"i1", "i2"} and restored.unmatched_clicks == 0
    out = restored.process([_click("i3", 1120)])
    assert [e.record["label"] for e in out if e.topic == "feedback"] == [0.0]  # i1 expired, i2 waits
    assert restored.snapshot()["partitions"] == {"clicks:-1": [1120, 1]}


def test_replayed_predictions_and_feedback_count_once() -> None:
    """A producer's replay after a crash repeats events with their ids: a window counts each once."""
    preds, fbs = _model_stream(20, step=100)
    ticks = [_pred("tick", 100_000), _fb("tick", 100_000, 1.0)]
    once = _windows(preds + fbs + ticks)
    replayed = _windows(preds + fbs + preds[10:] + fbs[8:] + ticks)
    assert replayed == once and sum(w["predictions"] for w in once) == 20
    proc = quality.QualityProcessor("m", window_ms=2000, max_wait_ms=1000, allowed_lateness_ms=0)
    proc.process(preds + fbs + preds[10:] + fbs[8:])
    assert proc.duplicates == {"predictions": 10, "feedback": len(fbs[8:])}


def test_quality_state_from_before_repeats_were_noticed_restores() -> None:
    from streams.state import decode, encode

    proc = quality.QualityProcessor("m", window_ms=1000, max_wait_ms=500, allowed_lateness_ms=0)
    proc.process([_pred("a", 100, 0.9), _pred("b", 200, 0.2), _fb("a", 300, 1.0)])
    old = decode(encode(proc.snapshot()))
    del old["duplicates"]
    for w in old["windows"].values():
        del w["ids"]
    restored = quality.QualityProcessor("m", window_ms=1000, max_wait_ms=500, allowed_lateness_ms=0)
    restored.restore(old)
    [w] = [e.record for e in restored.process([_fb("b", 300, 0.0), _pred("z", 5000), _fb("z", 5000, 0.0)])]
    assert (w["predictions"], w["labelled"], w["missing_feedback"]) == (2, 2, 0) and restored.duplicates == {
        "predictions": 0, "feedback": 0}


def test_a_window_without_positives_leaves_out_precision_recall_and_f1_and_the_sink_copes() -> None:
    """All right, no click: precision, recall and F1 are undefined, not 0 (which reads as a broken model)."""
    from prometheus_client import REGISTRY

    from streams.sinks.quality import QualityMetricsSink

    events = [e for i in range(10) for e in (_pred(f"n{i}", 100 + i, 0.1, version="one-class"),
                                               _fb(f"n{i}", 200 + i, 0.0))]
    emits = run_local(quality.flow("m", window_ms=1000, max_wait_ms=500), events + [
        _pred("z", 20000, version="one-class"), _fb("z", 20000, 0.0)])
    [w] = [e.record for e in emits if e.record["window_start"] == 0]
    assert w["accuracy"] == 1.0 and w["labelled"] == 10
    assert not {"precision", "recall", "f1", "auc"} & set(w)
    QualityMetricsSink().write(emits)
    labels = {"model": "m", "version": "one-class"}
    assert REGISTRY.get_sample_value("eddyline_model_accuracy", labels) == 1.0
    assert REGISTRY.get_sample_value("eddyline_model_recall", labels) is None


def test_a_gauge_undefined_in_the_latest_window_holds_no_stale_value() -> None:
    """Recall was 1.0 in the window before; in one without positives it is undefined, so the gauge goes away."""
    from prometheus_client import REGISTRY

    from streams.sinks.quality import QualityMetricsSink

    first = [e for i in range(4) for e in (_pred(f"p{i}", 100 + i, 0.9, version="stale"), _fb(f"p{i}", 200 + i, 1.0))]
    second = [e for i in range(4) for e in (_pred(f"n{i}", 1100 + i, 0.1, version="stale"),
                                            _fb(f"n{i}", 1200 + i, 0.0))]
    flow = quality.flow("m", window_ms=1000, max_wait_ms=500)
    emits = run_local(flow, first + second + [_pred("z", 20000, version="stale"), _fb("z", 20000, 0.0)])
    windows = [e for e in emits if e.record.get("window_start") in (0, 1000)]
    assert [w.record["window_start"] for w in windows] == [0, 1000]
    sink, labels = QualityMetricsSink(), {"model": "m", "version": "stale"}
    sink.write(windows[:1])
    assert REGISTRY.get_sample_value("eddyline_model_recall", labels) == 1.0
    sink.write(windows[1:])
    assert REGISTRY.get_sample_value("eddyline_model_recall", labels) is None
    assert REGISTRY.get_sample_value("eddyline_model_accuracy", labels) == 1.0


def test_versions_promoted_for_months_keep_the_prometheus_series_of_a_few_only() -> None:
    """Retraining promotes a version a day for as long as the flow runs: gauges per version kept for good would grow
    without bound; those of the latest versions stay, older ones go (their history is in InfluxDB)."""
    from prometheus_client import REGISTRY

    from streams.flows.quality import METRICS_TOPIC, METRICS_TYPE
    from streams.processor import Emit
    from streams.sinks.quality import VERSIONS_SHOWN, QualityMetricsSink

    def window(version: int) -> Emit:
        end = version * 86_400_000
        return Emit(METRICS_TOPIC, "m", METRICS_TYPE, {
            "event_id": f"w{version}", "model_name": "daily", "model_version": str(version),
            "window_start": end - 60_000, "window_end": end, "predictions": 10, "accuracy": 0.9})

    sink = QualityMetricsSink()
    for version in range(1, 366):
        sink.write([window(version)])
    shown = {s.labels["version"] for m in REGISTRY.collect() if m.name.startswith("eddyline_model_")
             for s in m.samples if s.labels.get("model") == "daily"}
    assert shown == {str(v) for v in range(366 - VERSIONS_SHOWN, 366)}
    sink.write([window(1)])  # a version rolled back to comes back, in place of the least recent
    assert REGISTRY.get_sample_value("eddyline_model_accuracy", {"model": "daily", "version": "1"}) == 0.9
    assert REGISTRY.get_sample_value("eddyline_model_accuracy", {"model": "daily", "version": "361"}) is None


def test_a_quiet_model_s_last_window_is_emitted_when_its_key_is_evicted_and_only_once() -> None:
    """A model that stops predicting (at night, retired) moves no watermark: its last window waited for traffic that
    might never come, and was lost with its key's state when retention expired it."""
    from streams.engines.output import flushed
    from streams.state import decode_processor, encode_processor

    spec = quality.flow("m", window_ms=1000, max_wait_ms=500, allowed_lateness_ms=0)
    proc = spec.make_processor("m")
    assert proc.process([_pred("a", 100), _fb("a", 150, 1.0), _pred("b", 200), _fb("b", 250, 0.0),
                         _pred("c", 1200, version="2"), _fb("c", 1250, 1.0)]) == []
    out = [e.record for e in flushed(spec, proc) or []]  # what both engines do before an idle key leaves memory
    assert [(w["model_version"], w["window_start"], w["predictions"], w["labelled"], w["missing_feedback"])
            for w in out] == [("1", 0, 2, 2, 0), ("2", 1000, 1, 1, 0)]
    assert flushed(spec, proc) == []
    back = decode_processor(encode_processor(proc, "m"), spec.make_processor("m"))  # as the engines store it
    again = back.process([_pred("d", 900), _pred("e", 5000), _fb("e", 5000, 0.0), _pred("z", 9000),
                          _fb("z", 9000, 1.0)])
    windows = [e.record for e in again]
    assert 0 not in [w["window_start"] for w in windows], "a window is emitted once"
    assert sum(w["late_events"] for w in windows) == 1  # d, for a window that closed


def test_a_model_predicting_less_often_than_the_idle_eviction_keeps_the_window_its_feedback_is_due_in() -> None:
    """Evicted between a prediction and its feedback (sparse traffic, labels that take minutes): closing that window
    at the flush counted every prediction missing and every label late."""
    proc = quality.QualityProcessor("m", window_ms=1000, max_wait_ms=5000, allowed_lateness_ms=0)
    proc.process([_pred("a", 100), _fb("a", 150, 1.0), _pred("b", 1200)])
    assert [e.record["window_start"] for e in proc.flush()] == [0]  # answered: emitted now
    assert proc.flush() == []
    out = proc.process([_fb("b", 3000, 0.0), _pred("z", 20_000), _fb("z", 20_000, 1.0)])
    b = next(e.record for e in out if e.record["window_start"] == 1000)
    assert (b["labelled"], b["missing_feedback"], b["late_events"]) == (1, 0, 0)
