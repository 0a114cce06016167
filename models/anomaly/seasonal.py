"""``robust`` with a time-of-day context: surprise measured against what this slot of the day usually reads.

Why: many operational series follow a daily (or weekly) cycle, and their incidents are *contextual*: a
value that is normal for the series overall but wrong for the hour (a cycle that stops, a flat stretch, a
busy night). The global EWMA behind ``robust`` cannot see those. Here each reading's slot of the period
(``timestamp mod period``, at the series' own sampling step) keeps an
EWMA of its value, for a day and for a week (``period2_ms``; weekday traffic is not weekend traffic), and
whichever of the two has been predicting better lately speaks. The prediction error against that slot (scaled by a winsorised residual variance, so
an incident does not teach the detector to expect itself) feeds its own likelihood layer, whose score
replaces the global one whenever the seasonal model has been predicting clearly better lately (EWMA
squared error below ``ratio`` times the global one); series without a cycle behave like ``robust``. A
series sampled too finely for the period (more than ``slots`` steps per period) has no seasonal context.
The seasonal surprise is the Gaussian tail of ``z / zscale``: unscaled, ordinary daily transitions
saturate it and the likelihood layer can no longer tell an incident from a busy hour.

The sampling step is the first gap between timestamps; while that step gives no usable cycle, a majority vote
among the gaps may replace it (``STEP_VOTES``), so a device that starts with a reconnect burst (readings a
second apart, then every 5 minutes) still gets its daily table. A step that already gives a cycle is kept:
the slots are bins of time of day, so later jitter, gaps or a changed rate only change how often a slot is
visited.

A stuck sensor is a run of ``stuck`` equal readings on a series that has varied, longer than every run it made
before (``run_max``, the longest finished run, read from the window of the last ``window`` readings): it alarms
once, like a spike. Series that hold values routinely (duty cycles, counters at zero, square waves) learn their
runs and do not alarm on them; a run as long as the window is always routine. The rule is off unless ``stuck``
is set (16 suits frozen fleet sensors): cross-validation on the NAB dev files chose it off.

A count series (every reading so far a non-negative whole number: requests, events) is judged in Anscombe's
variance-stabilising view, ``2 sqrt(x + 3/8)``, where Poisson noise has a standard deviation of about 1,
whenever the window's own noise there is Poisson-like (robust sigma at most ``counts``) and its median is at
least a count of 1. Its spike test then reads the median of the last ``COUNT_RECENT`` readings, in standard
errors of that median, against the window's median: a burst of a few readings, however tall, does not move it
(routine for a request counter), while an outage of zeros or a sustained higher rate does, within
``COUNT_RECENT`` readings. Other series, and counts with wider noise (large counters such as taxi rides per
half hour), keep the rule below. ``count_n`` counts the readings since the start that were whole and
non-negative; the series is a count series while it equals ``n``.

The spike rule is ``robust``'s, made adaptive in two ways (both measured on NAB, BENCHMARKS-nab.md):
a spike alarms only when it is bigger than every spike of the recent past (the largest robust z seen,
decaying by ``spike_decay`` per reading), and, on a seasonal series, not when a spike already happened
at about the same time of day (one of ``spike_bins`` bins of the period, or a neighbour) within the last
``spike_recall`` periods: a nightly batch job's CPU spike is routine, not news.

State: the shared scalars (``_steps.HEAD``) and ``SCALARS`` (``run_max`` and then ``count_n`` appended in session 6:
an older snapshot restores with those it lacks at 0, so a restored count series keeps the old spike rule);
buffers: the global likelihood layer's (short, hist), the last ``window`` readings, and, only once the sampling
step is known and gives a period between 4 and ``slots`` steps, the seasonal ones: an EWMA per slot of each such
period (``slot_mean``, ``slot_mean2``, sized to the series' own step) with a bit set of the slots seen, the
seasonal likelihood layer's (s_short, s_hist) and the time of the last spike per bin (``spike_bins``). A series
without a cycle keeps about 1.9 KB; one sampled every 5 minutes, with a daily and a weekly table, about 24 KB.
"""

from __future__ import annotations

import math

import numpy as np

