"""Compiled steps the array kernels share: the EWMA, the anomaly-likelihood layer, range novelty, the robust
spike test and the alarm hold. Each is ``lazy_njit``: a kernel calls it as compiled code, and the kernels
that share a step share its arithmetic exactly (same operations, same order), so scores agree bit for bit.

The first ``HEAD`` state slots are laid out the same in every likelihood kernel:
[n, mean, var, min, max, hold_left, short_sum, hist_sum, hist_sq].
"""

from __future__ import annotations

import math

import numpy as np

from models.anomaly._jit import lazy_inline

HEAD = 9
SURE = 1.0 - 1e-7  # a score that is an alarm at any threshold below 1
_SQRT2 = math.sqrt(2.0)


@lazy_inline
def load_head(state):  # pragma: no cover - compiled
    return state[0], state[1], state[2], state[3], state[4], int(state[5]), state[6], state[7], state[8]


@lazy_inline
def store_head(state, n, mean, var, mn, mx, left, ssum, hsum, hsq):  # pragma: no cover - compiled
    state[0], state[1], state[2], state[3], state[4] = n, mean, var, mn, mx
    state[5], state[6], state[7], state[8] = float(left), ssum, hsum, hsq


@lazy_inline
def ewma_learn(x, n, mean, var, alpha):  # pragma: no cover - compiled
    """Mean and variance after learning ``x`` (a plain average until ``1/alpha`` readings); reset on overflow."""
    a = max(alpha, 1.0 / (n + 1.0))
    d = x - mean
    mean = mean + a * d
    var = (1.0 - a) * (var + a * d * d)
    if not (math.isfinite(mean) and math.isfinite(var)):
        mean, var = x, 0.0
    return mean, var


@lazy_inline
def surprise_z(dev, sd, mean):  # pragma: no cover - compiled
    """|dev| in standard deviations, the deviation floored relative to the level; NaN counts as huge."""
    z = abs(dev) / (sd + 1e-9 * max(1.0, abs(mean)))
    if math.isnan(z):
        z = 1e300
    return z


@lazy_inline
def gauss_tail(z):  # pragma: no cover - compiled
    """Two-sided Gaussian probability of a value being less surprising than ``z``."""
    return 1.0 - math.erfc(z / _SQRT2)


@lazy_inline
def likelihood_step(state, short_at, hist_at, K, H, k, raw, ready, ssum, hsum, hsq):  # pragma: no cover - compiled
    """HTM's anomaly likelihood: how unusual the average of the last ``K`` surprises is against the last ``H``
    such averages (scored only when ``ready``). Returns the likelihood and the updated running sums."""
    slot = short_at + k % K
    ssum += raw - state[slot]
    state[slot] = raw
    avg = ssum / min(k + 1, K)
    lik = 0.0
    if ready:
        cnt = min(k, H)
        mu = hsum / cnt
        sd = math.sqrt(max(hsq / cnt - mu * mu, 1e-8))
        lik = 1.0 - 0.5 * math.erfc((avg - mu) / sd / _SQRT2)
    hslot = hist_at + k % H
    if k >= H:
        old = state[hslot]
        hsum -= old
        hsq -= old * old
    state[hslot] = avg
    hsum += avg
    hsq += avg * avg
    return lik, ssum, hsum, hsq


@lazy_inline
def is_novel(x, mn, mx, tol):  # pragma: no cover - compiled
    """Beyond the range seen so far by more than ``tol`` of its width."""
    rng = mx - mn
    return x > mx + tol * rng or x < mn - tol * rng


@lazy_inline
def range_learn(k, x, mn, mx):  # pragma: no cover - compiled
    if k == 0:
        return x, x
    return min(mn, x), max(mx, x)


@lazy_inline
def window_reach(x, state, win_at, W):  # pragma: no cover - compiled
    """How far ``x`` is from the farther extreme of the window of the last ``W`` readings: a bound on its
    distance from the window's median, so a small reach rules out a spike without sorting."""
    wlo, whi = state[win_at], state[win_at]
    for j in range(1, W):
        wlo, whi = min(wlo, state[win_at + j]), max(whi, state[win_at + j])
    return max(abs(x - wlo), abs(x - whi))


@lazy_inline
def mad_deviation(x, state, win_at, W, buf, sd_long, floor_frac):  # pragma: no cover - compiled
    """``(|x - median|, robust sigma)`` against the window; the sigma is the MAD, floored at ``floor_frac``
    long-run standard deviations so that quantised or flat series do not fire on every step."""
    for j in range(W):
        buf[j] = state[win_at + j]
    med = np.median(buf)
    for j in range(W):
        buf[j] = abs(buf[j] - med)
    sc = max(1.4826 * np.median(buf), floor_frac * sd_long, 1e-9 * max(1.0, abs(med)))
    return abs(x - med), sc


@lazy_inline
def spike_rate_learn(ex, rate, prev_ex, rate_a):  # pragma: no cover - compiled
    """Count a new spike episode (a spike after a non-spike) into the decaying episode rate."""
    if ex and prev_ex == 0.0:
        rate += rate_a
    return rate, 1.0 if ex else 0.0


@lazy_inline
def hold_alarm(s, spiked, left, tau, hold, damp):  # pragma: no cover - compiled
    """Damp the ``hold`` scores after an alarm (one incident, one alarm); a spike scores ``SURE`` regardless."""
    if left > 0:
        left -= 1
        s *= damp
    elif s >= tau:
        left = hold
    if spiked:
        s = SURE
        if left == 0:
            left = hold
    return min(max(s, 0.0), 1.0), left
