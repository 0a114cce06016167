"""The variants of issue 14 (benchmarks/nab_variants.py): patched from seasonal.py, identical to it when off."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from benchmarks import nab_variants
from models.anomaly.seasonal import SeasonalDetector
from models.evaluation import nab

STANDARD = nab.CostMatrix(tp=1.0, fp=0.11, fn=1.0)


def _daily_series() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(1)
    ts = np.arange(5000) * 300_000
    v = 10 * np.sin(2 * np.pi * ts / 86_400_000) + rng.normal(0, 1, ts.size)
    v[3000] += 30
    v[4000:4100] += 8
    return v, ts


@pytest.fixture(scope="module")
def variant(tmp_path_factory: pytest.TempPathFactory) -> type:
    return nab_variants.variant_class(tmp_path_factory.mktemp("variants"))


def test_switched_off_the_variant_is_seasonal_bit_for_bit(variant: type) -> None:
    v, ts = _daily_series()
    expected = SeasonalDetector().score_learn(v, ts)
    np.testing.assert_array_equal(variant().score_learn(v, ts), expected)
    # Each switch is really wired in: confirming the cycle first changes the scores of a cyclic series.
    assert not np.array_equal(variant(confirm=1.0).score_learn(v, ts), expected)
    assert not np.array_equal(variant(ar=0.5).score_learn(v, ts), expected)  # round 6: the AR(1) predictor
    for switch in ({"daytype": 1}, {"slot_ms": 600_000.0}, {"wins": 3.0}, {"nov_z": 3.0}):  # round 8's prototypes
        assert not np.array_equal(variant(**switch).score_learn(v, ts), expected), switch
    # round 6: the Bonferroni correction acts only where seasonal's own ratio_max lets both scores speak
    both = variant(ratio_max=1.0).score_learn(v, ts)
    np.testing.assert_array_equal(variant(bonf=1.0).score_learn(v, ts), expected)
    assert not np.array_equal(variant(ratio_max=1.0, bonf=1.0).score_learn(v, ts), both)


def test_a_patch_whose_anchor_is_gone_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(nab_variants.PATCHES, "stale", [("text that seasonal.py does not contain", "")])
    with pytest.raises(ValueError, match="anchor found 0 times"):
        nab_variants.patched_source()


def test_the_vote_keeps_the_defaults_unless_another_candidate_wins_enough_categories() -> None:
    n, win = 2000, (1000, 1099)
    stamps = np.datetime64("2020-01-01T00:00") + np.arange(n) * np.timedelta64(5, "m")
    files = ["a/1.csv", "b/1.csv", "c/1.csv", "d/1.csv"]
    windows = {f: [(stamps[win[0]], stamps[win[1]])] for f in files}

    def detects(hit: set[str]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        out = {}
        for f in files:
            s = np.zeros(n)
            s[win[0] if f in hit else 1500] = 1.0
            out[f] = (stamps, s)
        return out

    # 'other' beats the defaults on a and b only: in the fold holding d out it wins 2 of the 3 training categories.
    cands = {"defaults": detects({"c/1.csv", "d/1.csv"}), "other": detects({"a/1.csv", "b/1.csv", "c/1.csv"})}
    strict = {f.held_out: f.candidate for f in nab_variants.select_by_vote(cands, windows, STANDARD, 3)}
    loose = {f.held_out: f.candidate for f in nab_variants.select_by_vote(cands, windows, STANDARD, 2)}
    assert strict == {"a": "defaults", "b": "defaults", "c": "defaults", "d": "defaults"}
    assert loose["d"] == "other" and loose["a"] == "defaults"
    # Nested: holding d out, a CV over a, b and c finds 'other' better on held-out categories there.
    nested = {f.held_out: f for f in nab_variants.select_nested(cands, windows, STANDARD)}
    assert nested["d"].candidate == "other" and nested["d"].score < 0.0  # which misses d's window


def test_round_8_novelty_memory_in_time_quiets_a_trend_s_daily_records_but_misses_a_young_series_spike(
        variant: type) -> None:
    """Round 8's idea (``nov_ms``, not the default): a series that trends upward sets a record at every daily peak;
    with the novelty rate decaying per reading (about 8 hours at 5-minute readings) each peak is news again,
    decaying over 1.5 days a record a day is routine, and a jump far beyond the range after days without records
    still alarms. Why it is not the default: a young 1-minute series that explored its range in its first hours
    keeps the memory busy for days, so an obvious spike beyond the range goes unflagged."""
    rng = np.random.default_rng(4)
    ts = np.arange(12 * 288) * 300_000
    v = 10 * np.sin(2 * np.pi * ts / 86_400_000) + np.linspace(0.0, 15.0, ts.size) + rng.normal(0, 1, ts.size)
    v[9 * 288 :] = v[9 * 288 - 288 : 9 * 288].mean() + rng.normal(0, 1, 3 * 288)  # the trend stops, quiet
    jump = 11 * 288 + 100
    v[jump] = v.max() + 40.0
    record = np.r_[False, v[1:] > np.maximum.accumulate(v)[:-1]]
    base, timed = variant(), variant(nov_ms=1.5 * 86_400_000)
    s_base, s_timed = base.score_learn(v, ts), timed.score_learn(v, ts)
    trend = slice(3 * 288, 9 * 288)
    assert (record[trend] & (s_base[trend] >= 0.999)).sum() >= 3
    assert (record[trend] & (s_timed[trend] >= 0.999)).sum() < (record[trend] & (s_base[trend] >= 0.999)).sum()
    assert s_timed[jump] >= 0.999 and s_base[jump] >= 0.999
    # test_anomaly_conformance's series: 15 hours of 1-minute readings, a cycle of 2.4 hours, a +8 spike at 450
    rng = np.random.default_rng(7)
    t = np.arange(900, dtype=np.int64) * 60_000 + 1_700_000_000_000
    y = 10 + 3 * np.sin(np.arange(900) * 2 * np.pi / 144) + rng.normal(0, 0.3, 900)
    y[450:455] += 8.0
    assert variant().score_learn(y, t)[450] >= 0.999 > variant(nov_ms=1.5 * 86_400_000).score_learn(y, t)[450]
    # ``nov_young``: the memory in time only once the series has lived it; younger, the detector is the default's
    np.testing.assert_array_equal(variant(nov_ms=1.5 * 86_400_000, nov_young=1).score_learn(y, t),
                                  variant().score_learn(y, t))



def test_round_9_far_novelty_and_a_memory_in_readings_keep_the_young_spike_and_the_quiet_trend(variant: type) -> None:
    """Round 9's repair of ``nov_ms``: a record far beyond the range (``nov_far`` of its width) alarms even while
    the rate mutes novelty, and the memory is also at most ``nov_n`` readings. The young 1-minute series' spike
    (test_anomaly_conformance) is flagged again; the trend's daily records stay as quiet as with ``nov_ms`` alone."""
    day = 86_400_000
    rng = np.random.default_rng(7)
    t = np.arange(900, dtype=np.int64) * 60_000 + 1_700_000_000_000
    y = 10 + 3 * np.sin(np.arange(900) * 2 * np.pi / 144) + rng.normal(0, 0.3, 900)
    y[450:455] += 8.0
    repaired = {"nov_ms": 1.5 * day, "nov_n": 432, "nov_far": 0.25}
    assert variant(nov_ms=1.5 * day).score_learn(y, t)[450] < 0.999 <= variant(**repaired).score_learn(y, t)[450]
    assert variant(nov_ms=1.5 * day, nov_n=432).score_learn(y, t)[450] < 0.999  # the cap alone is not enough here
    # a trend's daily records: each extends the range a little, so neither new rule speaks for them
    rng = np.random.default_rng(4)
    ts = np.arange(9 * 288) * 300_000
    v = 10 * np.sin(2 * np.pi * ts / day) + np.linspace(0.0, 15.0, ts.size) + rng.normal(0, 1, ts.size)
    np.testing.assert_array_equal(variant(**repaired).score_learn(v, ts), variant(nov_ms=1.5 * day).score_learn(v, ts))
    # off (0), each new parameter leaves nov_ms as it was
    np.testing.assert_array_equal(variant(nov_ms=1.5 * day, nov_n=0, nov_far=0, nov_age=0, nov_chance=0).score_learn(y, t),
                                  variant(nov_ms=1.5 * day).score_learn(y, t))
    # the age and chance repairs measured in round 9: the young spike is flagged with them too
    for young in ({"nov_age": 0.2}, {"nov_chance": 1.0}):
        assert variant(nov_ms=1.5 * day, **young).score_learn(y, t)[450] >= 0.999, young


