"""The seasonal detector sees incidents that are only wrong for the time of day, and learns routine spikes."""

from __future__ import annotations

import numpy as np

from models.anomaly import make_detector
from models.anomaly.seasonal import SeasonalDetector

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


def test_a_reconnect_burst_at_the_start_does_not_set_the_sampling_step() -> None:
    """The first readings of a series arrive a second apart (a device flushing its buffer), then every 5
    minutes: the step is the rate the vote settles on, so the daily and weekly tables exist and a quiet day is
    still caught."""
    v, t = _daily(14)
    t[1:6] = t[0] + np.arange(1, 6) * 1_000
    day = 11 * DAY
    v[day + 96 : day + 216] = 20.0 + np.random.default_rng(1).normal(0, 2.0, 120)
    det = make_detector("seasonal")
    s = det.score_learn(v, t)
    assert [det._views()[b].shape for b in ("slot_mean", "slot_mean2")] == [(DAY,), (7 * DAY,)]
    assert s[day + 96 : day + 216].max() >= det.threshold


def _noise(n: int, seed: int = 2) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return np.round(50.0 + rng.normal(0.0, 2.0, n), 3), np.arange(n, dtype=np.int64) * 1_000  # no cycle


def test_a_stuck_sensor_alarms_when_its_run_reaches_stuck_readings() -> None:
    v, t = _noise(3000)
    v[1999:2200] = 50.0  # stuck at the series' mean: an ordinary value
    det, off = make_detector("seasonal", stuck=16), make_detector("seasonal")
    s, s_off = det.score_learn(v, t), off.score_learn(v, t)
    alarms = np.flatnonzero(s[2000:2200] >= det.threshold)
    assert alarms.size and alarms[0] == det.stuck - 2  # the stuck-th reading of the run (reading 1999 starts it)
    assert s_off[2000:2200].max() < off.threshold  # nothing else sees it: every value is ordinary


def test_runs_the_series_makes_routinely_are_not_alarms() -> None:
    """A sensor that holds a value for 30 readings every 100 (a duty cycle) learns those runs in its warm-up:
    a run must be longer than any before it to alarm."""
    v, t = _noise(3000)
    for start in range(50, 3000, 100):
        v[start : start + 30] = v[start]
    without = make_detector("seasonal").score_learn(v, t)
    np.testing.assert_array_equal(make_detector("seasonal", stuck=16).score_learn(v, t), without)
    v[2500:2600] = v[2500]  # held three times as long as ever before
    assert make_detector("seasonal", stuck=16).score_learn(v, t)[2500:2600].max() >= 0.999


def test_stuck_must_fit_the_window() -> None:
    import pytest

    with pytest.raises(ValueError, match="stuck"):
        make_detector("seasonal", stuck=100)


def test_a_request_counter_s_routine_bursts_do_not_alarm_but_an_outage_or_a_4x_rate_does() -> None:
    """Counts (non-negative whole numbers, Poisson-like noise) are judged in Anscombe's view by the median of the
    last readings: a burst of a few readings is routine, however tall; zeros for 3 hours or 4x the rate for 4
    hours move that median and alarm within ``COUNT_RECENT`` readings. Without the count view (``counts=0``)
    the tallest bursts alarm."""
    from models.anomaly.seasonal import COUNT_RECENT
    from tests.data.anomaly.make_seasonal_s6_snapshots import bursty

    rate, burst, t, rng = bursty(14 * DAY, seed=0)
    v = rng.poisson(rate * burst).astype(np.float64)
    on, off = make_detector("seasonal"), make_detector("seasonal", counts=0)
    routine_on = (on.score_learn(v, t)[2 * DAY :] >= on.threshold).sum()
    routine_off = (off.score_learn(v, t)[2 * DAY :] >= off.threshold).sum()
    assert routine_on <= 3 and routine_off >= 2 * routine_on + 3, (routine_on, routine_off)
    at = 10 * DAY + 100
    outage, faster = rate.copy(), burst.copy()
    outage[at : at + 36] = 0.0
    faster[at : at + 48] = 4.0
    for r, b in ((outage, burst), (rate, faster)):
        det = make_detector("seasonal")
        s = det.score_learn(rng.poisson(r * b).astype(np.float64), t)
        assert s[at : at + COUNT_RECENT].max() >= det.threshold


