"""Data drift for one feature: a fixed reference sample against a sliding window of recent values.

Two views, because they fail differently: the population stability index is the industry's habit
(bins from the reference's quantiles, 0.1 "watch", 0.25 "act") and is blind inside a bin; the
two-sample Kolmogorov-Smirnov test sees any change of the distribution function and gives a p-value,
but with large windows flags changes too small to matter. The monitor reports both and declares drift
when PSI passes its threshold or the KS p-value falls under its own.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

_EPS = 1e-4


def psi(reference: np.ndarray, window: np.ndarray, bins: int = 10) -> float:
    """Population stability index of ``window`` against ``reference``, bins at reference quantiles.

    Parameters
    ----------
    reference
        The sample the feature was expected to follow; not empty.
    window
        The recent values; not empty.
    bins
        Quantile bins of the reference (fewer when values repeat).

    Examples
    --------
    >>> import numpy as np
    >>> from models.drift import psi
    >>> rng = np.random.default_rng(0)
    >>> reference = rng.normal(0, 1, 5000)
    >>> round(psi(reference, rng.normal(0, 1, 2000)), 3) < 0.1, round(psi(reference, rng.normal(1, 1, 2000)), 3) > 0.25
    (True, True)
    """
    reference = np.asarray(reference, dtype=np.float64)
    window = np.asarray(window, dtype=np.float64)
    if len(reference) == 0 or len(window) == 0:
        raise ValueError("psi needs a non-empty reference and window")
    edges = np.unique(np.quantile(reference, np.linspace(0, 1, bins + 1)[1:-1]))
    ref_frac = np.bincount(np.searchsorted(edges, reference, side="right"), minlength=len(edges) + 1)
    win_frac = np.bincount(np.searchsorted(edges, window, side="right"), minlength=len(edges) + 1)
    p = np.maximum(ref_frac / len(reference), _EPS)
    q = np.maximum(win_frac / len(window), _EPS)
    return float(np.sum((q - p) * np.log(q / p)))


def ks_test(reference: np.ndarray, window: np.ndarray) -> tuple[float, float]:
    """Two-sample Kolmogorov-Smirnov statistic and p-value.

    Parameters
    ----------
    reference, window
        The two samples.
    """
    from scipy.stats import ks_2samp

    res = ks_2samp(np.asarray(reference, dtype=np.float64), np.asarray(window, dtype=np.float64))
    return float(res.statistic), float(res.pvalue)


@dataclass(frozen=True, slots=True)
class DataDriftResult:
    """One data-drift check of a feature.

    Parameters
    ----------
    psi
        Population stability index of the window against the reference.
    ks, p_value
        Kolmogorov-Smirnov statistic and its p-value.
    drifted
        True when PSI reached its threshold or the p-value fell to its own.
    reference_size, window_size
        How many values each sample held.
    """

    psi: float
    ks: float
    p_value: float
    drifted: bool
    reference_size: int
    window_size: int


class FeatureDriftMonitor:
    """The first ``reference_size`` values form the reference; the last ``window_size`` are compared to it.

    Parameters
    ----------
    reference_size
        Values kept as the reference sample.
    window_size
        Latest values compared with the reference.
    psi_threshold
        Population stability index that counts as drift (0.1 "watch", 0.25 "act").
    p_threshold
        KS p-value at or under which it counts as drift.
    bins
        PSI bins; reference and window must each hold at least this many values.

    Examples
    --------
    >>> import numpy as np
    >>> from models.drift import FeatureDriftMonitor
    >>> monitor = FeatureDriftMonitor(reference_size=1000, window_size=500)
    >>> rng = np.random.default_rng(0)
    >>> monitor.update(rng.normal(0, 1, 1000))
    >>> monitor.check() is None  # the window is not full yet
    True
    >>> monitor.update(rng.normal(0.8, 1, 500))
    >>> monitor.check().drifted
    True
    """

    def __init__(self, reference_size: int = 1000, window_size: int = 500, psi_threshold: float = 0.25,
                 p_threshold: float = 1e-3, bins: int = 10) -> None:
        if reference_size < bins or window_size < bins:
            raise ValueError("reference and window must each hold at least one value per bin")
        self.reference_size, self.window_size = reference_size, window_size
        self.psi_threshold, self.p_threshold, self.bins = psi_threshold, p_threshold, bins
        self._reference: list[float] = []
        self._window = np.zeros(window_size)
        self._filled = 0
        self._pos = 0

    def params(self) -> dict[str, Any]:
        return {"reference_size": self.reference_size, "window_size": self.window_size,
                "psi_threshold": self.psi_threshold, "p_threshold": self.p_threshold, "bins": self.bins}

    def update(self, values: np.ndarray) -> None:
        """Add values: the first ``reference_size`` fill the reference, the rest slide through the window.

        Parameters
        ----------
        values
            The next values of the feature, in order.
        """
        values = np.asarray(values, dtype=np.float64)
        need = self.reference_size - len(self._reference)
        if need > 0:
            self._reference.extend(values[:need].tolist())
            values = values[need:]
        if len(values) >= self.window_size:
            self._window[:] = values[-self.window_size:]
            self._pos, self._filled = 0, self.window_size
            return
        for_end = min(len(values), self.window_size - self._pos)
        self._window[self._pos : self._pos + for_end] = values[:for_end]
        rest = values[for_end:]
        self._window[: len(rest)] = rest
        self._pos = (self._pos + len(values)) % self.window_size
        self._filled = min(self.window_size, self._filled + len(values))

    @property
    def ready(self) -> bool:
        return len(self._reference) >= self.reference_size and self._filled >= self.window_size

    def check(self) -> DataDriftResult | None:
        """None until both samples are full."""
        if not self.ready:
            return None
        ref = np.asarray(self._reference)
        p = psi(ref, self._window, self.bins)
        ks, pv = ks_test(ref, self._window)
        return DataDriftResult(p, ks, pv, p >= self.psi_threshold or pv <= self.p_threshold,
                               len(ref), self._filled)

    def snapshot(self) -> dict[str, Any]:
        return {"reference": list(self._reference), "window": self._window.tolist(), "filled": self._filled,
                "pos": self._pos}

    def restore(self, state: dict[str, Any]) -> None:
        self._reference = list(state["reference"])
        self._window = np.asarray(state["window"], dtype=np.float64)
        self._filled, self._pos = int(state["filled"]), int(state["pos"])
