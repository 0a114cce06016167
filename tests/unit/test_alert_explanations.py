"""Every sensor alert says why it fired: one constructed series per rule, through the real flow and detector.

Each series is noise around a known signal with one incident injected at a known reading. The first alert
that opens or escalates at or after that reading must name the rule, expect what the signal was (within a
stated tolerance: a third of the noise's sigma for a robust median, one sigma for a daily slot's mean,
which averages a handful of past days) and draw a band of about 3 sigmas (10 for a spike, the rule's own
limit). Explaining must never change a score: scores are compared bit for bit with and without it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from connectors.alert_explanation import explanation_text
from models.anomaly import DETECTORS, make_detector
from models.anomaly.explain import RULES, score_explained
from schemas import ALERT, AvroSerde
from streams.flows.sensor_anomaly import SensorAnomalyProcessor
from streams.processor import Event

DAY_MS = 86_400_000
STEP_5MIN = 300_000
SIGMA = 1.0
BATCH = 48


def alerts_after(values: np.ndarray, stamps: np.ndarray, start: int, detector: str = "seasonal") -> list[dict]:
    """Run the series through the sensor flow in batches; the alerts that opened or escalated from ``start`` on."""
    proc = SensorAnomalyProcessor("dev-1", detector)
    serde = AvroSerde()
    out = []
    for b in range(0, values.size, BATCH):
        rec = {"event_id": f"batch-{b}", "event_time": int(stamps[b]), "device_id": "dev-1",
               "series": [{"sensor": "temp", "values": values[b : b + BATCH].tolist(),
                           "timestamps": stamps[b : b + BATCH].tolist()}]}
        for emit in proc.process([Event("sensor.readings", "dev-1", rec)]):
            rec_out = emit.record
            if emit.topic == "alerts" and rec_out["status"] != "RESOLVED" and rec_out["event_time"] >= stamps[start]:
                decoded = serde.decode(serde.encode(ALERT, rec_out), ALERT)
                assert decoded == rec_out  # the v2 alert round-trips with its explanation
                out.append(decoded)
    return out


def first_explanation(values: np.ndarray, stamps: np.ndarray, start: int, detector: str = "seasonal") -> dict:
    """The explanation of the first alert from ``start`` on, with ``at``: the index of the reading it is about."""
    alerts = alerts_after(values, stamps, start, detector)
    assert alerts, "the injected incident raised no alert"
    alert = alerts[0]
    assert alert["explanation"] is not None, alert
    assert alert["explanation"]["context"][-1] == alert["value"]
    assert explanation_text(alert["explanation"]) in alert_text(alert)
    return {**alert["explanation"], "at": int(np.searchsorted(stamps, alert["event_time"]))}


def alert_text(alert: dict) -> str:
    from connectors.pagerduty import pagerduty_event
    from connectors.slack import slack_message

    pd = pagerduty_event(alert, "0123456789abcdef0123456789abcdef")["payload"]["custom_details"]
    assert pd["explanation"]["rule"] == alert["explanation"]["rule"]
    slack = " ".join(b["text"]["text"] for b in slack_message(alert)["blocks"] if b["type"] == "section")
    assert explanation_text(alert["explanation"]).replace("&", "&amp;") in slack
    return pd["why"]


def daily(days: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A daily sine of amplitude 10 sampled every 5 minutes, its noisy readings and their times."""
    stamps = np.arange(days * DAY_MS // STEP_5MIN, dtype=np.int64) * STEP_5MIN
    cycle = 10.0 * np.sin(2 * np.pi * (stamps % DAY_MS) / DAY_MS)
    return cycle, cycle + np.random.default_rng(seed).normal(0.0, SIGMA, stamps.size), stamps


def half_width(e: dict) -> float:
    assert e["lower"] < e["expected"] < e["upper"]
    assert e["upper"] - e["expected"] == pytest.approx(e["expected"] - e["lower"])
    return e["upper"] - e["expected"]


def test_a_spike_names_spike_with_the_recent_median_and_the_ten_sigma_band() -> None:
    rng = np.random.default_rng(3)
    values, stamps = rng.normal(0.0, SIGMA, 2000), np.arange(2000, dtype=np.int64) * 1000
    values[1500] = 15.0
    e = first_explanation(values, stamps, 1500)
    assert e["rule"] == "spike"
    assert abs(e["expected"]) <= SIGMA / 3
    assert 10 * 0.8 * SIGMA <= half_width(e) <= 10 * 1.25 * SIGMA  # the MAD sigma is within 25% of the true one
    assert e["deviation"] >= 10.0


def test_a_level_shift_names_level_shift_with_the_old_level() -> None:
    rng = np.random.default_rng(1)
    # a wide first stretch so that the shifted readings stay inside the range seen (no novelty, no spike)
    values = np.r_[rng.normal(0.0, 3.0, 300), rng.normal(0.0, SIGMA, 1700), rng.normal(3.5, SIGMA, 300)]
    stamps = np.arange(values.size, dtype=np.int64) * 1000
    e = first_explanation(values, stamps, 2000)
    assert e["rule"] == "level_shift"
    assert abs(e["expected"]) <= 0.5 * SIGMA  # the window's median: still mostly the old level
    assert 3 * 0.8 * SIGMA <= half_width(e) <= 3 * 1.5 * SIGMA  # MAD of a window holding a few shifted readings


def test_a_broken_daily_cycle_names_seasonal_break_with_the_slot_expectation() -> None:
    cycle, values, stamps = daily(14, seed=1)
    start = 288 * 12 + 100  # the cycle stops: noise around the daily mean from here on
    values[start:] = np.random.default_rng(2).normal(0.0, SIGMA, values.size - start)
    e = first_explanation(values, stamps, start)
    assert e["rule"] == "seasonal_break"
    assert abs(e["expected"] - cycle[e["at"]]) <= SIGMA
    assert 3 * 0.8 * SIGMA <= half_width(e) <= 3 * 1.5 * SIGMA  # the slot residual's sigma (noise + slot error)


def test_a_flat_line_names_flat_line_with_what_the_cycle_would_read() -> None:
    cycle, values, stamps = daily(14, seed=1)
    start = 288 * 12 + 100  # the sensor sticks at its last reading
    values[start:] = values[start]
    e = first_explanation(values, stamps, start)
    assert e["rule"] == "flat_line"
    assert len(set(e["context"][-8:])) == 1
    assert abs(e["expected"] - cycle[e["at"]]) <= SIGMA  # what the cycle reads at that moment, not the stuck value
    assert 3 * 0.8 * SIGMA <= half_width(e) <= 3 * 1.5 * SIGMA


def test_a_reading_beyond_the_range_names_novelty_with_that_range_as_band() -> None:
    rng = np.random.default_rng(5)
    values, stamps = rng.normal(0.0, SIGMA, 2000), np.arange(2000, dtype=np.int64) * 1000
    seen_lo, seen_hi = values[:1500].min(), values[:1500].max()
    values[1500] = seen_hi + 2.5  # beyond the range, but under the ten robust sigmas of a spike
    e = first_explanation(values, stamps, 1500, detector="robust")
    assert e["rule"] == "novelty"
    tol = 0.02 * (seen_hi - seen_lo)
    assert e["lower"] == pytest.approx(seen_lo - tol) and e["upper"] == pytest.approx(seen_hi + tol)


def test_rules_are_the_schema_symbols() -> None:
    from schemas import catalog

    schema = catalog.latest(ALERT).schema
    field = next(f for f in schema["fields"] if f["name"] == "explanation")
    assert tuple(field["type"][1]["fields"][0]["type"]["symbols"]) == RULES


def mixed_series(seed: int) -> tuple[np.ndarray, np.ndarray]:
    cycle, values, stamps = daily(9, seed)
    values[1500] += 40.0
    values[2000:2100] += 6.0
    values[2400:2500] = values[2400]
    return values, stamps


@pytest.mark.parametrize("name", sorted(set(DETECTORS) - {"hst", "hst-river"}))
def test_explaining_never_changes_a_score(name: str) -> None:
    values, stamps = mixed_series(seed=7)
    plain, explained = make_detector(name), make_detector(name)
    a, b, asked = [], [], 0
    for lo, hi in zip([0, 5, 400, 401, 1999, 2450], [5, 400, 401, 1999, 2450, values.size]):
        a.append(plain.score_learn(values[lo:hi], stamps[lo:hi]))
        scores, why = score_explained(explained, values[lo:hi], stamps[lo:hi])
        for i in np.flatnonzero(scores >= explained.threshold)[::-1]:  # backwards: each ask replays afresh
            assert why.at(int(i)).rule in RULES
            asked += 1
        b.append(scores)
    assert asked > 0
    assert np.concatenate(a).tobytes() == np.concatenate(b).tobytes()
    assert plain.snapshot() == explained.snapshot()


NAB_DIR = Path(__file__).resolve().parents[3] / "shared" / "data" / "nab"


def test_nab_scores_are_bit_identical_with_explanations() -> None:
    """The NAB benchmark scores with ``score_learn``; the flow's explained path gives the very same scores."""
    files = sorted((NAB_DIR / "data").glob("*/*.csv"))[:6] if NAB_DIR.is_dir() else []
    if not files:
        pytest.skip("NAB data not present")
    import pandas as pd

    for path in files:
        frame = pd.read_csv(path)
        values = frame["value"].to_numpy(np.float64)
        stamps = pd.to_datetime(frame["timestamp"]).to_numpy("datetime64[ms]").astype(np.int64)
        plain, explained = make_detector("seasonal"), make_detector("seasonal")
        want = plain.score_learn(values, stamps)
        got = []
        for lo in range(0, values.size, 100):
            scores, why = score_explained(explained, values[lo : lo + 100], stamps[lo : lo + 100])
            for i in np.flatnonzero(scores >= explained.threshold):
                why.at(int(i))
            got.append(scores)
        assert np.concatenate(got).tobytes() == want.tobytes(), path.name


def test_an_alert_without_explanation_renders_as_before() -> None:
    """v1 records and alerts of other flows carry no explanation: no "why" anywhere, nothing invented."""
    from connectors.pagerduty import pagerduty_event
    from connectors.slack import slack_message

    alert = {"alert_key": "k", "status": "OPENED", "severity": "ERROR", "summary": "s", "entity": "e",
             "source": "drift", "explanation": None}
    assert "why" not in pagerduty_event(alert, "0123456789abcdef0123456789abcdef")["payload"]["custom_details"]
    assert not any("Why" in str(b) for b in slack_message(alert)["blocks"])
    assert explanation_text(None) == ""


def test_the_explainer_median_is_numpy_median_to_the_bit() -> None:
    """Explanations take medians of the recent window on every alert; the short path must give numpy's value."""
    from models.anomaly.explain import _median

    rng = np.random.default_rng(5)
    for n in [*range(1, 130), 257, 1000]:
        for scale, shift in [(1e-6, 0.0), (1.0, 1e9), (1e6, -3.0)]:
            x = rng.normal(size=n) * scale + shift
            x[rng.random(n) < 0.3] = x[0]  # ties
            assert _median(x) == float(np.median(x))
            assert _median(np.abs(x - _median(x))) == float(np.median(np.abs(x - np.median(x))))


@pytest.mark.parametrize("name", ["robust", "seasonal"])
def test_the_explainer_window_is_the_ring_rolled_oldest_first(name: str) -> None:
    """The recent-readings ring unrolled by slicing must be ``np.roll``'s array, before and after it wraps."""
    from models.anomaly.explain import _window

    det = make_detector(name)
    ring = det._views(["window"])["window"]
    rng = np.random.default_rng(3)
    seen = 0
    for size in [1, 5, ring.shape[0] - 6, 1, ring.shape[0], 7, 3 * ring.shape[0] + 1]:
        det.score_learn(rng.normal(size=size), np.arange(seen, seen + size) * 1000)
        seen += size
        ring = det._views(["window"])["window"]
        expected = ring[:seen].copy() if seen < ring.shape[0] else np.roll(ring, -(seen % ring.shape[0]))
        assert np.array_equal(_window(det, seen), expected)
        assert _window(det, seen)[-1] == ring[(seen - 1) % ring.shape[0]]


@pytest.mark.parametrize("name", ["gauss", "likelihood", "robust", "seasonal"])
@pytest.mark.parametrize("scale", [1e300, 1e308])
def test_explanations_near_the_float_limit_stay_finite(name: str, scale: float) -> None:
    """A sensor reading near the float limit (a level step to it, or noise at that scale) overflowed the band, the
    deviation or the window's median to inf or NaN, which an alert's summary printed and JSON cannot carry."""
    rng = np.random.default_rng(2)
    stamps = np.arange(3000, dtype=np.int64) * 300_000
    explained = 0
    for values in (np.r_[np.full(500, -scale), np.full(2500, scale)], np.r_[np.zeros(1000), np.full(2000, scale)],
                   scale * np.clip(rng.normal(size=3000), -1.7, 1.7)):
        det = make_detector(name)
        scores, why = score_explained(det, values, stamps)
        for i in np.flatnonzero(scores >= det.threshold)[:20]:
            e = why.at(int(i)).as_record()
            assert all(np.isfinite([e["expected"], e["lower"], e["upper"], e["deviation"], *e["context"]])), e
            assert e["lower"] <= e["upper"]
            explained += 1
    assert explained
