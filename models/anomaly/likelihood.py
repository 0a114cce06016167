"""EWMA surprise under an anomaly-likelihood layer, with range novelty and re-alarm damping.

Why this shape (measured on NAB, see BENCHMARKS-nab.md): a raw z-score fires on every noisy sensor,
so, like Numenta's anomaly likelihood, we ask how unusual the *recent average* surprise is against the
sensor's own long history of surprise. A value beyond everything seen so far (by ``tol`` of the range)
is flagged outright, and after an alarm the next ``hold`` scores are damped so that one incident gives
one early alarm rather than a burst of false ones. All in one compiled pass over a flat state vector.

State: the shared scalars (``_steps.HEAD``) and the likelihood buffers (the last ``short`` surprises, the
block sums of the last ``history`` averages): about 1.2 KB with the defaults.
"""

from __future__ import annotations

import math

from models.anomaly._array import (
    ArrayDetector,
    check_at_least,
    check_fraction,
    check_rates,
    fields,
    kernel_fields,
    likelihood_buffers,
)
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
    part,
    range_learn,
    store_head,
    surprise_z,
)


PARAMS = ("alpha", "tol", "tau", "damp", "short", "history", "history_block", "hold", "warmup")
BUFFERS = ("short", "hist")
PARAM, STATE = kernel_fields(PARAMS, BUFFERS), fields("STATE", HEAD)


def _likelihood_kernel(values, timestamps, start, params, scalars, mem, out):  # pragma: no cover - compiled
    p, st = params, scalars
    short, hist = part(mem, p, PARAM.at_short), part(mem, p, PARAM.at_hist)
    alpha, tol, tau, damp = p[PARAM.alpha], p[PARAM.tol], p[PARAM.tau], p[PARAM.damp]
    K, H, B, hold = int(p[PARAM.short]), int(p[PARAM.history]), int(p[PARAM.history_block]), int(p[PARAM.hold])
    warm = p[PARAM.warmup]
    n, mean, var, mn, mx, left, ssum, hsum, hsq = load_head(scalars)
    for i in range(start, values.shape[0]):
        x = values[i]
        k = int(n)
        z = surprise_z(x - mean, math.sqrt(var), mean) if k >= 2 else 0.0
        s, ssum, hsum, hsq = likelihood_step(short, hist, K, H, B, k, gauss_tail(z), min(k, H) >= 10,
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
    store_head(scalars, n, mean, var, mn, mx, left, ssum, hsum, hsq)
    return values.shape[0]


class LikelihoodDetector(ArrayDetector):
    """Defaults are the one parameter set scored on NAB (no per-series tuning).

    Parameters
    ----------
    alpha
        EWMA rate of the running mean and variance (a plain average for the first ``1/alpha`` readings).
    short
        Surprises averaged into the recent surprise (HTM's short window).
    history
        Recent surprise averages the likelihood compares against (a multiple of ``history_block``).
    tol
        A value beyond the range seen so far by more than this fraction of its width is novel.
    tau
        Score from which an alarm starts the hold.
    hold
        Readings after an alarm whose scores are damped.
    damp
        Factor applied to each score during the hold.
    warmup
        Readings scored 0 while the detector learns.
    history_block
        The history is kept as sums over blocks of this many averages, so it costs
        ``16 * (history / history_block + 1)`` bytes instead of ``8 * history``.
    threshold
        Score at or above which a reading is anomalous.
    """

    name = "likelihood"
    kernel = lazy_njit(_likelihood_kernel)
    kernel_params = PARAMS
    scalars = HEAD
    buffers = BUFFERS

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
        history_block: int = 100,
        threshold: float = 0.999,
    ) -> None:
        check_rates(alpha=alpha)
        check_at_least(1, short=short, history_block=history_block)
        check_at_least(10, history=history)
        check_at_least(0, tol=tol, hold=hold)
        check_fraction(damp=damp)
        self._configure(locals())

    def _buffer_shapes(self) -> dict[str, tuple[str, tuple[int, ...]]]:
        return likelihood_buffers(self.short, self.history, self.history_block)