from models.anomaly._array import (
    ArrayDetector,
    check_at_least,
    check_fraction,
    check_positive,
    check_rates,
    fields,
    kernel_fields,
    likelihood_buffers,
)
from models.anomaly._jit import lazy_inline, lazy_njit
from models.anomaly._steps import (
    HEAD,
    SURE,
    bit_words,
    history_rows,
    ewma_learn,
    gauss_tail,
    hold_alarm,
    is_novel,
    likelihood_step,
    load_head,
    lower_middle,
    mad_deviation,
    middle,
    part,
    range_learn,
    spike_rate_learn,
    store_head,
    surprise_z,
    upper_middle,
    window_reaches,
)

SCALARS = (*HEAD, "rate", "prev_ex", "nrate", "step", "res_var", "seas_err", "glob_err", "prev_ts", "res_n", "s_ssum",
           "s_hsum", "s_hsq", "s_n", "zmax", "res_var2", "seas_err2", "res_n2", "run_max", "count_n")
SEASONAL_BUFFERS = ("slot_mean", "slot_seen", "slot_mean2", "slot_seen2", "s_short", "s_hist", "spike_last")
BUFFERS = ("short", "hist", "window", *SEASONAL_BUFFERS)
PARAMS = ("alpha", "tol", "tau", "damp", "short", "history", "history_block", "hold", "warmup", "window", "spike",
          "floor", "rate_alpha", "rate_max", "novelty_alpha", "novelty_max", "period_ms", "slots", "slot_alpha",
          "ratio", "err_alpha", "clip", "mode", "zscale", "spike_decay", "spike_margin", "spike_bins", "spike_recall",
          "period2_ms", "stuck", "counts")
PARAM, STATE = kernel_fields(PARAMS, BUFFERS), fields("STATE", SCALARS)
ADDED_SCALARS = ("run_max", "count_n")
"""Appended in session 6 (``ArrayDetector.appended``): snapshots without them restore with them at 0. State
version 2 did not name its layout, and three were written: session 5's (26 scalars, neither), session 6 round
4's (27, no ``count_n``) and round 5's (28); version 2 restores at exactly those sizes."""
ANSCOMBE_ONE = 2.0 * math.sqrt(1.375)  # a count of 1: below it the window is mostly zeros, no rate to stabilise
COUNT_RECENT = 15  # readings in a count series' recent median: bursts of up to 7 do not move it
COUNT_SE = math.sqrt(COUNT_RECENT) / 1.2533  # sigmas per standard error of that median (Gaussian efficiency)
STEP_VOTES = 8  # a step without a cycle gives way to a gap that leads the vote by this many
ZMAX_CAP = 1e6
"""The largest spike the spike rule remembers, in robust sigmas. A glitch reading near the float limit (1e300,
DBL_MAX as 'no data') is a z of 1e301 or infinite, which held the bar above every later spike for years (the
memory decays by ``spike_decay`` per reading) or, infinite, for good; from the cap it is back to ``spike`` within
about 5,800 readings (a state saved with an infinite one heals too). NAB's result files are unchanged by it."""


@lazy_inline
def cycle_slots(period, step, slots):  # pragma: no cover - compiled
    """Steps of ``step`` per ``period`` if that is a usable cycle (4 to ``slots`` steps), else 0."""
    ns = int(period / step + 0.5) if step > 0.0 else 0
    return ns if 4 <= ns <= slots else 0


@lazy_inline
def step_vote(gap, cand, votes):  # pragma: no cover - compiled
    """Boyer-Moore majority vote among sampling gaps, a gap within a factor 1.5 of the candidate agreeing."""
    if votes <= 0.0:
        return gap, 1.0
    if cand / 1.5 <= gap <= cand * 1.5:
        return cand, votes + 1.0
    return cand, votes - 1.0


@lazy_inline
def run_length(x, window, W, k):  # pragma: no cover - compiled
    """Readings in the run of ``x`` that reading ``k`` extends: 1 plus the readings before it equal to it, from the
    ring ``window`` (reading ``j`` at ``j % W``), so at most ``W + 1``."""
    run = 1
    for j in range(1, min(k, W) + 1):
        if window[(k - j) % W] != x:
            break
        run += 1
    return run


@lazy_inline
def is_count(x):  # pragma: no cover - compiled
    """A non-negative whole number: what an event or request counter reads."""
    return math.isfinite(x) and x >= 0.0 and x == math.floor(x)


