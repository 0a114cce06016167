"""The shared likelihood layer's two options (round 7, off by default): a novelty margin in the series' own noise,
and a log surprise that lets the layer alarm on series whose averaged tail probabilities vary widely."""

from __future__ import annotations

import numpy as np
import pytest

from models.anomaly import make_detector

STEP_MS = 300_000
N = 4000


def _ar1(phi: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    e = rng.normal(0.0, 1.0, N)
    x = np.empty(N)
    x[0] = e[0]
    for i in range(1, N):
        x[i] = phi * x[i - 1] + e[i]
    return x


def _stamps() -> np.ndarray:
    return np.arange(N, dtype=np.int64) * STEP_MS


@pytest.mark.parametrize("name", ["likelihood", "robust", "seasonal"])
@pytest.mark.parametrize("seed", [0, 1])
def test_novelty_sd_keeps_a_drift_s_new_records_quiet_and_still_flags_a_jump_out_of_range(name: str, seed: int) -> None:
    rng = np.random.default_rng(seed)
    y = 50.0 + np.cumsum(rng.normal(0.0, 0.05, N)) + np.linspace(0.0, 4.0, N) + _ar1(0.7, seed + 10)
    jump = 3500
    y[jump] = y[:jump].max() + 8.0 * (y[:jump].max() - y[:jump].min())
    record = np.r_[False, y[1:] > np.maximum.accumulate(y)[:-1]]
    off, on = make_detector(name), make_detector(name, novelty_sd=2.0)
    s_off, s_on = off.score_learn(y, _stamps()), on.score_learn(y, _stamps())
    drift = slice(200, jump)
    assert (record[drift] & (s_off[drift] >= off.threshold)).sum() >= 2  # the rule as it is: records alarm
    assert (record[drift] & (s_on[drift] >= on.threshold)).sum() == 0
    assert s_on[jump] >= on.threshold and s_off[jump] >= off.threshold


@pytest.mark.parametrize("seed", [0, 1])
def test_the_gaussian_tail_cannot_reach_an_alarm_on_autocorrelated_noise_the_log_surprise_can(seed: int) -> None:
    x = 50.0 + _ar1(0.9, seed)
    sd = x.std()
    x[300] += 30.0 * sd  # an early excursion each way: the shift below stays inside the range seen
    x[301] -= 30.0 * sd
    x[3000:] += 8.0 * sd
    tail, log = make_detector("likelihood"), make_detector("likelihood", log_surprise=1)
    shift = slice(3000, 3100)
    assert tail.score_learn(x, _stamps())[shift].max() < tail.threshold
    assert log.score_learn(x, _stamps())[shift].max() >= log.threshold


@pytest.mark.parametrize("name", ["likelihood", "robust", "seasonal"])
def test_with_the_options_a_snapshot_restores_and_continues_exactly(name: str) -> None:
    x = 50.0 + _ar1(0.7, 3)
    x[3000:] += 6.0
    t = _stamps()
    whole = make_detector(name, novelty_sd=2.0, log_surprise=1).score_learn(x, t)
    first = make_detector(name, novelty_sd=2.0, log_surprise=1)
    head = first.score_learn(x[:1700], t[:1700])
    resumed = make_detector(name, novelty_sd=2.0, log_surprise=1)
    resumed.restore(first.snapshot())
    np.testing.assert_array_equal(np.r_[head, resumed.score_learn(x[1700:], t[1700:])], whole)


def test_the_options_are_refused_below_zero() -> None:
    with pytest.raises(ValueError, match="novelty_sd"):
        make_detector("seasonal", novelty_sd=-1.0)
