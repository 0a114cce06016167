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

State: [n, mean, var, min, max, hold_left, short_sum, hist_sum, hist_sq, spike_rate, last_was_spike,
novelty_rate, step_ms, res_var, seas_err, glob_err, prev_ts, res_n, s_short_sum, s_hist_sum, s_hist_sq,
s_n, spike_zmax, res_var2, seas_err2, res_n2, short[K], hist[H], window[W], slot_mean[S], slot_count[S],
s_short[K], s_hist[H], spike_bin_last_ts[B], slot_mean2[S], slot_count2[S]] (the 2-arrays only with a
second period).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from models.anomaly._array import ArrayDetector
from models.anomaly._jit import lazy_njit

_HEAD = 26
_SURE = 1.0 - 1e-7


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
    n, mean, var, mn, mx = state[0], state[1], state[2], state[3], state[4]
    left, ssum, hsum, hsq = int(state[5]), state[6], state[7], state[8]
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
    s_lik = 0.0
    sqrt2 = math.sqrt(2.0)
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
        z = 0.0
        sd_long = math.sqrt(var)
        if k >= 2:
            z = abs(x - mean) / (sd_long + 1e-9 * max(1.0, abs(mean)))
            if math.isnan(z):
                z = 1e300
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
                zs = abs(r) / (math.sqrt(rv) + 1e-9 * max(1.0, abs(mean)))
                if math.isnan(zs):
                    zs = 1e300
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
        if best_z >= 0.0:
            better = best_err < ratio * glob_err
            kk = int(s_n)
            raw_s = 1.0 - math.erfc(best_z / zscale / sqrt2)
            j = ss_at + kk % K
            s_ssum += raw_s - state[j]
            state[j] = raw_s
            avg_s = s_ssum / min(kk + 1, K)
            cnt_s = min(kk, H)
            s_lik = 0.0
            if kk >= best_ns and (better or mode == 1.0):
                mu_s = s_hsum / cnt_s
                sd_s = math.sqrt(max(s_hsq / cnt_s - mu_s * mu_s, 1e-8))
                s_lik = 1.0 - 0.5 * math.erfc((avg_s - mu_s) / sd_s / sqrt2)
            j = sh_at + kk % H
            if kk >= H:
                old_s = state[j]
                s_hsum -= old_s
                s_hsq -= old_s * old_s
            state[j] = avg_s
            s_hsum += avg_s
            s_hsq += avg_s * avg_s
            s_n += 1.0
        if any_warm:
            glob_err += err_a * (gerr - glob_err)
        raw = 1.0 - math.erfc(z / sqrt2)
        slot_i = short_at + k % K
        ssum += raw - state[slot_i]
        state[slot_i] = raw
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
        if mode == 0.0 and s_lik > 0.0:
            s = s_lik
        else:
            s = max(s, s_lik)
        s_lik = 0.0
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
                bigger = True
                zmax *= zdecay
                if max(abs(x - wlo), abs(x - whi)) >= kspike * max(floor_frac * sd_long, 1e-9):
                    for j in range(W):
                        buf[j] = state[win_at + j]
                    med = np.median(buf)
                    for j in range(W):
                        buf[j] = abs(buf[j] - med)
                    sc = max(1.4826 * np.median(buf), floor_frac * sd_long, 1e-9 * max(1.0, abs(med)))
                    zr = abs(x - med) / sc
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
        for m in range(M):
            sl = slots_m[m]
            if sl >= 0:
                mean_at = sm_at if m == 0 else sm2_at
                cnt_at = sc_at if m == 0 else sc2_at
                c = state[cnt_at + sl]
                state[mean_at + sl] = x if c == 0.0 else state[mean_at + sl] + alpha_s * (x - state[mean_at + sl])
                state[cnt_at + sl] = c + 1.0
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
    state[12], state[15], state[16] = step, glob_err, prev_ts
    state[18], state[19], state[20], state[21] = s_ssum, s_hsum, s_hsq, s_n
    state[22] = zmax


class SeasonalDetector(ArrayDetector):
    """Defaults are the one parameter set scored on NAB and on the simulator (no per-series tuning)."""

    name = "seasonal"
    kernel = lazy_njit(_seasonal_kernel)

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
        rates = (alpha, rate_alpha, novelty_alpha, slot_alpha, err_alpha)
        if not all(0.0 < r <= 1.0 for r in rates):
            raise ValueError("alpha, rate_alpha, novelty_alpha, slot_alpha and err_alpha must be in (0, 1]")
        if short < 1 or history < 10 or window < 3 or slots < 4 or period_ms <= 0:
            raise ValueError("need short >= 1, history >= 10, window >= 3, slots >= 4, period_ms > 0")
        if not 0.0 <= damp <= 1.0 or min(tol, hold, spike, floor, rate_max, novelty_max, ratio) < 0:
            raise ValueError("need 0 <= damp <= 1 and tol, hold, spike, floor, rate_max, novelty_max, ratio >= 0")
        self.alpha, self.short, self.history, self.tol = float(alpha), int(short), int(history), float(tol)
        self.tau, self.hold, self.damp, self.warmup = float(tau), int(hold), float(damp), int(warmup)
        self.window, self.spike, self.floor = int(window), float(spike), float(floor)
        self.rate_alpha, self.rate_max = float(rate_alpha), float(rate_max)
        self.novelty_alpha, self.novelty_max = float(novelty_alpha), float(novelty_max)
        self.period_ms, self.slots, self.slot_alpha = int(period_ms), int(slots), float(slot_alpha)
        self.ratio, self.err_alpha, self.clip, self.mode = float(ratio), float(err_alpha), float(clip), int(mode)
        self.zscale, self.spike_decay, self.spike_margin = float(zscale), float(spike_decay), float(spike_margin)
        self.spike_bins, self.spike_recall = int(spike_bins), float(spike_recall)
        self.period2_ms = int(period2_ms)
        self.threshold = float(threshold)
        self.state_size = _HEAD + self.short + self.history + self.window + 2 * self.slots + self.short + self.history + self.spike_bins
        self.state_size += 2 * self.slots if self.period2_ms > 0 else 0  # type: ignore[misc]
        super().__init__()
        self._pvec = np.array(
            [self.alpha, self.tol, self.tau, self.damp, self.short, self.history, self.hold, self.warmup,
             self.window, self.spike, self.floor, self.rate_alpha, self.rate_max, self.novelty_alpha,
             self.novelty_max, self.period_ms, self.slots, self.slot_alpha, self.ratio, self.err_alpha, self.clip, self.mode, self.zscale, self.spike_decay, self.spike_margin, self.spike_bins, self.spike_recall, self.period2_ms],
            dtype=np.float64,
        )

    def params(self) -> dict[str, Any]:
        return {
            "alpha": self.alpha, "short": self.short, "history": self.history, "tol": self.tol,
            "tau": self.tau, "hold": self.hold, "damp": self.damp, "warmup": self.warmup,
            "window": self.window, "spike": self.spike, "floor": self.floor, "rate_alpha": self.rate_alpha,
            "rate_max": self.rate_max, "novelty_alpha": self.novelty_alpha, "novelty_max": self.novelty_max,
            "period_ms": self.period_ms, "slots": self.slots, "slot_alpha": self.slot_alpha,
            "ratio": self.ratio, "err_alpha": self.err_alpha, "clip": self.clip, "mode": self.mode, "zscale": self.zscale, "spike_decay": self.spike_decay, "spike_margin": self.spike_margin, "spike_bins": self.spike_bins,
            "spike_recall": self.spike_recall, "period2_ms": self.period2_ms, "threshold": self.threshold,
        }