def test_the_in_place_median_is_numpy_s() -> None:
    """The count view selects medians in place every reading; they must be ``np.median``'s to the last bit."""
    from models.anomaly._steps import middle

    rng = np.random.default_rng(3)
    for n in [*range(1, 70), 64, 64, 15, 15]:
        for a in (rng.poisson(rng.uniform(0.3, 40), n).astype(np.float64), rng.normal(size=n), np.full(n, 2.0)):
            assert middle(a.copy(), n) == np.median(a), a


def test_one_glitch_near_the_float_limit_does_not_blind_the_cycle_for_good() -> None:
    """A reading whose squared error overflows (1e160, a sensor's DBL_MAX sentinel) made the seasonal error averages
    inf and then NaN for good: the daily table never spoke again, and a missing busy period went unseen."""
    from models.anomaly.seasonal import STATE

    for glitch in (1e160, 1.7976931348623157e308):
        v, t = _daily(14)
        v[5 * DAY + 100] = glitch
        day = 11 * DAY
        v[day + 96 : day + 216] = 20.0 + np.random.default_rng(1).normal(0, 2.0, 120)
        det = make_detector("seasonal")
        s = det.score_learn(v, t)
        assert np.isfinite(det._s[[STATE.glob_err, STATE.seas_err, STATE.res_var, STATE.seas_err2, STATE.res_var2]]).all()
        assert np.isfinite(det._views(["slot_mean", "slot_mean2"])["slot_mean"]).all()
        assert s[day + 96 : day + 216].max() >= det.threshold


def test_one_glitch_near_the_float_limit_does_not_raise_the_spike_bar_for_good() -> None:
    """The spike rule alarms on spikes larger than the largest recent one, a memory that decays by spike_decay per
    reading. A glitch (1e300, DBL_MAX) is a robust z of 1e301 or infinite: the bar stayed above every later spike
    for years, or (infinite) for good, and a plain 100-sigma spike 3 weeks later went unseen."""
    from models.anomaly.seasonal import STATE

    for glitch in (1e300, 1.7976931348623157e308):
        v, t = _daily(42)
        v[7 * DAY] = glitch
        spike = 28 * DAY + 150
        v[spike] = 80.0 + 200.0
        det = make_detector("seasonal")
        s = det.score_learn(v, t)
        assert s[7 * DAY] >= det.threshold and s[spike] >= det.threshold, glitch
        assert det._s[STATE.zmax] < 100.0
    cut = 8 * DAY  # a state saved blinded (infinite), before the cap, heals once restored
    blinded = make_detector("seasonal")
    blinded.score_learn(v[:cut], t[:cut])
    state = blinded.snapshot()
    scalars = np.frombuffer(state["scalars"], "<f8").copy()
    scalars[STATE.zmax] = np.inf
    restored = make_detector("seasonal")
    restored.restore({**state, "scalars": scalars.tobytes()})
    assert restored.score_learn(v[cut:], t[cut:])[spike - cut] >= restored.threshold


def test_a_spike_stamped_ahead_by_a_clock_glitch_does_not_make_that_hour_s_spikes_routine() -> None:
    """Spikes within spike_recall periods of one at the same time of day are routine. A garbage reading stamped a
    century ahead (a power glitch resets the clock) was remembered there, and ``ts - last`` stayed negative: every
    later spike at that hour was 'routine' until 2114."""
    v, t = _daily(30)
    glitch, real = 10 * DAY + 150, 25 * DAY + 150  # both at 12:30
    v[glitch], t[glitch] = 900.0, t[glitch] + 36_525 * 86_400_000
    v[real] = 300.0
    det = make_detector("seasonal")
    s = np.concatenate([det.score_learn(v[i : i + 50], t[i : i + 50]) for i in range(0, v.size, 50)])
    assert s[real] >= det.threshold
