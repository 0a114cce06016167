"""The drift flow in memory: data drift per feature, concept drift on joined errors, drift events and alerts."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from schemas import AvroSerde
from streams.flows import drift
from streams.processor import Event, run_local
from tests.fixtures.counting import CountingDict
from tests.unit.test_drift import _warming_up_then_rising_errors

serde = AvroSerde()


def _pred(i: int, score: float, x: float, model: str = "m") -> Event:
    return Event("predictions", model, {
        "event_id": f"p{i}", "event_time": 1_000_000 + i * 100, "producer": "t", "model_name": model,
        "model_version": "1", "subject_id": "u", "item_id": None, "features_digest": "d",
        "features": {"x": x, "const": 1.0}, "score": score, "label": None, "latency_ms": 1.0, "error": None})


def _fb(i: int, label: float, model: str = "m") -> Event:
    return Event("feedback", model, {"event_id": f"f{i}", "event_time": 1_000_000 + i * 100 + 50, "producer": "t",
                                     "model_name": model, "prediction_id": f"p{i}", "label": label})


def _stream(n: int, shift_at: int, *, concept: bool, data: bool, seed: int = 0) -> list[Event]:
    """The model is right 90 % of the time; after ``shift_at`` it is right half the time (concept) and/or
    its feature moves by two deviations (data)."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        after = i >= shift_at
        x = rng.normal(2.0 if data and after else 0.0, 1.0)
        score = float(rng.random())
        right = rng.random() < (0.5 if concept and after else 0.9)
        label = float((score >= 0.5) == right)
        out += [_pred(i, score, x), _fb(i, label)]
    return out


def _check_schemas(emits) -> None:
    for e in emits:
        serde.encode(e.event_type, e.record)  # raises on an invalid record


def test_concept_drift_in_the_errors_is_one_drift_event_and_one_incident() -> None:
    events = _stream(6000, 3000, concept=True, data=False)
    out = run_local(drift.flow(), events)
    _check_schemas(out)
    drifts = [e.record for e in out if e.topic == "drift"]
    concept = [d for d in drifts if d["kind"] == "CONCEPT"]
    assert len(concept) >= 1 and all(d["feature"] is None for d in concept)
    first = concept[0]
    assert 1_000_000 + 3000 * 100 <= first["window_end"] <= 1_000_000 + 3600 * 100
    assert first["window_start"] < first["window_end"] and first["window_size"] > 0
    assert not [d for d in drifts if d["kind"] == "DATA"]  # the feature did not move
    alerts = [e for e in out if e.topic == "alerts"]
    assert alerts[0].record["status"] == "OPENED" and alerts[0].record["severity"] == "ERROR"
    assert {a.record["alert_key"] for a in alerts} == {alerts[0].key}
    assert alerts[0].record["details"]["drift_event_id"] == first["event_id"]
    again = run_local(drift.flow(), events)
    assert [e.record["event_id"] for e in again] == [e.record["event_id"] for e in out]


def test_data_drift_names_the_feature_and_resolves_once_quiet() -> None:
    events = _stream(9000, 4000, concept=False, data=True)
    out = run_local(drift.flow(resolve_after=3), events)
    _check_schemas(out)
    data = [e.record for e in out if e.topic == "drift" and e.record["kind"] == "DATA"]
    assert data and {d["feature"] for d in data} == {"x"}
    assert data[0]["statistic"] >= 0.25 and data[0]["window_end"] >= 1_000_000 + 4000 * 100
    assert data[0]["window_end"] - data[0]["window_start"] == (data[0]["window_size"] - 1) * 100
    statuses = [e.record["status"] for e in out if e.topic == "alerts" and e.record["details"]["subject"] == "x"]
    assert statuses[0] == "OPENED" and statuses[-1] == "RESOLVED"
    assert not [e for e in out if e.topic == "drift" and e.record["kind"] == "CONCEPT"]


def test_feedback_before_its_prediction_is_joined_and_strays_are_counted() -> None:
    proc = drift.DriftProcessor("m", max_wait_ms=10_000)
    proc.process([_fb(1, 1.0), _pred(1, 0.9, 0.0)])
    assert proc.errors_since == 1 and not proc.early and not proc.preds
    proc.process([_pred(2, 0.9, 0.0), _fb(3, 1.0)])
    proc.process([_pred(500, 0.9, 0.0)])  # 50 s later on the prediction side: the stray feedback gives up
    assert proc.unmatched == {"predictions": 0, "feedback": 1}
    proc.process([_fb(500, 0.0)])  # and now on the feedback side: the stray prediction too
    assert proc.unmatched == {"predictions": 1, "feedback": 1} and proc.errors_since == 2