@lazy_inline
def anscombe(x):  # pragma: no cover - compiled
    """Anscombe's variance-stabilising view of a count: Poisson noise has standard deviation about 1 in it."""
    return 2.0 * math.sqrt(x + 0.375)


@lazy_inline
def middle_of(a, n):  # pragma: no cover - compiled
    """``middle`` of ``a[:n]`` in Anscombe's view, selected on the raw readings (the view keeps their order)."""
    m = anscombe(lower_middle(a, n))
    return m if n % 2 == 1 else (m + anscombe(upper_middle(a, n))) / 2.0


@lazy_inline
def count_deviation(x, window, W, k, buf, sbuf):  # pragma: no cover - compiled
    """``(|recent median - median|, median)`` of the window in Anscombe's view: the recent median is that of the
    last ``sbuf.shape[0]`` readings, ``x`` included, so a burst shorter than half of them does not move it. The
    view is monotone, so both are medians of the raw readings, transformed."""
    for j in range(W):
        buf[j] = window[j]
    med = middle_of(buf, W)
    Q = sbuf.shape[0]
    sbuf[0] = x
    for j in range(1, Q):
        sbuf[j] = window[(k - j) % W]
    return abs(middle_of(sbuf, Q) - med), med


@lazy_inline
def count_sigma(window, W, med, buf):  # pragma: no cover - compiled
    """Robust sigma of the window in Anscombe's view around its median ``med``, unfloored: about 1 when the
    window's noise is Poisson's."""
    for j in range(W):
        buf[j] = abs(anscombe(window[j]) - med)
    return 1.4826 * middle(buf, W)


