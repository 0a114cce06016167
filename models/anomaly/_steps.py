"""Compiled steps the array kernels share: the EWMA, the anomaly-likelihood layer, range novelty, the in-place
median, the robust spike test and the alarm hold. Each is ``lazy_njit``: a kernel calls it as compiled code,
and the kernels that share a step share its arithmetic exactly (same operations, same order), so scores agree
bit for bit.

Every likelihood kernel's scalar state vector (``_array.ArrayDetector``) starts with the fields ``HEAD``.
The likelihood layer's long history is kept as block sums (``likelihood_step``), so that it costs a
kilobyte, not ``history`` floats.
"""

from __future__ import annotations

import math
from enum import IntEnum

from models.anomaly._jit import lazy_inline

HEAD = ("n", "mean", "var", "mn", "mx", "left", "ssum", "hsum", "hsq")
_H = IntEnum("_H", [(name, i) for i, name in enumerate(HEAD)])
SURE = 1.0 - 1e-7  # a score that is an alarm at any threshold below 1
_SQRT2 = math.sqrt(2.0)
VAR_MAX = 3.4028234663852886e38
"""float32's largest: an EWMA variance beyond it (a spread of 1.8e19, wider than any counter's int64 range) is a
glitch learnt, such as the 3.4e38 an unplugged float32 sensor sends (variance 1e75: every later deviation hidden
for about 17,000 readings), and the EWMA starts again from the reading, as on overflow."""


@lazy_inline
def load_head(st):  # pragma: no cover - compiled
    return (st[_H.n], st[_H.mean], st[_H.var], st[_H.mn], st[_H.mx], int(st[_H.left]), st[_H.ssum], st[_H.hsum],
            st[_H.hsq])


@lazy_inline
def store_head(st, n, mean, var, mn, mx, left, ssum, hsum, hsq):  # pragma: no cover - compiled
    st[_H.n], st[_H.mean], st[_H.var], st[_H.mn], st[_H.mx] = n, mean, var, mn, mx
    st[_H.left], st[_H.ssum], st[_H.hsum], st[_H.hsq] = float(left), ssum, hsum, hsq


@lazy_inline
def part(mem, p, at):  # pragma: no cover - compiled
    """Buffer ``at`` of ``mem``: from its offset ``p[at]`` to the next buffer's, ``p[at + 1]``."""
    return mem[int(p[at]) : int(p[at + 1])]


@lazy_inline
def ewma_learn(x, n, mean, var, alpha):  # pragma: no cover - compiled
    """Mean and variance after learning ``x`` (a plain average until ``1/alpha`` readings); reset on overflow or
    past ``VAR_MAX``."""
    a = max(alpha, 1.0 / (n + 1.0))
    d = x - mean
    mean = mean + a * d
    var = (1.0 - a) * (var + a * d * d)
    if not (math.isfinite(mean) and var <= VAR_MAX):
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
def likelihood_step(short, blocks, K, H, B, k, raw, ready, ssum, hsum, hsq):  # pragma: no cover - compiled
    """HTM's anomaly likelihood: how unusual the average of the last ``K`` surprises is against the last ``H``
    such averages (scored only when ``ready``). Returns the likelihood and the updated running sums.

    The ``H`` averages are kept as sums and sums of squares of blocks of ``B`` (``blocks``, a ring of
    ``H / B + 1`` (sum, sum of squares) pairs, flat; ``B`` divides ``H``): a value leaving the window takes
    ``1/B`` of its block's sums with it, so the window stays ``H`` long and a whole block leaves exactly.
    Until ``H`` averages were seen nothing leaves, and the sums are exactly those of a full history; after
    that the window's mean and spread are those of the history with each leaving value replaced by its
    block's mean (NAB scores move in the third decimal, BENCHMARKS.md)."""
    slot = k % K
    ssum += raw - short[slot]
    short[slot] = raw
    avg = ssum / min(k + 1, K)
    lik = 0.0
    if ready:
        cnt = min(k, H)
        mu = hsum / cnt
        sd = math.sqrt(max(hsq / cnt - mu * mu, 1e-8))
        lik = 1.0 - 0.5 * math.erfc((avg - mu) / sd / _SQRT2)
    rows = blocks.shape[0] // 2  # H // B + 1: the block leaving is the one after the current, in the ring
    q = k // B
    cur = q % rows
    if k >= H:
        old = 2 * (cur + 1 if cur + 1 < rows else 0)
        hsum -= blocks[old] / B
        hsq -= blocks[old + 1] / B
    cur *= 2
    if k == q * B:
        blocks[cur] = 0.0
        blocks[cur + 1] = 0.0
    blocks[cur] += avg
    blocks[cur + 1] += avg * avg
    hsum += avg
    hsq += avg * avg
    return lik, ssum, hsum, hsq