def test_one_topic_far_ahead_of_the_other_in_event_time_still_joins() -> None:
    """Topics are read at their own pace: a whole day of feedback may come before its predictions."""
    proc = drift.DriftProcessor("m", max_wait_ms=1000)
    proc.process([_fb(i * 1000, 1.0) for i in range(50)])
    proc.process([_pred(i * 1000, 0.9, 0.0) for i in range(50)])
    assert proc.errors_since == 50 and proc.unmatched == {"predictions": 0, "feedback": 0}


def test_state_survives_a_snapshot_mid_stream() -> None:
    import pickle

    events = _stream(5000, 3000, concept=True, data=True, seed=1)
    whole = run_local(drift.flow(), events)
    procs: dict = {}
    first = run_local(drift.flow(), events[:4001], procs)
    procs = {k: pickle.loads(pickle.dumps(p)) for k, p in procs.items()}
    rest = run_local(drift.flow(), events[4001:], procs)
    assert [e.record["event_id"] for e in first + rest] == [e.record["event_id"] for e in whole]


def _click_prediction(i: int, **features: float) -> Event:
    from streams.flows.clicks import MODEL_NAME

    return Event("predictions", MODEL_NAME, {
        "event_id": f"c{i}", "event_time": 1_000_000 + i * 100, "producer": "t", "model_name": MODEL_NAME,
        "model_version": "1", "subject_id": "u", "item_id": "i", "features_digest": "d", "features": features,
        "score": 0.5, "label": None, "latency_ms": 1.0, "error": None})


