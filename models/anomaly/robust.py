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

State: the shared scalars (``_steps.HEAD``) plus rate, prev_ex (last reading was a spike), nrate (novelty
rate); buffers: the likelihood layer's (short surprises, block sums of the history) and the last ``window``
readings: about 1.7 KB with the defaults.
"""

from __future__ import annotations

import math

import numpy as np

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
    mad_deviation,
    part,
    range_learn,
    spike_rate_learn,
    store_head,
    surprise_z,
    window_reaches,
)

PARAMS = ("alpha", "tol", "tau", "damp", "short", "history", "history_block", "hold", "warmup", "window", "spike",
          "floor", "rate_alpha", "rate_max", "novelty_alpha", "novelty_max")
SCALARS = (*HEAD, "rate", "prev_ex", "nrate")
BUFFERS = ("short", "hist", "window")
PARAM, STATE = kernel_fields(PARAMS, BUFFERS), fields("STATE", SCALARS)


def _robust_kernel(values, timestamps, start, params, scalars, mem, out):  # pragma: no cover - compiled
    p, st = params, scalars
    short, hist, window = part(mem, p, PARAM.at_short), part(mem, p, PARAM.at_hist), part(mem, p, PARAM.at_window)
    alpha, tol, tau, damp = p[PARAM.alpha], p[PARAM.tol], p[PARAM.tau], p[PARAM.damp]
    K, H, B, hold = int(p[PARAM.short]), int(p[PARAM.history]), int(p[PARAM.history_block]), int(p[PARAM.hold])
    warm, W, kspike, floor_frac = p[PARAM.warmup], int(p[PARAM.window]), p[PARAM.spike], p[PARAM.floor]
    rate_a, rate_max = p[PARAM.rate_alpha], p[PARAM.rate_max]
    nov_a, nov_max = p[PARAM.novelty_alpha], p[PARAM.novelty_max]
    n, mean, var, mn, mx, left, ssum, hsum, hsq = load_head(scalars)
    rate, prev_ex, nrate = st[STATE.rate], st[STATE.prev_ex], st[STATE.nrate]
    buf = np.empty(W)
    for i in range(start, values.shape[0]):
        x = values[i]
        k = int(n)
        sd_long = math.sqrt(var)
        z = surprise_z(x - mean, sd_long, mean) if k >= 2 else 0.0
        s, ssum, hsum, hsq = likelihood_step(short, hist, K, H, B, k, gauss_tail(z), min(k, H) >= 10,
                                             ssum, hsum, hsq)
        novel = k >= 1 and is_novel(x, mn, mx, tol)
        spiked = False
        if k > warm:
            if novel and nrate < nov_max:
                s = max(s, SURE)
            if k >= W:
                ex = False
                if window_reaches(x, window, W, kspike * max(floor_frac * sd_long, 1e-9)):
                    dev, sc = mad_deviation(x, window, W, buf, sd_long, floor_frac)
                    ex = dev >= kspike * sc
                spiked = ex and rate < rate_max
                rate, prev_ex = spike_rate_learn(ex, rate, prev_ex, rate_a)
            rate *= 1.0 - rate_a
        else:
            s = 0.0
        nrate += nov_a * ((1.0 if novel else 0.0) - nrate)
        out[i], left = hold_alarm(s, spiked, left, tau, hold, damp)
        window[k % W] = x
        mn, mx = range_learn(k, x, mn, mx)
        mean, var = ewma_learn(x, n, mean, var, alpha)
        n += 1.0
    store_head(scalars, n, mean, var, mn, mx, left, ssum, hsum, hsq)
    st[STATE.rate], st[STATE.prev_ex], st[STATE.nrate] = rate, prev_ex, nrate
    return values.shape[0]


class RobustLikelihoodDetector(ArrayDetector):
    """Defaults are the one parameter set scored on NAB and on the simulator (no per-series tuning).

    Parameters
    ----------
    alpha, short, history, history_block, tol, tau, hold, damp, warmup, threshold
        As in ``LikelihoodDetector``.
    window
        Readings whose median and MAD define a spike.
    spike
        Robust sigmas from the window's median that make a reading a spike.
    floor
        The robust sigma is at least this many long-run standard deviations.
    rate_alpha
        Decay rate of the spike-episode rate.
    rate_max
        Episode rate above which spikes are routine for the series and stop alarming.
    novelty_alpha
        Decay rate of the rate of new extremes.
    novelty_max
        Rate of new extremes above which the series is still exploring its range (novelty does not alarm).
    """

    name = "robust"
    kernel = lazy_njit(_robust_kernel)
    kernel_params = PARAMS
    scalars = SCALARS
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
        window: int = 64,
        spike: float = 10.0,
        floor: float = 0.6,
        rate_alpha: float = 0.001,
        rate_max: float = 0.004,
        novelty_alpha: float = 0.01,
        novelty_max: float = 0.01,
        history_block: int = 100,
        threshold: float = 0.999,
    ) -> None:
        check_rates(alpha=alpha, rate_alpha=rate_alpha, novelty_alpha=novelty_alpha)
        check_at_least(1, short=short, history_block=history_block)
        check_at_least(10, history=history)
        check_at_least(3, window=window)
        check_at_least(0, tol=tol, hold=hold, spike=spike, floor=floor, rate_max=rate_max, novelty_max=novelty_max)
        check_fraction(damp=damp)
        self._configure(locals())

    def _buffer_shapes(self) -> dict[str, tuple[str, tuple[int, ...]]]:
        return {**likelihood_buffers(self.short, self.history, self.history_block), "window": ("<f8", (self.window,))}
