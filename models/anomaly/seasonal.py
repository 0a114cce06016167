"""``robust`` with a time-of-day context: surprise measured against what this slot of the day usually reads.

Why: many operational series follow a daily (or weekly) cycle, and their incidents are *contextual*: a
value that is normal for the series overall but wrong for the hour (a cycle that stops, a flat stretch, a
busy night). The global EWMA behind ``robust`` cannot see those. Here each reading's slot of the period
(``timestamp mod period``, at the series' own sampling step, learnt from its first two timestamps) keeps an
EWMA of its value, for a day and for a week (``period2_ms``; weekday traffic is not weekend traffic), and
whichever of the two has been predicting better lately speaks. The prediction error against that slot (scaled by a winsorised residual variance, so
an incident does not teach the detector to expect itself) feeds its own likelihood layer, whose score
replaces the global one whenever the seasonal model has been predicting clearly better lately (EWMA
squared error below ``ratio`` times the global one); series without a cycle behave like ``robust``. A
series sampled too finely for the period (more than ``slots`` steps per period) has no seasonal context.
The seasonal surprise is the Gaussian tail of ``z / zscale``: unscaled, ordinary daily transitions
saturate it and the likelihood layer can no longer tell an incident from a busy hour.

The spike rule is ``robust``'s, made adaptive in two ways (both measured on NAB, BENCHMARKS.md (NAB section)):
a spike alarms only when it is bigger than every spike of the recent past (the largest robust z seen,
decaying by ``spike_decay`` per reading), and, on a seasonal series, not when a spike already happened
at about the same time of day (one of ``spike_bins`` bins of the period, or a neighbour) within the last
``spike_recall`` periods: a nightly batch job's CPU spike is routine, not news.

State: [the shared head (``_steps.HEAD``), spike_rate, last_was_spike, novelty_rate, step_ms, res_var, seas_err, glob_err, prev_ts, res_n, s_short_sum, s_hist_sum, s_hist_sq,
s_n, spike_zmax, res_var2, seas_err2, res_n2, short[K], hist[H], window[W], slot_mean[S], slot_count[S],
s_short[K], s_hist[H], spike_bin_last_ts[B], slot_mean2[S], slot_count2[S]] (the 2-arrays only with a
second period).
"""

from __future__ import annotations

import math

import numpy as np

from models.anomaly._array import ArrayDetector, check_at_least, check_fraction, check_positive, check_rates
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

_HEAD = HEAD + 17