def _seasonal_kernel(values, timestamps, start, params, scalars, mem, out):  # pragma: no cover - compiled
    p, st = params, scalars
    short, hist, window = part(mem, p, PARAM.at_short), part(mem, p, PARAM.at_hist), part(mem, p, PARAM.at_window)
    slot_mean, slot_seen = part(mem, p, PARAM.at_slot_mean), part(mem, p, PARAM.at_slot_seen).view(np.int64)
    slot_mean2, slot_seen2 = part(mem, p, PARAM.at_slot_mean2), part(mem, p, PARAM.at_slot_seen2).view(np.int64)
    s_short, s_hist = part(mem, p, PARAM.at_s_short), part(mem, p, PARAM.at_s_hist)
    spike_last = part(mem, p, PARAM.at_spike_last)
    alpha, tol, tau, damp = p[PARAM.alpha], p[PARAM.tol], p[PARAM.tau], p[PARAM.damp]
    K, H, B, hold = int(p[PARAM.short]), int(p[PARAM.history]), int(p[PARAM.history_block]), int(p[PARAM.hold])
    warm, W, kspike, floor_frac = p[PARAM.warmup], int(p[PARAM.window]), p[PARAM.spike], p[PARAM.floor]
    rate_a, rate_max = p[PARAM.rate_alpha], p[PARAM.rate_max]
    nov_a, nov_max = p[PARAM.novelty_alpha], p[PARAM.novelty_max]
    period, S, alpha_s = p[PARAM.period_ms], int(p[PARAM.slots]), p[PARAM.slot_alpha]
    ratio, err_a = p[PARAM.ratio], p[PARAM.err_alpha]
    clip, mode, zscale = p[PARAM.clip], p[PARAM.mode], p[PARAM.zscale]
    zdecay, zmargin = p[PARAM.spike_decay], p[PARAM.spike_margin]
    NB, recall, period2 = int(p[PARAM.spike_bins]), p[PARAM.spike_recall], p[PARAM.period2_ms]
    M = 2 if period2 > 0 else 1
    R, cmax = int(p[PARAM.stuck]), p[PARAM.counts]
    slots_m = np.empty(2, dtype=np.int64)
    zmax, run_max, count_n = st[STATE.zmax], st[STATE.run_max], st[STATE.count_n]
    n, mean, var, mn, mx, left, ssum, hsum, hsq = load_head(scalars)
    rate, prev_ex, nrate = st[STATE.rate], st[STATE.prev_ex], st[STATE.nrate]
    step, glob_err, prev_ts = st[STATE.step], st[STATE.glob_err], st[STATE.prev_ts]
    s_ssum, s_hsum, s_hsq, s_n = st[STATE.s_ssum], st[STATE.s_hsum], st[STATE.s_hsq], st[STATE.s_n]
    buf, sbuf = np.empty(W), np.empty(min(COUNT_RECENT, W))
    stop = values.shape[0]
    for i in range(start, values.shape[0]):
        x = values[i]
        ts = float(timestamps[i])
        k = int(n)
        if k >= 1 and ts > prev_ts and s_short.shape[0] == 0:
            # the first gap is the step; while it gives no cycle, a majority vote among the gaps (kept in the
            # seasonal likelihood's sums, unused until then) may replace it: a reconnect burst is not the rate
            s_ssum, s_hsum = step_vote(ts - prev_ts, s_ssum, s_hsum)
            if step == 0.0 or (s_hsum >= STEP_VOTES and s_ssum != step):
                step = s_ssum
            if cycle_slots(period, step, S) + cycle_slots(period2, step, S) > 0:
                s_ssum, s_hsum = 0.0, 0.0
                stop = i  # the seasonal buffers are allocated for this step, then reading i is scored
                break
        prev_ts = ts
        seasonal = cycle_slots(period, step, S) > 0
        sd_long = math.sqrt(var)
        run = run_length(x, window, W, k) if R > 0 and var > 0.0 else 0
        if run == 1 and k >= 2:  # a run just ended: the longest so far is what this series does routinely
            run_max = max(run_max, float(run_length(window[(k - 1) % W], window, W, k - 1)))
        stuck = run == max(R, run_max + 1) and run_max < W
        z = surprise_z(x - mean, sd_long, mean) if k >= 2 else 0.0
        gerr = (x - mean) * (x - mean) if k >= 2 else 0.0
        best_z, best_err, best_ns, any_warm = -1.0, 1e300, 0, False
        for m in range(M):
            ns = cycle_slots(period if m == 0 else period2, step, S)
            slots_m[m] = -1
            if ns == 0:
                continue
            sl = int((ts % (period if m == 0 else period2)) / step)
            if sl >= ns:
                sl = ns - 1
            slots_m[m] = sl
            seen = slot_seen if m == 0 else slot_seen2
            if (seen[sl >> 6] >> (sl & 63)) & 1 == 0:
                continue
            r = x - (slot_mean if m == 0 else slot_mean2)[sl]
            if m == 0:
                rv, rn, se = st[STATE.res_var], st[STATE.res_n], st[STATE.seas_err]
            else:
                rv, rn, se = st[STATE.res_var2], st[STATE.res_n2], st[STATE.seas_err2]
            if rn >= ns and k >= 2:
                zs = surprise_z(r, math.sqrt(rv), mean)
                if se < best_err:
                    best_z, best_err, best_ns = zs, se, ns
                if math.isfinite(r * r):
                    se += err_a * (r * r - se)
                any_warm = True
            a_r = max(err_a, 1.0 / (rn + 1.0))
            rc = r * r
            if rn >= ns and rc > clip * clip * rv:
                rc = clip * clip * rv
            if math.isfinite(rc):
                rv = rv + a_r * (rc - rv)
            if m == 0:
                st[STATE.res_var], st[STATE.res_n], st[STATE.seas_err] = rv, rn + 1.0, se
            else:
                st[STATE.res_var2], st[STATE.res_n2], st[STATE.seas_err2] = rv, rn + 1.0, se
        s_lik, replace = 0.0, False
        if best_z >= 0.0:
            kk = int(s_n)
            replace = best_err < ratio * glob_err
            ready = kk >= best_ns and (replace or mode == 1)
            s_lik, s_ssum, s_hsum, s_hsq = likelihood_step(s_short, s_hist, K, H, B, kk, gauss_tail(best_z / zscale),
                                                           ready, s_ssum, s_hsum, s_hsq)
            s_n += 1.0
        if any_warm and math.isfinite(gerr):
            glob_err += err_a * (gerr - glob_err)
        s, ssum, hsum, hsq = likelihood_step(short, hist, K, H, B, k, gauss_tail(z), min(k, H) >= 10,
                                             ssum, hsum, hsq)
        if mode == 0 and s_lik > 0.0 and replace:
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
                zmax = min(zmax * zdecay, ZMAX_CAP)
                zr = -1.0
                reach = window_reaches(x, window, W, kspike * max(floor_frac * sd_long, 1e-9))
                if cmax > 0.0 and count_n == n:  # a count series with Poisson-like noise: judged in Anscombe's view
                    dev, med = count_deviation(x, window, W, k, buf, sbuf)
                    # below both bars and past no raw reach, neither view would act: skip the sigma
                    if med >= ANSCOMBE_ONE and (reach or COUNT_SE * dev >= min(kspike, zmax)):
                        sc = count_sigma(window, W, med, buf)
                        if sc <= cmax:
                            zr = COUNT_SE * dev / max(sc, 1.0)
                if zr < 0.0 and reach:
                    dev, sc = mad_deviation(x, window, W, buf, sd_long, floor_frac)
                    zr = dev / sc
                if zr >= 0.0:
                    ex = zr >= kspike
                    bigger = zr > zmargin * zmax
                    zmax = max(zmax, zr)
                spiked = ex and rate < rate_max and bigger
                if ex and seasonal and NB > 0:
                    b = int((ts % period) / period * NB)
                    for db in range(-1, 2):
                        last = spike_last[(b + db) % NB]
                        if last > 0.0 and 0.0 <= ts - last <= recall * period:  # none from a clock gone ahead
                            spiked = False
                    spike_last[b] = ts
                rate, prev_ex = spike_rate_learn(ex, rate, prev_ex, rate_a)
            rate *= 1.0 - rate_a
            spiked = spiked or stuck
        else:
            s = 0.0
        nrate += nov_a * ((1.0 if novel else 0.0) - nrate)
        out[i], left = hold_alarm(s, spiked, left, tau, hold, damp)
        window[k % W] = x
        for m in range(M):
            sl = slots_m[m]
            if sl >= 0:
                tab = slot_mean if m == 0 else slot_mean2
                seen = slot_seen if m == 0 else slot_seen2
                if (seen[sl >> 6] >> (sl & 63)) & 1 == 0:
                    tab[sl] = x
                    seen[sl >> 6] |= 1 << (sl & 63)
                elif math.isfinite(tab[sl] + alpha_s * (x - tab[sl])):
                    tab[sl] = tab[sl] + alpha_s * (x - tab[sl])
        mn, mx = range_learn(k, x, mn, mx)
        mean, var = ewma_learn(x, n, mean, var, alpha)
        if count_n == n and is_count(x):
            count_n += 1.0
        n += 1.0
    store_head(scalars, n, mean, var, mn, mx, left, ssum, hsum, hsq)
    st[STATE.rate], st[STATE.prev_ex], st[STATE.nrate] = rate, prev_ex, nrate
    st[STATE.step], st[STATE.glob_err], st[STATE.prev_ts] = step, glob_err, prev_ts
    st[STATE.s_ssum], st[STATE.s_hsum], st[STATE.s_hsq], st[STATE.s_n] = s_ssum, s_hsum, s_hsq, s_n
    st[STATE.zmax], st[STATE.run_max], st[STATE.count_n] = zmax, run_max, count_n
    return stop