def test_click_model_log_counts_that_grow_by_design_raise_no_data_drift() -> None:
    """Counts only go up: watched, they would leave any reference behind and alarm again and again."""
    from models.online import DRIFT_FEATURES

    rng = np.random.default_rng(2)
    events = [_click_prediction(i, item_log_count=np.log1p(i), user_log_count=np.log1p(i // 3),
                                item_rate=float(rng.normal()), bias=1.0) for i in range(8000)]
    out = run_local(drift.flow(reference_size=500, window_size=500, check_every=250), events)
    assert not [e for e in out if e.topic == "drift"]
    proc = drift.DriftProcessor(events[0].record["model_name"])
    assert proc.features == list(DRIFT_FEATURES) and "item_log_count" not in proc.features
    watching_all = run_local(drift.flow(features=["item_log_count"], reference_size=500, window_size=500,
                                        check_every=250), events)
    assert len([e for e in watching_all if e.topic == "drift"]) >= 3  # what the default spares the on-call


def test_drift_settings_choose_features_and_detector_for_the_flow(monkeypatch) -> None:
    monkeypatch.setenv("EDDYLINE_DRIFT_FEATURES", '["x"]')
    monkeypatch.setenv("EDDYLINE_DRIFT_DETECTOR", "adwin")
    monkeypatch.setenv("EDDYLINE_DRIFT_CHECK_EVERY", "7")
    proc = drift.flow().make_processor("m")
    assert proc.features == ["x"] and proc.detector_name == "adwin" and proc.check_every == 7
    assert drift.flow(check_every=9).make_processor("m").check_every == 9  # arguments win


@pytest.fixture
def no_config(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """Settings from the environment alone (an empty settings file); returns it for a test to write to."""
    config = tmp_path / "eddyline.toml"
    config.touch()  # a set EDDYLINE_CONFIG must name a file
    monkeypatch.setenv("EDDYLINE_CONFIG", str(config))
    return config


def test_drift_settle_reaches_every_ensemble_the_flow_makes(monkeypatch, no_config: Path) -> None:
    assert drift.flow().make_processor("m").detector.settle == 800
    no_config.write_text("[drift]\nsettle = 1600\n")
    spec = drift.flow()
    assert [spec.make_processor(m).detector.settle for m in ("a", "b")] == [1600, 1600]
    monkeypatch.setenv("EDDYLINE_DRIFT_SETTLE", "0")  # the environment wins over the file
    proc = drift.flow().make_processor("m")
    assert proc.detector.settle == 0 and proc.params()["detector_params"] == {"settle": 0}
    assert drift.flow(detector="adwin").make_processor("m").detector_params == {"settle": 0}  # every detector's


def test_drift_settle_0_alarms_during_the_warm_up_and_the_default_does_not(monkeypatch, no_config: Path) -> None:
    errors = _warming_up_then_rising_errors()
    settled = drift.flow().make_processor("m").detector.update(errors)
    assert len(settled) == 1 and settled[0] >= 4000
    monkeypatch.setenv("EDDYLINE_DRIFT_SETTLE", "0")
    assert any(i < 1000 for i in drift.flow().make_processor("m").detector.update(errors))


def _errors_as_events(errors: np.ndarray) -> list[Event]:
    """Predictions of 1 with a score of 0.9, and feedback that makes each one's error the given one."""
    return [e for i, err in enumerate(errors) for e in (_pred(i, 0.9, 0.0), _fb(i, 1.0 - float(err)))]


@pytest.mark.parametrize("detector", ["ours", "adwin", "page_hinkley"])
def test_an_alarm_inside_the_warm_up_counts_for_no_detector(detector: str, monkeypatch, no_config: Path) -> None:
    events = _errors_as_events(_warming_up_then_rising_errors())

    def concept_drifts_at() -> list[int]:
        out = run_local(drift.flow(detector=detector), events)
        return [(e.record["window_end"] - 1_000_050) // 100 for e in out
                if e.topic == "drift" and e.record["kind"] == "CONCEPT"]

    settled = concept_drifts_at()
    assert len(settled) == 1 and settled[0] >= 4000, settled  # only the real rise, after the warm-up
    monkeypatch.setenv("EDDYLINE_DRIFT_SETTLE", "0")
    assert any(i < 1000 for i in concept_drifts_at())  # without it the warm-up's rise is an alarm


@pytest.mark.parametrize("value", ["3", "-1", "soon"])
def test_an_unjudgeable_drift_settle_exits_2_saying_what_to_give(value: str, monkeypatch, no_config: Path) -> None:
    from streams.cli import app

    monkeypatch.setenv("EDDYLINE_DRIFT_SETTLE", value)
    monkeypatch.setenv("EDDYLINE_KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9")
    result = CliRunner().invoke(app, ["run", "drift"])
    assert result.exit_code == 2, result.output
    assert "[drift] settle or EDDYLINE_DRIFT_SETTLE" in result.output and "Traceback" not in result.output
    if value == "3":
        assert "give 0 (no warm-up) or 4 or more" in result.output


def test_drift_windows_span_event_time_even_when_inputs_arrive_out_of_order() -> None:
    """Clicks come from several partitions, so a model's predictions are not in event-time order."""
    events = _stream(9000, 4000, concept=True, data=True)
    preds = [e for e in events if e.topic == "predictions"]
    fbs = [e for e in events if e.topic == "feedback"]
    shuffled = []
    for i in range(0, len(preds), 1500):  # blocks, each reversed
        shuffled += preds[i:i + 1500][::-1] + fbs[i:i + 1500][::-1]
    out = [e.record for e in run_local(drift.flow(), shuffled) if e.topic == "drift"]
    assert {d["kind"] for d in out} == {"DATA", "CONCEPT"}
    assert all(d["window_start"] <= d["window_end"] for d in out)


def test_a_feature_value_that_is_not_finite_is_counted_and_kept_out_of_data_drift() -> None:
    """Validation refuses it; past validation (run_local), one NaN in the reference sample blinded the feature."""
    events = _stream(4000, 2000, concept=False, data=True)
    events[10].record["features"]["x"] = float("nan")
    proc = drift.DriftProcessor("m", reference_size=1000, window_size=500, check_every=250)
    out = proc.process(events)
    assert [e.record["feature"] for e in out if e.topic == "drift"][:1] == ["x"] and proc.bad_values == 1


def test_predictions_without_any_feedback_stay_bounded() -> None:
    """A model without ground truth: after stall_after predictions in a row, waiting ones give up on feedback."""
    proc = drift.DriftProcessor("m", max_wait_ms=10_000, stall_after=300)
    sizes = []
    for block in range(10):
        proc.process([_pred(block * 1000 + i, 0.9, 0.0) for i in range(1000)])  # 100 s of predictions a block
        sizes.append(len(proc.preds))
    assert max(sizes[1:]) <= 101 and proc.unmatched["predictions"] == 10_000 - len(proc.preds)
    proc.process([_fb(9999, 1.0)])  # feedback after all: the latest prediction still joins
    assert proc.errors_since == 1


def test_replayed_predictions_and_feedback_join_once() -> None:
    events = _stream(300, 10_000, concept=False, data=False)
    proc = drift.DriftProcessor("m", max_wait_ms=10_000, check_every=1000)
    proc.process(events + events[400:] + events[:100])  # the last hundred, then the first fifty, again
    assert proc.errors_since == 300 and proc.unmatched == {"predictions": 0, "feedback": 0}
    assert proc.duplicates == {"predictions": 150, "feedback": 150} and not proc.preds and not proc.early
    assert proc.seen["x"] == 300  # the monitors saw each prediction once
    proc.process([_pred(1000, 0.9, 0.0), _fb(1000, 1.0)])  # 70 s on: the first joins need not be remembered
    assert list(proc.joined.entries) == ["p1000"]


def test_drift_state_from_before_stalls_and_repeats_restores() -> None:
    from streams.state import decode, encode

    proc = drift.DriftProcessor("m", max_wait_ms=10_000)
    proc.process(_stream(50, 1000, concept=False, data=False) + [_pred(60, 0.9, 0.0)])
    old = {k: v for k, v in decode(encode(proc.snapshot())).items()
           if k not in ("unanswered_run", "stalled_at", "joined", "duplicates", "bad_values")}
    restored = drift.DriftProcessor("m", max_wait_ms=10_000)
    restored.restore(old)
    assert not restored.joined and restored.duplicates == {"predictions": 0, "feedback": 0}
    restored.process([_fb(60, 1.0)])
    assert restored.errors_since == 51 and "p60" in restored.joined


def test_drift_settings_bound_the_waiting_predictions(monkeypatch) -> None:
    monkeypatch.setenv("EDDYLINE_DRIFT_STALL_AFTER", "123")
    assert drift.flow().make_processor("m").stall_after == 123


def test_a_model_with_sparse_features_watches_a_bounded_number_of_them() -> None:
    """One-hot or id-like feature names: a monitor (and its state) per name would grow with the stream."""
    proc = drift.DriftProcessor("m")
    events = []
    for i in range(drift.MAX_MONITORED + 50):
        ev = _pred(i, 0.5, 0.1)
        ev.record["features"] = {f"item={i}": 1.0, "x": 0.1}
        events.append(ev)
    proc.process(events)
    assert len(proc.monitors) == drift.MAX_MONITORED and "x" in proc.monitors
    assert proc.unmonitored == 51  # names seen after the bound, one value each (x is watched from the first)
    again = drift.DriftProcessor("m")
    again.restore(proc.snapshot())
    assert again.unmonitored == 51 and len(again.monitors) == drift.MAX_MONITORED


@pytest.mark.parametrize("waiting", [500, 5000])
def test_a_batch_looks_at_what_it_joins_or_expires_not_at_every_waiting_id(waiting: int) -> None:
    """Predictions and feedback waiting within the wait, and joined ids kept for repeats, are many at a high rate:
    the work of a batch that joins one pair and expires nothing must not grow with them."""
    proc = drift.DriftProcessor("m", max_wait_ms=10**10, check_every=10**6)  # nothing expires
    proc.process([e for i in range(waiting) for e in (_pred(i, 0.9, 0.0), _fb(i, 1.0))])  # joined
    proc.process([_pred(10**6 + i, 0.9, 0.0) for i in range(waiting)])  # waiting for their feedback
    proc.process([_fb(2 * 10**6 + i, 1.0) for i in range(waiting)])  # waiting for their predictions
    for waiting_ids in (proc.preds, proc.early, proc.joined):
        waiting_ids.entries = CountingDict(waiting_ids.entries)
    CountingDict.looked = 0
    for i in range(3 * 10**6, 3 * 10**6 + 100):
        proc.process([_pred(i, 0.9, 0.0), _fb(i, 1.0)])
    assert CountingDict.looked / 100 <= 10  # a handful of look-ups per event, whatever waits
    assert proc.unmatched == {"predictions": 0, "feedback": 0} and len(proc.joined) == waiting + 100