def _seasonal_kernel(values, timestamps, state, params, out):  # pragma: no cover - compiled
    alpha, tol, tau, damp = params[0], params[1], params[2], params[3]
    K, H, hold, warm = int(params[4]), int(params[5]), int(params[6]), params[7]
    W, kspike, floor_frac = int(params[8]), params[9], params[10]
    rate_a, rate_max, nov_a, nov_max = params[11], params[12], params[13], params[14]
    period, S, alpha_s, ratio, err_a = params[15], int(params[16]), params[17], params[18], params[19]
    clip, mode, zscale = params[20], params[21], params[22]
    zdecay, zmargin = params[23], params[24]
    NB, recall, period2 = int(params[25]), params[26], params[27]
    M = 2 if period2 > 0.0 else 1
    slots_m = np.empty(2, dtype=np.int64)
    zmax = state[22]
    n, mean, var, mn, mx, left, ssum, hsum, hsq = load_head(state)
    rate, prev_ex, nrate = state[9], state[10], state[11]
    step, glob_err, prev_ts = state[12], state[15], state[16]
    short_at, hist_at, win_at = _HEAD, _HEAD + K, _HEAD + K + H
    sm_at = win_at + W
    sc_at = sm_at + S
    ss_at = sc_at + S
    sh_at = ss_at + K
    sb_at = sh_at + H
    sm2_at = sb_at + NB
    sc2_at = sm2_at + S
    s_ssum, s_hsum, s_hsq, s_n = state[18], state[19], state[20], state[21]
    buf = np.empty(W)
    for i in range(values.shape[0]):
        x = values[i]
        ts = float(timestamps[i])
        k = int(n)
        if k >= 1 and step == 0.0 and ts > prev_ts:
            step = ts - prev_ts
        prev_ts = ts
        nslots = int(period / step + 0.5) if step > 0.0 else 0
        seasonal = 4 <= nslots <= S
        sd_long = math.sqrt(var)
        z = surprise_z(x - mean, sd_long, mean) if k >= 2 else 0.0
        gerr = (x - mean) * (x - mean) if k >= 2 else 0.0
        best_z, best_err, best_ns, any_warm = -1.0, 1e300, 0, False
        for m in range(M):
            per = period if m == 0 else period2
            ns = int(per / step + 0.5) if step > 0.0 else 0
            slots_m[m] = -1
            if ns < 4 or ns > S:
                continue
            sl = int((ts % per) / step)
            if sl >= ns:
                sl = ns - 1
            slots_m[m] = sl
            mean_at = sm_at if m == 0 else sm2_at
            cnt_at = sc_at if m == 0 else sc2_at
            rv_i, se_i, rn_i = (13, 14, 17) if m == 0 else (23, 24, 25)
            if state[cnt_at + sl] < 1.0:
                continue
            r = x - state[mean_at + sl]
            rv, rn = state[rv_i], state[rn_i]
            if rn >= ns and k >= 2:
                zs = surprise_z(r, math.sqrt(rv), mean)
                if state[se_i] < best_err:
                    best_z, best_err, best_ns = zs, state[se_i], ns
                state[se_i] += err_a * (r * r - state[se_i])
                any_warm = True
            a_r = max(err_a, 1.0 / (rn + 1.0))
            rc = r * r
            if rn >= ns and rc > clip * clip * rv:
                rc = clip * clip * rv
            state[rv_i] = rv + a_r * (rc - rv)
            state[rn_i] = rn + 1.0
        s_lik = 0.0
        if best_z >= 0.0:
            kk = int(s_n)
            ready = kk >= best_ns and (best_err < ratio * glob_err or mode == 1.0)
            s_lik, s_ssum, s_hsum, s_hsq = likelihood_step(state, ss_at, sh_at, K, H, kk, gauss_tail(best_z / zscale),
                                                           ready, s_ssum, s_hsum, s_hsq)
            s_n += 1.0
        if any_warm:
            glob_err += err_a * (gerr - glob_err)
        s, ssum, hsum, hsq = likelihood_step(state, short_at, hist_at, K, H, k, gauss_tail(z), min(k, H) >= 10,
                                             ssum, hsum, hsq)
        if mode == 0.0 and s_lik > 0.0:
            s = s_lik
        else:
            s = max(s, s_lik)
        novel = k >= 1 and is_novel(x, mn, mx, tol)
        spiked = False
        if k > warm:
            if novel and nrate < nov_max:
                s = max(s, SURE)
            if k >= W:
                ex, bigger = False, True
                zmax *= zdecay
                if window_reach(x, state, win_at, W) >= kspike * max(floor_frac * sd_long, 1e-9):
                    dev, sc = mad_deviation(x, state, win_at, W, buf, sd_long, floor_frac)
                    zr = dev / sc
                    ex = zr >= kspike
                    bigger = zr > zmargin * zmax
                    zmax = max(zmax, zr)
                spiked = ex and rate < rate_max and bigger
                if ex and seasonal and NB > 0:
                    b = int((ts % period) / period * NB)
                    for db in range(-1, 2):
                        last = state[sb_at + (b + db) % NB]
                        if last > 0.0 and ts - last <= recall * period:
                            spiked = False
                    state[sb_at + b] = ts
                rate, prev_ex = spike_rate_learn(ex, rate, prev_ex, rate_a)
            rate *= 1.0 - rate_a
        else:
            s = 0.0
        nrate += nov_a * ((1.0 if novel else 0.0) - nrate)
        out[i], left = hold_alarm(s, spiked, left, tau, hold, damp)
        state[win_at + k % W] = x
        for m in range(M):
            sl = slots_m[m]
            if sl >= 0:
                mean_at = sm_at if m == 0 else sm2_at
                cnt_at = sc_at if m == 0 else sc2_at
                c = state[cnt_at + sl]
                state[mean_at + sl] = x if c == 0.0 else state[mean_at + sl] + alpha_s * (x - state[mean_at + sl])
                state[cnt_at + sl] = c + 1.0
        mn, mx = range_learn(k, x, mn, mx)
        mean, var = ewma_learn(x, n, mean, var, alpha)
        n += 1.0
    store_head(state, n, mean, var, mn, mx, left, ssum, hsum, hsq)
    state[9], state[10], state[11] = rate, prev_ex, nrate
    state[12], state[15], state[16] = step, glob_err, prev_ts
    state[18], state[19], state[20], state[21] = s_ssum, s_hsum, s_hsq, s_n
    state[22] = zmax


class SeasonalDetector(ArrayDetector):
    """Defaults are the one parameter set scored on NAB and on the simulator (no per-series tuning)."""

    name = "seasonal"
    kernel = lazy_njit(_seasonal_kernel)
    kernel_params = ("alpha", "tol", "tau", "damp", "short", "history", "hold", "warmup", "window", "spike", "floor",
                     "rate_alpha", "rate_max", "novelty_alpha", "novelty_max", "period_ms", "slots", "slot_alpha",
                     "ratio", "err_alpha", "clip", "mode", "zscale", "spike_decay", "spike_margin", "spike_bins",
                     "spike_recall", "period2_ms")

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
        period_ms: int = 86_400_000,
        slots: int = 2048,
        slot_alpha: float = 0.2,
        ratio: float = 0.3,
        err_alpha: float = 0.01,
        clip: float = 3.0,
        mode: int = 0,
        zscale: float = 3.0,
        spike_decay: float = 0.998,
        spike_margin: float = 1.0,
        spike_bins: int = 48,
        spike_recall: float = 3.0,
        period2_ms: int = 604_800_000,
        threshold: float = 0.999,
    ) -> None:
        check_rates(alpha=alpha, rate_alpha=rate_alpha, novelty_alpha=novelty_alpha, slot_alpha=slot_alpha,
                    err_alpha=err_alpha)
        check_at_least(1, short=short)
        check_at_least(10, history=history)
        check_at_least(3, window=window)
        check_at_least(4, slots=slots)
        check_positive(period_ms=period_ms)
        check_at_least(0, tol=tol, hold=hold, spike=spike, floor=floor, rate_max=rate_max, novelty_max=novelty_max,
                       ratio=ratio)
        check_fraction(damp=damp)
        self._configure(locals())

    def _state_size(self) -> int:
        size = _HEAD + 2 * (self.short + self.history) + self.window + 2 * self.slots + self.spike_bins
        return size + (2 * self.slots if self.period2_ms > 0 else 0)