class SeasonalDetector(ArrayDetector):
    """Defaults are the one parameter set scored on NAB and on the simulator (no per-series tuning).

    Parameters
    ----------
    alpha, short, history, history_block, tol, tau, hold, damp, warmup, threshold
        As in ``LikelihoodDetector``.
    window, spike, floor, rate_alpha, rate_max, novelty_alpha, novelty_max
        As in ``RobustLikelihoodDetector``.
    period_ms
        The first period (a day).
    slots
        Most slots a period may have: a series sampled more finely has no seasonal context for it.
    slot_alpha
        EWMA rate of each slot's mean.
    ratio
        The seasonal score speaks when its recent squared error is below ``ratio`` times the global one.
    err_alpha
        EWMA rate of those errors and of the residual variance.
    clip
        Residuals are winsorised at this many standard deviations before they teach the variance.
    mode
        0: the seasonal likelihood replaces the global one when it is ready; 1: the larger of the two.
    zscale
        The seasonal surprise is the Gaussian tail of ``z / zscale``.
    spike_decay
        Per-reading decay of the largest recent spike.
    spike_margin
        A spike alarms only when larger than ``spike_margin`` times that largest recent spike.
    spike_bins
        Bins of the period for remembering when spikes happened.
    spike_recall
        Periods over which a spike at the same time of the period (or a neighbouring bin) is routine.
    period2_ms
        The second period (a week); 0 for none.
    stuck
        A run of this many equal readings alarms (a stuck or flat-lining sensor) on a series that has varied,
        when it is longer than every run the series made before (runs it makes routinely are not news);
        at most ``window + 1``; 0 (the default): off. 16 catches frozen sensors, but cost the dev files'
        cross-validated score 0.24 (three first runs of zeros alarmed), so by the rule that defaults are chosen
        by CV it is an option (BENCHMARKS-nab.md, round 4).
    counts
        A count series' spike test uses Anscombe's view while the window's robust sigma there is at most this
        (Poisson noise: about 1); 0: off. The dev files score as without it (BENCHMARKS-nab.md, round 5).

    Examples
    --------
    A series sampled every 5 minutes gets a daily (288 slots) and a weekly (2016 slots) table once its
    step is known; one sampled every second gets none:

    >>> import numpy as np
    >>> det = SeasonalDetector()
    >>> _ = det.score_learn(np.ones(3), np.arange(3) * 300_000)
    >>> [det._views()[b].shape for b in ("slot_mean", "slot_mean2")]
    [(288,), (2016,)]
    >>> fine = SeasonalDetector()
    >>> _ = fine.score_learn(np.ones(3), np.arange(3) * 1_000)
    >>> fine.state_nbytes() <= 4096
    True
    """

    name = "seasonal"
    kernel = lazy_njit(_seasonal_kernel)
    kernel_params = PARAMS
    scalars = SCALARS
    buffers = BUFFERS
    appended = ADDED_SCALARS

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
        stuck: int = 0,
        counts: float = 2.0,
        history_block: int = 100,
        threshold: float = 0.999,
    ) -> None:
        check_rates(alpha=alpha, rate_alpha=rate_alpha, novelty_alpha=novelty_alpha, slot_alpha=slot_alpha,
                    err_alpha=err_alpha)
        check_at_least(1, short=short, history_block=history_block)
        check_at_least(10, history=history)
        check_at_least(3, window=window)
        check_at_least(0, stuck=stuck, counts=counts)
        if stuck > window + 1:
            raise ValueError(f"stuck ({stuck}) must be at most window + 1 ({window + 1}): runs are read from the "
                             "window; pass a smaller stuck or a larger window")
        check_at_least(4, slots=slots)
        check_positive(period_ms=period_ms)
        check_at_least(0, tol=tol, hold=hold, spike=spike, floor=floor, rate_max=rate_max, novelty_max=novelty_max,
                       ratio=ratio)
        check_fraction(damp=damp)
        self._configure(locals())

    def _buffer_shapes(self) -> dict[str, tuple[str, tuple[int, ...]]]:
        shapes = {**likelihood_buffers(self.short, self.history, self.history_block), "window": ("<f8", (self.window,))}
        ns, ns2 = self._cycles(float(self._s[STATE.step]))
        cycle = ns + ns2 > 0
        seasonal = {
            "slot_mean": ("<f8", (ns,)),
            "slot_seen": ("<i8", (bit_words(ns),)),
            "slot_mean2": ("<f8", (ns2,)),
            "slot_seen2": ("<i8", (bit_words(ns2),)),
            "s_short": ("<f8", (self.short if cycle else 0,)),
            "s_hist": ("<f8", (history_rows(self.history, self.history_block) if cycle else 0, 2)),
            "spike_last": ("<f8", (self.spike_bins if ns else 0,)),
        }
        return {**shapes, **seasonal}

    def _cycles(self, step: float) -> tuple[int, int]:
        """Slots of the first and the second period at sampling step ``step`` (0: no usable cycle)."""
        return (cycle_slots.py_func(float(self.period_ms), step, self.slots),
                cycle_slots.py_func(float(self.period2_ms), step, self.slots))

    def _grow(self) -> None:
        """The series' step was just learnt and gives a cycle: allocate the seasonal buffers for it."""
        kept = {name: view.copy() for name, view in self._views(["short", "hist", "window"]).items()}
        shapes = self._buffer_shapes()
        self._set_buffers({**kept, **{name: np.zeros(shapes[name][1], shapes[name][0]) for name in SEASONAL_BUFFERS}})