def test_round_10_phase_in_the_slot_moves_the_expectation_only_for_readings_off_the_usual_place(variant: type) -> None:
    """Round 10's ``phase``: a regularly sampled series always falls at the same place in its slots, so it scores
    bit for bit as without it; a series sampled at random places in each 5-minute slot of a steep daily cycle is
    predicted better (a lower recent squared error of the seasonal model) when the expectation follows the slope."""
    import sys

    v, ts = _daily_series()
    ts = ts + 120_000  # not at the slots' start: still the same place every time
    expected = SeasonalDetector().score_learn(v, ts)
    for on in ({"phase": 1.0}, {"phase_var": 1.0}, {"phase": 1.0, "phase_var": 1.0}):
        np.testing.assert_array_equal(variant(**on).score_learn(v, ts), expected)
    rng = np.random.default_rng(2)
    n = 14 * 288
    t = np.arange(n, dtype=np.int64) * 300_000 + rng.integers(0, 300_000, n)
    x = 100 * np.sin(2 * np.pi * t / 86_400_000) + rng.normal(0, 0.5, n)
    seas_err = sys.modules[variant.__module__].STATE.seas_err
    plain, moved = variant(), variant(phase=1.0)
    plain.score_learn(x, t)
    moved.score_learn(x, t)
    assert moved._s[seas_err] < 0.95 * plain._s[seas_err]


def test_round_10_a_heavy_tail_told_by_the_series_mutes_its_spike_rule(variant: type) -> None:
    """Round 10's ``tail_k``: where readings ``tail_k`` robust sigmas out are routine (here 2% of them, 6-9 sigmas),
    a larger outlier is no news and the spike rule stays quiet; a Gaussian series never reaches the rate and scores
    bit for bit as without the gate."""
    rng = np.random.default_rng(5)
    n = 8000
    ts = np.arange(n) * 300_000
    y = 50 + rng.normal(0, 1, n)
    gauss = variant().score_learn(y, ts)
    np.testing.assert_array_equal(variant(tail_k=5.0).score_learn(y, ts), gauss)
    routine = rng.random(n) < 0.02
    y[routine] += rng.uniform(6, 9, routine.sum())
    outliers = np.arange(1500, n, 700)
    y[outliers] += 25
    alarms = {k: int((variant(tail_k=k).score_learn(y, ts)[outliers] >= 0.999).sum()) for k in (0.0, 5.0)}
    assert alarms[5.0] < alarms[0.0] - 3, alarms
