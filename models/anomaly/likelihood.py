"""EWMA surprise under an anomaly-likelihood layer, with range novelty and re-alarm damping.

Why this shape (measured on NAB, see BENCHMARKS.md (NAB section)): a raw z-score fires on every noisy sensor,
so, like Numenta's anomaly likelihood, we ask how unusual the *recent average* surprise is against the
sensor's own long history of surprise. A value beyond everything seen so far (by ``tol`` of the range)
is flagged outright, and after an alarm the next ``hold`` scores are damped so that one incident gives
one early alarm rather than a burst of false ones. All in one compiled pass over a flat state vector.

State layout: [n, mean, var, min, max, hold_left, short_sum, hist_sum, hist_sq, short[K]..., hist[H]...].
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from models.anomaly._array import ArrayDetector
from models.anomaly._jit import lazy_njit

_HEAD = 9


def _likelihood_kernel(values, timestamps, state, params, out):  # pragma: no cover - compiled
    alpha, tol, tau, damp = params[0], params[1], params[2], params[3]
    K, H, hold, warm = int(params[4]), int(params[5]), int(params[6]), params[7]
    n, mean, var, mn, mx = state[0], state[1], state[2], state[3], state[4]
    left, ssum, hsum, hsq = int(state[5]), state[6], state[7], state[8]
    short_at, hist_at = _HEAD, _HEAD + K
    sqrt2 = math.sqrt(2.0)
    for i in range(values.shape[0]):
        x = values[i]
        k = int(n)
        z = 0.0
        if k >= 2:
            scale = math.sqrt(var) + 1e-9 * max(1.0, abs(mean))
            z = abs(x - mean) / scale
            if z != z:
                z = 1e300
        raw = 1.0 - math.erfc(z / sqrt2)  # two-sided Gaussian probability of being less surprising
        slot = short_at + k % K
        ssum += raw - state[slot]
        state[slot] = raw
        avg = ssum / min(k + 1, K)
        cnt = min(k, H)
        lik = 0.0
        if cnt >= 10:
            mu = hsum / cnt
            sd = math.sqrt(max(hsq / cnt - mu * mu, 1e-8))
            lik = 1.0 - 0.5 * math.erfc((avg - mu) / sd / sqrt2)
        hslot = hist_at + k % H
        if k >= H:
            old = state[hslot]
            hsum -= old
            hsq -= old * old
        state[hslot] = avg
        hsum += avg
        hsq += avg * avg
        s = lik
        if k > warm:
            rng = mx - mn
            if x > mx + tol * rng or x < mn - tol * rng:
                s = max(s, 1.0 - 1e-7)
        else:
            s = 0.0
        if left > 0:
            left -= 1
            s *= damp
        elif s >= tau:
            left = hold
        out[i] = min(max(s, 0.0), 1.0)
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


class LikelihoodDetector(ArrayDetector):
    """Defaults are the one parameter set scored on NAB (no per-series tuning)."""

    name = "likelihood"
    kernel = lazy_njit(_likelihood_kernel)

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
        threshold: float = 0.999,
    ) -> None:
        if not 0.0 < alpha <= 1.0:
            raise ValueError(f"alpha must be in (0, 1], got {alpha}")
        if short < 1 or history < 10:
            raise ValueError(f"need short >= 1 and history >= 10, got {short}, {history}")
        if not 0.0 <= damp <= 1.0 or tol < 0 or hold < 0:
            raise ValueError("need 0 <= damp <= 1, tol >= 0, hold >= 0")
        self.alpha, self.short, self.history, self.tol = float(alpha), int(short), int(history), float(tol)
        self.tau, self.hold, self.damp, self.warmup = float(tau), int(hold), float(damp), int(warmup)
        self.threshold = float(threshold)
        self.state_size = _HEAD + self.short + self.history  # type: ignore[misc]
        super().__init__()
        self._pvec = np.array(
            [self.alpha, self.tol, self.tau, self.damp, self.short, self.history, self.hold, self.warmup],
            dtype=np.float64,
        )

    def params(self) -> dict[str, Any]:
        return {
            "alpha": self.alpha,
            "short": self.short,
            "history": self.history,
            "tol": self.tol,
            "tau": self.tau,
            "hold": self.hold,
            "damp": self.damp,
            "warmup": self.warmup,
            "threshold": self.threshold,
        }
