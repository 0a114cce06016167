"""Anomaly likelihood over EWMA surprise, plus a robust spike rule: early on NAB, immediate on a lone extreme.

Why two signals: the likelihood layer (HTM's idea: how unusual is the *recent average* surprise against
the series' own history of surprise) catches slow, contextual incidents early on NAB, but it averages a
single extreme reading away. Operators also need a reading far from the recent median flagged at once,
whatever came before, so a reading ``spike`` robust sigmas from the median of the last ``window`` readings
scores ~1 immediately (the robust sigma is the MAD, floored at ``floor`` long-run standard deviations so
that quantised or flat series do not fire on every step). Series where such jumps are routine (their
episode rate exceeds ``rate_max``) stop getting spike alarms. A value beyond the whole range seen so far
(by ``tol`` of the range) scores ~1 too, unless the series is still exploring its range (the recent rate
of new extremes exceeds ``novelty_max``, as in the first cycle of a seasonal signal). After an alarm the
next ``hold`` scores are damped so one incident gives one early alarm rather than a burst; a spike still
scores ~1 during that hold, because a new extreme reading is news to an operator.

State: the shared head (``_steps.HEAD``), spike_rate, last_was_spike, novelty_rate, short[K], hist[H],
window[W].
"""

from __future__ import annotations

import math

import numpy as np

from models.anomaly._array import ArrayDetector, check_at_least, check_fraction, check_rates
from models.anomaly._jit import lazy_njit
from models.anomaly._steps import (
    HEAD,
    SURE,
    ewma_learn,
    gauss_tail,
    hold_alarm,
    is_novel,
    likelihood_step,
    load_head,
    mad_deviation,
    range_learn,
    spike_rate_learn,
    store_head,
    surprise_z,
    window_reach,
)

_HEAD = HEAD + 3


def _robust_kernel(values, timestamps, state, params, out):  # pragma: no cover - compiled
    alpha, tol, tau, damp = params[0], params[1], params[2], params[3]
    K, H, hold, warm = int(params[4]), int(params[5]), int(params[6]), params[7]
    W, kspike, floor_frac = int(params[8]), params[9], params[10]
    rate_a, rate_max, nov_a, nov_max = params[11], params[12], params[13], params[14]
    n, mean, var, mn, mx, left, ssum, hsum, hsq = load_head(state)
    rate, prev_ex, nrate = state[HEAD], state[HEAD + 1], state[HEAD + 2]
    short_at, hist_at, win_at = _HEAD, _HEAD + K, _HEAD + K + H
    buf = np.empty(W)
    for i in range(values.shape[0]):
        x = values[i]
        k = int(n)
        sd_long = math.sqrt(var)
        z = surprise_z(x - mean, sd_long, mean) if k >= 2 else 0.0
        s, ssum, hsum, hsq = likelihood_step(state, short_at, hist_at, K, H, k, gauss_tail(z), min(k, H) >= 10,
                                             ssum, hsum, hsq)
        novel = k >= 1 and is_novel(x, mn, mx, tol)
        spiked = False
        if k > warm:
            if novel and nrate < nov_max:
                s = max(s, SURE)
            if k >= W:
                ex = False
                if window_reach(x, state, win_at, W) >= kspike * max(floor_frac * sd_long, 1e-9):
                    dev, sc = mad_deviation(x, state, win_at, W, buf, sd_long, floor_frac)
                    ex = dev >= kspike * sc
                spiked = ex and rate < rate_max
                rate, prev_ex = spike_rate_learn(ex, rate, prev_ex, rate_a)
            rate *= 1.0 - rate_a
        else:
            s = 0.0
        nrate += nov_a * ((1.0 if novel else 0.0) - nrate)
        out[i], left = hold_alarm(s, spiked, left, tau, hold, damp)
        state[win_at + k % W] = x
        mn, mx = range_learn(k, x, mn, mx)
        mean, var = ewma_learn(x, n, mean, var, alpha)
        n += 1.0
    store_head(state, n, mean, var, mn, mx, left, ssum, hsum, hsq)
    state[HEAD], state[HEAD + 1], state[HEAD + 2] = rate, prev_ex, nrate


class RobustLikelihoodDetector(ArrayDetector):
    """Defaults are the one parameter set scored on NAB and on the simulator (no per-series tuning)."""

    name = "robust"
    kernel = lazy_njit(_robust_kernel)
    kernel_params = ("alpha", "tol", "tau", "damp", "short", "history", "hold", "warmup", "window", "spike", "floor",
                     "rate_alpha", "rate_max", "novelty_alpha", "novelty_max")

    def __init__(
        self,
        alpha: float = 0.01,
        short: int = 10,
        history: int = 6000,
        tol: float = 0.02,
        tau: float = 0.999,
        hold: int = 50,
        damp: float = 0.95,
        warmup: int = 100,
        window: int = 64,
        spike: float = 10.0,
        floor: float = 0.6,
        rate_alpha: float = 0.001,
        rate_max: float = 0.004,
        novelty_alpha: float = 0.01,
        novelty_max: float = 0.01,
        threshold: float = 0.999,
    ) -> None:
        check_rates(alpha=alpha, rate_alpha=rate_alpha, novelty_alpha=novelty_alpha)
        check_at_least(1, short=short)
        check_at_least(10, history=history)
        check_at_least(3, window=window)
        check_at_least(0, tol=tol, hold=hold, spike=spike, floor=floor, rate_max=rate_max, novelty_max=novelty_max)
        check_fraction(damp=damp)
        self._configure(locals())

    def _state_size(self) -> int:
        return _HEAD + self.short + self.history + self.window