def bit_words(bits: int) -> int:
    """int64 words of a bit set of ``bits`` bits."""
    return -(-bits // 64)


def history_rows(history: int, block: int) -> int:
    """Rows of the block ring behind a likelihood history of ``history`` averages in blocks of ``block``."""
    if history % block:
        raise ValueError(f"history ({history}) must be a multiple of history_block ({block})")
    return history // block + 1


@lazy_inline
def is_novel(x, mn, mx, tol):  # pragma: no cover - compiled
    """Beyond the range seen so far by more than ``tol`` of its width."""
    pad = tol * (mx - mn)
    return x > mx + pad or x < mn - pad


@lazy_inline
def range_learn(k, x, mn, mx):  # pragma: no cover - compiled
    if k == 0:
        return x, x
    return min(mn, x), max(mx, x)


@lazy_inline
def window_reaches(x, window, W, bar):  # pragma: no cover - compiled
    """Whether ``x`` is at least ``bar`` from the farther extreme of the window of the last ``W`` readings: that
    distance bounds its distance from the window's median, so a short one rules out a spike without sorting.
    The farther extreme is the reading farthest from ``x`` (|x - w| is monotone on each side of ``x``, rounding
    included), so this asks whether any reading is ``bar`` away: compares or-ed together, which vectorise, where
    a running min and max do not (about a tenth of a ``seasonal`` kernel's time on the simulator's series)."""
    hit = False
    for j in range(W):
        hit |= abs(x - window[j]) >= bar
    return hit


@lazy_inline
def lower_middle(a, n):  # pragma: no cover - compiled
    """The lower middle of ``a[:n]`` by Hoare's selection, in place (no copy: the spike rules run it every reading
    they look at); afterwards ``a[k]`` is it, with nothing larger before it and nothing smaller after it."""
    k = (n - 1) // 2
    lo, hi = 0, n - 1
    while lo < hi:
        pivot = a[(lo + hi) // 2]
        i, j = lo, hi
        while i <= j:
            while a[i] < pivot:
                i += 1
            while a[j] > pivot:
                j -= 1
            if i <= j:
                a[i], a[j] = a[j], a[i]
                i += 1
                j -= 1
        if k <= j:
            hi = j
        elif k >= i:
            lo = i
        else:
            break
    return a[k]


@lazy_inline
def upper_middle(a, n):  # pragma: no cover - compiled
    """After ``lower_middle``: the least of ``a`` after the lower middle (the upper middle when ``n`` is even)."""
    k = (n - 1) // 2
    up = a[k + 1]
    for j in range(k + 2, n):
        up = min(up, a[j])
    return up


@lazy_inline
def middle(a, n):  # pragma: no cover - compiled
    """The median of ``a[:n]`` as ``np.median`` gives it, reordering ``a``."""
    m = lower_middle(a, n)
    return m if n % 2 == 1 else (m + upper_middle(a, n)) / 2.0


@lazy_inline
def mad_deviation(x, window, W, buf, sd_long, floor_frac):  # pragma: no cover - compiled
    """``(|x - median|, robust sigma)`` against the window; the sigma is the MAD, floored at ``floor_frac``
    long-run standard deviations so that quantised or flat series do not fire on every step."""
    for j in range(W):
        buf[j] = window[j]
    med = middle(buf, W)
    for j in range(W):
        buf[j] = abs(buf[j] - med)
    sc = max(1.4826 * middle(buf, W), floor_frac * sd_long, 1e-9 * max(1.0, abs(med)))
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
