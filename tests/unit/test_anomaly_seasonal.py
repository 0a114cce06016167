"""The seasonal detector sees incidents that are only wrong for the time of day, and learns routine spikes."""

from __future__ import annotations

import numpy as np

from models.anomaly import make_detector

STEP_MS = 300_000  # NAB's 5-minute sampling
DAY = 288


def _daily(days: int, seed: int = 5) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    idx = np.arange(days * DAY)
    t = 1_400_000_000_000 - 1_400_000_000_000 % 86_400_000 + idx.astype(np.int64) * STEP_MS
    busy = (idx % DAY >= 96) & (idx % DAY < 216)  # 08:00-18:00
    v = np.where(busy, 80.0, 20.0) + rng.normal(0, 2.0, idx.size)
    return v, t


def test_a_missing_busy_period_is_caught_only_with_time_of_day_context() -> None:
    v, t = _daily(14)
    day = 11 * DAY
    v[day + 96 : day + 216] = 20.0 + np.random.default_rng(1).normal(0, 2.0, 120)  # the day stays quiet
    seasonal, robust = make_detector("seasonal"), make_detector("robust")
    s, r = seasonal.score_learn(v, t), robust.score_learn(v, t)
    incident = slice(day + 96, day + 216)
    assert s[incident].max() >= seasonal.threshold
    assert r[incident].max() < robust.threshold  # every value is ordinary for the series as a whole
    before = slice(3 * DAY, day)  # a few alarms while the seasonal history is short, not one per transition
    assert (s[before] >= seasonal.threshold).sum() <= 5


def test_a_spike_at_the_same_time_every_day_stops_alarming() -> None:
    v, t = _daily(10)
    at = [d * DAY + 30 for d in range(10)]  # a nightly job at 02:30
    v[at] += 200.0
    det = make_detector("seasonal")
    s = det.score_learn(v, t)
    alarms = [i for i in at if s[i] >= det.threshold]
    assert alarms and all(i < 3 * DAY for i in alarms), alarms
