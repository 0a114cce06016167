"""EWMA surprise under an anomaly-likelihood layer, with range novelty and re-alarm damping.

Why this shape (measured on NAB, see BENCHMARKS.md (NAB section)): a raw z-score fires on every noisy sensor,
so, like Numenta's anomaly likelihood, we ask how unusual the *recent average* surprise is against the
sensor's own long history of surprise. A value beyond everything seen so far (by ``tol`` of the range)
is flagged outright, and after an alarm the next ``hold`` scores are damped so that one incident gives
one early alarm rather than a burst of false ones. All in one compiled pass over a flat state vector.

State layout: the shared head (``_steps.HEAD``), then short[K], hist[H].
"""

from __future__ import annotations

import math

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
    range_learn,
    store_head,
    surprise_z,
)


def _likelihood_kernel(values, timestamps, state, params, out):  # pragma: no cover - compiled
    alpha, tol, tau, damp = params[0], params[1], params[2], params[3]
    K, H, hold, warm = int(params[4]), int(params[5]), int(params[6]), params[7]
    n, mean, var, mn, mx, left, ssum, hsum, hsq = load_head(state)
    short_at, hist_at = HEAD, HEAD + K
    for i in range(values.shape[0]):
        x = values[i]
        k = int(n)
        z = surprise_z(x - mean, math.sqrt(var), mean) if k >= 2 else 0.0
        s, ssum, hsum, hsq = likelihood_step(state, short_at, hist_at, K, H, k, gauss_tail(z), min(k, H) >= 10,
                                             ssum, hsum, hsq)
        if k > warm:
            if is_novel(x, mn, mx, tol):
                s = max(s, SURE)
        else:
            s = 0.0
        out[i], left = hold_alarm(s, False, left, tau, hold, damp)
        mn, mx = range_learn(k, x, mn, mx)
        mean, var = ewma_learn(x, n, mean, var, alpha)
        n += 1.0
    store_head(state, n, mean, var, mn, mx, left, ssum, hsum, hsq)


class LikelihoodDetector(ArrayDetector):
    """Defaults are the one parameter set scored on NAB (no per-series tuning)."""

    name = "likelihood"
    kernel = lazy_njit(_likelihood_kernel)
    kernel_params = ("alpha", "tol", "tau", "damp", "short", "history", "hold", "warmup")

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
        check_rates(alpha=alpha)
        check_at_least(1, short=short)
        check_at_least(10, history=history)
        check_at_least(0, tol=tol, hold=hold)
        check_fraction(damp=damp)
        self._configure(locals())

    def _state_size(self) -> int:
        return HEAD + self.short + self.history
