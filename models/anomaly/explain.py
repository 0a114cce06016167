"""Why a reading alarmed, read from the detector's own state at that moment: no second model.

The scoring kernels stay as they are (arrays in, scores out, nothing extra on the hot path). To explain
reading ``i`` of a batch, ``score_explained`` keeps a copy of the detector's state from before the batch
(one copy of a few kilobytes per batch) and, only when asked, replays the batch up to ``i`` on a scratch
detector and reads the rule that fired from that state: the same tests the kernel makes (the robust spike
test, range novelty, the seasonal slot), plus a flat-line check on the recent readings. Scores come from the
unchanged ``score_learn`` on the real detector, so explaining never changes a score.

The rules, tried in this order (the first that holds names the alert):

- ``spike``: the reading is at least ``spike`` robust sigmas from the median of the recent window;
  expected is that median, the band median +- ``spike`` sigmas (the rule's own limit).
- ``novelty``: beyond the range seen so far by more than ``tol`` of its width; the band is that range.
- ``flat_line``: the last ``FLAT_READINGS`` readings (this one included) barely move (their spread is under
  ``FLAT_FRACTION`` of the series' usual sigma) while the series normally varies.
- ``seasonal_break``: the series has a usable daily/weekly cycle and the reading is further from what this
  slot of the cycle usually reads (in the slot residual's sigmas) than from the overall level.
- ``level_shift``: otherwise: the recent readings as a whole moved away from the level (the likelihood
  layer's alarm).

For all but ``spike`` and ``novelty`` the band is expected +- ``BAND_SIGMAS`` sigmas. ``deviation`` is
|reading - expected| in the rule's sigma: the window's MAD (floored as the detector floors it) for
detectors with a window, the slot residual's sigma for ``seasonal_break``, the EWMA's otherwise.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

import numpy as np

from models.anomaly._array import ArrayDetector
from models.anomaly.base import AnomalyDetector

RULES = ("spike", "level_shift", "seasonal_break", "flat_line", "novelty")
BAND_SIGMAS = 3.0  # the "normal" band drawn around the expected value
CONTEXT = 16  # readings before the alarming one (and it) shown as context
FLAT_READINGS = 8
FLAT_FRACTION = 0.05
_FLOAT_MAX = sys.float_info.max


@dataclass(frozen=True)
class Explanation:
    """Why one reading alarmed.

    Parameters
    ----------
    rule
        One of ``RULES``.
    expected
        What the detector expected at that moment.
    lower, upper
        The band of normal readings at that moment.
    deviation
        |reading - expected| in robust standard deviations.
    context
        The recent readings that led to it, oldest first, ending with the alarming one.
    """

    rule: str
    expected: float
    lower: float
    upper: float
    deviation: float
    context: list[float]

    def as_record(self) -> dict[str, Any]:
        """The ``explanation`` field of an ``alert`` event (schema v2); built directly, as ``dataclasses.asdict``
        deep-copies every field (a fifth of the cost of an alert)."""
        return {"rule": self.rule, "expected": self.expected, "lower": self.lower, "upper": self.upper,
                "deviation": self.deviation, "context": list(self.context)}


class BatchExplainer:
    """Explains readings of one scored batch on demand, replaying it from the state before the batch.

    Indices asked in increasing order cost one replay of the batch in all; an earlier index restarts it.
    Made by ``score_explained``.

    Parameters
    ----------
    detector
        The detector that scored the batch (only its type and parameters are used; it is never changed).
    before
        Its parameter vector (shared: nothing changes one in place), scalars and buffer block from before the
        batch; ``None`` if it has no explainer.
    values, timestamps
        The batch as scored.
    """

    def __init__(self, detector: AnomalyDetector, before: tuple[np.ndarray, np.ndarray, np.ndarray] | None,
                 values: np.ndarray, timestamps: np.ndarray) -> None:
        self._detector, self._before = detector, before
        self._values, self._timestamps = values, timestamps
        self._scratch: ArrayDetector | None = None
        self._at = 0

    def at(self, index: int) -> Explanation | None:
        """The explanation of reading ``index`` of the batch; ``None`` for a detector that has none.

        Parameters
        ----------
        index
            A position in the batch, usually one whose score alarmed.
        """
        if self._before is None or type(self._detector) not in _EXPLAINERS:
            return None
        if self._scratch is None or index < self._at:
            scratch = object.__new__(type(self._detector))  # its parameters, without a constructor's checks
            scratch.__dict__.update(vars(self._detector))
            p, st, mem = self._before
            scratch._p, scratch._s, scratch._mem = p, st.copy(), mem.copy()  # p is never changed in place
            self._scratch, self._at = scratch, 0
        if index > self._at:
            self._scratch.score_learn(self._values[self._at : index], self._timestamps[self._at : index])
            self._at = index
        before = self._values[max(0, index - CONTEXT) : index]
        return _EXPLAINERS[type(self._detector)](self._scratch, float(self._values[index]),
                                                 float(self._timestamps[index]), before)


def score_explained(detector: AnomalyDetector, values: Any, timestamps: Any) -> tuple[np.ndarray, BatchExplainer]:
    """``detector.score_learn`` plus a ``BatchExplainer`` for the batch (the scores are exactly score_learn's).

    Parameters
    ----------
    detector
        Any detector; those without an explainer (river's HalfSpaceTrees) explain as ``None``.
    values, timestamps
        The batch, as for ``score_learn``.

    Examples
    --------
    >>> import numpy as np
    >>> from models.anomaly import make_detector
    >>> rng = np.random.default_rng(0)
    >>> values = np.r_[rng.normal(0.0, 1.0, 500), 25.0]
    >>> scores, why = score_explained(make_detector("robust"), values, np.arange(501) * 1000)
    >>> e = why.at(500)
    >>> bool(scores[500] >= 0.999), e.rule, abs(e.expected) < 0.3, len(e.context)
    (True, 'spike', True, 17)
    """
    before = None
    if isinstance(detector, ArrayDetector):
        before = (detector._p, detector._s.copy(), detector._mem.copy())  # p is never changed in place
    scores = detector.score_learn(values, timestamps)  # validates the batch: the explainer trusts it from here on
    return scores, BatchExplainer(detector, before, np.asarray(values, dtype=np.float64),
                                  np.asarray(timestamps, dtype=np.int64))


def _window(det: ArrayDetector, n: int) -> np.ndarray:
    """The detector's recent-readings ring, oldest first (only the filled part)."""
    w = det._flat("window")
    size = w.shape[0]
    if n < size:
        return w[:n].copy()
    k = n % size
    return np.concatenate((w[k:], w[:k]))  # np.roll's result, without its generic path


def _median(x: np.ndarray) -> float:
    """``np.median`` of a small finite array, to the bit (the middle value, or the mean of the two middle ones),
    without its generic machinery, which costs several times the sort on a window of readings."""
    s = np.sort(x)
    m = s.shape[0] // 2
    if s.shape[0] % 2:
        return float(s[m])
    with np.errstate(over="ignore"):  # near the float limit the sum overflows: the halves are taken instead
        mid = float((s[m - 1] + s[m]) / 2.0)
    return mid if math.isfinite(mid) else float(s[m - 1] / 2.0 + s[m] / 2.0)  # two readings near the float limit


def _robust_sigma(window: np.ndarray, sd_long: float, floor: float) -> tuple[float, float]:
    """The window's median and MAD sigma, floored as ``_steps.mad_deviation`` floors it."""
    med = _median(window)
    with np.errstate(over="ignore"):  # readings near the float limit: an infinite spread, bounded by the caller
        spread = np.abs(window - med)
    sc = max(1.4826 * _median(spread), floor * sd_long, 1e-9 * max(1.0, abs(med)))
    return med, sc


def _bounded(v: float) -> float:
    """``v`` within the finite doubles: near the float limit a band or a deviation overflows, and an alert's
    explanation is read by people and JSON encoders, which take no infinity."""
    return min(max(float(v), -_FLOAT_MAX), _FLOAT_MAX)


def _make(rule: str, x: float, expected: float, sigma: float, context: np.ndarray,
          band: tuple[float, float] | None = None) -> Explanation:
    expected, sigma = _bounded(expected), _bounded(sigma)
    lo, hi = band if band is not None else (expected - BAND_SIGMAS * sigma, expected + BAND_SIGMAS * sigma)
    return Explanation(rule, expected, _bounded(lo), _bounded(hi), _bounded(_bounded(abs(x - expected)) / sigma),
                       [*context[-CONTEXT:].tolist(), x])


def _seasonal_expectation(det: ArrayDetector, x: float, ts: float) -> tuple[float, float] | None:
    """The better-predicting warm period's slot mean and residual sigma at ``ts`` (as the kernel picks it)."""
    from models.anomaly.seasonal import STATE

    st = det._s
    step = st[STATE.step]
    if step <= 0.0 or st[STATE.n] < 2:
        return None
    best: tuple[float, float] | None = None
    best_err = 1e300
    for (period, table, seen, rv, rn, se), ns in zip((
        (det.period_ms, "slot_mean", "slot_seen", STATE.res_var, STATE.res_n, STATE.seas_err),
        (det.period2_ms, "slot_mean2", "slot_seen2", STATE.res_var2, STATE.res_n2, STATE.seas_err2),
    ), det._cycles(step)):
        if ns == 0:
            continue
        sl = min(int((ts % period) / step), ns - 1)
        if not (int(det._flat(seen, "<i8")[sl >> 6]) >> (sl & 63)) & 1 or st[rn] < ns or st[se] >= best_err:
            continue
        best_err = st[se]
        best = float(det._flat(table)[sl]), math.sqrt(st[rv]) + 1e-9 * max(1.0, abs(st[STATE.mean]))
    return best


def _explain_windowed(STATE: Any, det: ArrayDetector, x: float, ts: float, batch: np.ndarray) -> Explanation:
    """``robust`` and ``seasonal``: the spike window, the seen range, then the cycle and the level."""
    st = det._s
    n = int(st[STATE.n])
    sd_long = math.sqrt(st[STATE.var])
    window = _window(det, n)
    if window.size == 0:
        return _make("level_shift", x, st[STATE.mean], max(sd_long, 1e-9), window)
    med, sc = _robust_sigma(window, sd_long, det.floor)
    if n >= det.window and abs(x - med) >= det.spike * sc:
        return _make("spike", x, med, sc, window, (med - det.spike * sc, med + det.spike * sc))
    mn, mx = st[STATE.mn], st[STATE.mx]
    rng = mx - mn
    if n >= 1 and (x > mx + det.tol * rng or x < mn - det.tol * rng):
        return _make("novelty", x, med, sc, window, (mn - det.tol * rng, mx + det.tol * rng))
    seasonal = _seasonal_expectation(det, x, ts) if det.name == "seasonal" else None
    recent = np.concatenate((window[-(FLAT_READINGS - 1) :], (x,)))
    usual = max(sd_long, seasonal[1] if seasonal else 0.0)
    if recent.size == FLAT_READINGS and usual > 0 and recent.max() - recent.min() <= FLAT_FRACTION * usual:
        if seasonal is not None:
            return _make("flat_line", x, seasonal[0], seasonal[1], window)
        return _make("flat_line", x, st[STATE.mean], max(sd_long, 1e-9), window)
    if seasonal is not None and abs(x - seasonal[0]) / seasonal[1] > abs(x - st[STATE.mean]) / max(sd_long, 1e-9):
        return _make("seasonal_break", x, seasonal[0], seasonal[1], window)
    return _make("level_shift", x, med, sc, window)


def _explain_ewma(STATE: Any, det: ArrayDetector, x: float, ts: float, batch: np.ndarray) -> Explanation:
    """``likelihood`` and ``gauss``: no window, so the EWMA's mean and sigma (and the seen range); the
    context is what the batch holds before the reading."""
    st = det._s
    mean, sd = st[STATE.mean], max(math.sqrt(st[STATE.var]), 1e-9 * max(1.0, abs(st[STATE.mean])))
    if det.name == "gauss":
        z0 = det.z0
        return _make("spike", x, mean, sd, batch, (mean - z0 * sd, mean + z0 * sd))
    mn, mx = st[STATE.mn], st[STATE.mx]
    rng = mx - mn
    if st[STATE.n] >= 1 and (x > mx + det.tol * rng or x < mn - det.tol * rng):
        return _make("novelty", x, mean, sd, batch, (mn - det.tol * rng, mx + det.tol * rng))
    return _make("level_shift", x, mean, sd, batch)


def _explainers() -> dict[type, Callable[[ArrayDetector, float, float, np.ndarray], Explanation]]:
    from models.anomaly import gauss, likelihood, robust, seasonal

    return {robust.RobustLikelihoodDetector: partial(_explain_windowed, robust.STATE),
            seasonal.SeasonalDetector: partial(_explain_windowed, seasonal.STATE),
            likelihood.LikelihoodDetector: partial(_explain_ewma, likelihood.STATE),
            gauss.GaussianDetector: partial(_explain_ewma, gauss.STATE)}


_EXPLAINERS = _explainers()

__all__ = ["BAND_SIGMAS", "RULES", "BatchExplainer", "Explanation", "score_explained"]
