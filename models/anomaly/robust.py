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

State: [n, mean, var, min, max, hold_left, short_sum, hist_sum, hist_sq, spike_rate, last_was_spike,
novelty_rate, short[K], hist[H], window[W]].
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from models.anomaly._array import ArrayDetector
from models.anomaly._jit import lazy_njit

_HEAD = 12
_SURE = 1.0 - 1e-7


def _robust_kernel(values, timestamps, state, params, out):  # pragma: no cover - compiled
    alpha, tol, tau, damp = params[0], params[1], params[2], params[3]
    K, H, hold, warm = int(params[4]), int(params[5]), int(params[6]), params[7]
    W, kspike, floor_frac = int(params[8]), params[9], params[10]
    rate_a, rate_max, nov_a, nov_max = params[11], params[12], params[13], params[14]
    n, mean, var, mn, mx = state[0], state[1], state[2], state[3], state[4]
    left, ssum, hsum, hsq = int(state[5]), state[6], state[7], state[8]
    rate, prev_ex, nrate = state[9], state[10], state[11]
    short_at, hist_at, win_at = _HEAD, _HEAD + K, _HEAD + K + H
    sqrt2 = math.sqrt(2.0)
    buf = np.empty(W)
    for i in range(values.shape[0]):
        x = values[i]
        k = int(n)
        z = 0.0
        sd_long = math.sqrt(var)
        if k >= 2:
            z = abs(x - mean) / (sd_long + 1e-9 * max(1.0, abs(mean)))
            if z != z:
                z = 1e300
        raw = 1.0 - math.erfc(z / sqrt2)  # two-sided Gaussian probability of being less surprising
        slot = short_at + k % K
        ssum += raw - state[slot]
        state[slot] = raw
        avg = ssum / min(k + 1, K)
        cnt = min(k, H)
        s = 0.0
        if cnt >= 10:
            mu = hsum / cnt
            sd = math.sqrt(max(hsq / cnt - mu * mu, 1e-8))
            s = 1.0 - 0.5 * math.erfc((avg - mu) / sd / sqrt2)
        hslot = hist_at + k % H
        if k >= H:
            old = state[hslot]
            hsum -= old
            hsq -= old * old
        state[hslot] = avg
        hsum += avg
        hsq += avg * avg
        rng = mx - mn
        novel = k >= 1 and (x > mx + tol * rng or x < mn - tol * rng)
        spiked = False
        if k > warm:
            if novel and nrate < nov_max:
                s = max(s, _SURE)
            if k >= W:
                wlo, whi = state[win_at], state[win_at]
                for j in range(1, W):
                    wlo, whi = min(wlo, state[win_at + j]), max(whi, state[win_at + j])
                ex = False
                # |x - median| <= the farther window extreme: when that is small, no spike (skip the sorts).
                if max(abs(x - wlo), abs(x - whi)) >= kspike * max(floor_frac * sd_long, 1e-9):
                    for j in range(W):
                        buf[j] = state[win_at + j]
                    med = np.median(buf)
                    for j in range(W):
                        buf[j] = abs(buf[j] - med)
                    sc = max(1.4826 * np.median(buf), floor_frac * sd_long, 1e-9 * max(1.0, abs(med)))
                    ex = abs(x - med) >= kspike * sc
                spiked = ex and rate < rate_max
                if ex and prev_ex == 0.0:
                    rate += rate_a
                prev_ex = 1.0 if ex else 0.0
            rate *= 1.0 - rate_a
        else:
            s = 0.0
        nrate += nov_a * ((1.0 if novel else 0.0) - nrate)
        if left > 0:
            left -= 1
            s *= damp
        elif s >= tau:
            left = hold
        if spiked:
            s = _SURE
            if left == 0:
                left = hold
        out[i] = min(max(s, 0.0), 1.0)
        state[win_at + k % W] = x
        if k == 0:
            mn, mx = x, x
        else:
            mn, mx = min(mn, x), max(mx, x)
        a = max(alpha, 1.0 / (n + 1.0))
        d = x - mean
        mean = mean + a * d
        var = (1.0 - a) * (var + a * d * d)
        if not (math.isfinite(mean) and math.isfinite(var)):
            mean, var = x, 0.0
        n += 1.0
    state[0], state[1], state[2], state[3], state[4] = n, mean, var, mn, mx
    state[5], state[6], state[7], state[8] = float(left), ssum, hsum, hsq
    state[9], state[10], state[11] = rate, prev_ex, nrate


class RobustLikelihoodDetector(ArrayDetector):
    """Defaults are the one parameter set scored on NAB and on the simulator (no per-series tuning)."""

    name = "robust"
    kernel = lazy_njit(_robust_kernel)

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
        if not 0.0 < alpha <= 1.0 or not 0.0 < rate_alpha <= 1.0 or not 0.0 < novelty_alpha <= 1.0:
            raise ValueError("alpha, rate_alpha and novelty_alpha must be in (0, 1]")
        if short < 1 or history < 10 or window < 3:
            raise ValueError(f"need short >= 1, history >= 10, window >= 3; got {short}, {history}, {window}")
        if not 0.0 <= damp <= 1.0 or min(tol, hold, spike, floor, rate_max, novelty_max) < 0:
            raise ValueError("need 0 <= damp <= 1 and tol, hold, spike, floor, rate_max, novelty_max >= 0")
        self.alpha, self.short, self.history, self.tol = float(alpha), int(short), int(history), float(tol)
        self.tau, self.hold, self.damp, self.warmup = float(tau), int(hold), float(damp), int(warmup)
        self.window, self.spike, self.floor = int(window), float(spike), float(floor)
        self.rate_alpha, self.rate_max = float(rate_alpha), float(rate_max)
        self.novelty_alpha, self.novelty_max = float(novelty_alpha), float(novelty_max)
        self.threshold = float(threshold)
        self.state_size = _HEAD + self.short + self.history + self.window  # type: ignore[misc]
        super().__init__()
        self._pvec = np.array(
            [self.alpha, self.tol, self.tau, self.damp, self.short, self.history, self.hold, self.warmup,
             self.window, self.spike, self.floor, self.rate_alpha, self.rate_max, self.novelty_alpha,
             self.novelty_max],
            dtype=np.float64,
        )

    def params(self) -> dict[str, Any]:
        return {
            "alpha": self.alpha, "short": self.short, "history": self.history, "tol": self.tol,
            "tau": self.tau, "hold": self.hold, "damp": self.damp, "warmup": self.warmup,
            "window": self.window, "spike": self.spike, "floor": self.floor, "rate_alpha": self.rate_alpha,
            "rate_max": self.rate_max, "novelty_alpha": self.novelty_alpha, "novelty_max": self.novelty_max,
            "threshold": self.threshold,
        }
