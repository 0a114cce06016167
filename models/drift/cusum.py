"""Our concept-drift detector: a self-starting CUSUM on the mean and the spread of a stream.

ADWIN compares the means of two sub-windows with a bound that must hold for any distribution, so it
waits for many values before it is sure, and it cannot see a change of spread at all. A CUSUM is the
sequential test with the least delay for a given false-alarm rate when the change size is roughly
known; made self-starting (the reference mean and deviation are estimated from the first values after
each reset), it needs no prior knowledge of the stream. The warm-up is checked for stationarity (its two halves
must agree) so that a reference is never taken in the middle of a gradual change. Four one-sided statistics run side by side:
mean up, mean down, variance up, variance down. Standardised values are clipped so that one outlier
cannot raise an alarm by itself. A 0/1 stream (errors of a classifier) has its spread fixed by its
mean, so the variance statistics are left out there. Thresholds are set for about one false alarm in a
million stationary values (ADWIN's default makes almost none, and we must not make more).

The recursion S_t = max(0, S_{t-1} + x_t) is computed over a whole batch at once:
S_t = C_t - min(0, min_{s<=t} C_s) with C the running sum started at S_0, so there is no per-value
Python loop.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from models.drift.base import StreamDriftDetector


_CHUNK = 2048
DIRECTIONS = ("both", "up", "down", "rises_on_binary")


def is_binary(values: np.ndarray) -> bool:
    """Whether every value is 0 or 1: a classifier's errors, whose spread is fixed by their mean."""
    return bool(np.isin(values, (0.0, 1.0)).all())


def stationary(values: np.ndarray, min_std: float = 0.05) -> bool:
    """Whether a window of a stream has settled: its two halves agree in mean (within 3 standard errors)
    and, off a 0/1 stream, in spread. Label-free: it reads only the stream itself.

    Parameters
    ----------
    values
        The window, oldest first; at least 4 values.
    min_std
        Floor of the deviation, so that a constant window does not make every difference significant.
    """
    half = len(values) // 2
    a, b = values[:half], values[half:]
    sd = max(float(values.std(ddof=1)), min_std)
    if abs(a.mean() - b.mean()) > 3.0 * sd * (2.0 / half) ** 0.5:
        return False
    if is_binary(values):
        return True
    va, vb = max(float(a.var(ddof=1)), min_std**2), max(float(b.var(ddof=1)), min_std**2)
    return bool(abs(np.log(va / vb)) <= 3.0 * (4.0 / half) ** 0.5)


def _cusum_path(start: float, increments: np.ndarray) -> np.ndarray:
    c = start + np.cumsum(increments)
    return c - np.minimum(0.0, np.minimum.accumulate(c))


class SelfStartingCusum(StreamDriftDetector):
    """Detects shifts of about ``2 * k_mean`` deviations in the mean and changes of spread by ~1.5-2x.

    The reference mean and deviation are estimated from the first ``warmup`` values after each reset, so a
    drift inside the warm-up is not seen.

    Parameters
    ----------
    warmup
        Values used to estimate the reference (its two halves must agree); at least 4.
    k_mean
        Allowance of the mean statistics, in deviations: half the smallest mean shift worth detecting.
    h_mean
        Alarm threshold of the mean statistics.
    k_var_up, k_var_down
        Allowances of the spread-up and spread-down statistics.
    h_var
        Alarm threshold of the spread statistics.
    h_binary
        Alarm threshold of the mean statistics on a 0/1 stream (a classifier's errors).
    clip
        Standardised values are clipped to this many deviations, so one outlier cannot raise an alarm alone.
    min_std
        Floor of the reference deviation (a constant warm-up would otherwise make every change infinite).
    direction
        ``both``, ``up`` or ``down``: which mean shifts count; ``rises_on_binary``: both on a continuous
        stream, only up on a 0/1 stream (a classifier's errors, where a fall is the model learning, not a
        drift to act on; DDM and HDDM test that side only). A fall still restarts the reference, silently.
    detect_variance
        Also watch the spread (left out on a 0/1 stream regardless).

    Examples
    --------
    >>> import numpy as np
    >>> from models.drift import SelfStartingCusum
    >>> detector = SelfStartingCusum(warmup=200)
    >>> rng = np.random.default_rng(1)
    >>> stream = np.r_[rng.normal(0, 1, 1000), rng.normal(2, 1, 500)]
    >>> [int(i) for i in detector.update(stream)]
    [1006]
    """

    name: ClassVar[str] = "cusum"

    def __init__(
        self,
        warmup: int = 800,
        k_mean: float = 0.5,
        h_mean: float = 14.0,
        k_var_up: float = 1.6,
        k_var_down: float = 0.5,
        h_var: float = 30.0,
        h_binary: float = 20.0,
        clip: float = 4.0,
        min_std: float = 0.05,
        direction: str = "both",
        detect_variance: bool = True,
    ) -> None:
        if direction not in DIRECTIONS:
            raise ValueError(f"direction must be one of {', '.join(DIRECTIONS)}, not {direction!r}")
        if warmup < 4:
            raise ValueError("warmup must be at least 4 values")
        self.warmup, self.k_mean, self.h_mean = warmup, k_mean, h_mean
        self.k_var_up, self.k_var_down, self.h_var, self.h_binary = k_var_up, k_var_down, h_var, h_binary
        self.clip, self.min_std, self.direction, self.detect_variance = clip, min_std, direction, detect_variance
        self._reset()

    def params(self) -> dict[str, Any]:
        return {
            "warmup": self.warmup, "k_mean": self.k_mean, "h_mean": self.h_mean, "k_var_up": self.k_var_up,
            "k_var_down": self.k_var_down, "h_var": self.h_var, "h_binary": self.h_binary, "clip": self.clip, "min_std": self.min_std,
            "direction": self.direction, "detect_variance": self.detect_variance,
        }

    def _reset(self) -> None:
        self._n = 0
        self._warm: list[float] = []
        self._mu = 0.0
        self._sigma = 1.0
        self._s = np.zeros(4)  # mean up, mean down, var up, var down
        self._binary = True

    @property
    def calibrated(self) -> bool:
        return self._n >= self.warmup

    @property
    def statistic(self) -> float:
        """The largest of the four statistics, each relative to its own threshold (alarm at 1.0)."""
        h = self.h_binary if self._binary else self.h_mean
        return float(max(self._s[0] / h, self._s[1] / h,
                         self._s[2] / self.h_var, self._s[3] / self.h_var))

    @property
    def threshold(self) -> float:
        return 1.0

    def update(self, values: np.ndarray) -> np.ndarray:
        values = np.asarray(values, dtype=np.float64)
        found: list[int] = []
        i, n = 0, len(values)
        while i < n:
            if not self.calibrated:
                take = values[i : i + self.warmup - len(self._warm)]
                self._warm.extend(take.tolist())
                i += len(take)
                if len(self._warm) >= self.warmup:
                    self._calibrate()
                continue
            seg = values[i : i + _CHUNK]
            hit, report = self._scan(seg)
            if hit < 0:
                i += len(seg)
                continue
            if report:
                found.append(i + hit)
            self._reset()
            i += hit + 1
        return np.asarray(found, dtype=np.int64)

    def _calibrate(self) -> None:
        """Freeze the reference from the warm-up values, unless they are still changing (a gradual drift
        under way, a model still adapting): then keep only the newer half and wait for more."""
        warm = np.asarray(self._warm)
        self._binary = is_binary(warm)
        if not stationary(warm, self.min_std):
            self._warm = warm[len(warm) // 2 :].tolist()
            return
        self._mu = float(warm.mean())
        self._sigma = max(float(warm.std(ddof=1)), self.min_std)
        self._n = len(warm)
        self._warm = []

    def _scan(self, seg: np.ndarray) -> tuple[int, bool]:
        """Advance the statistics over ``seg``: the index of the first alarm (-1: none, then all of seg is
        used) and whether to report it. A fall of a 0/1 stream under ``rises_on_binary`` is not reported,
        but it still restarts the detector: a reference from before the fall would hide the next rise."""
        z = np.clip((seg - self._mu) / self._sigma, -self.clip, self.clip)
        paths = []
        limits = []
        direction = "both" if self.direction == "rises_on_binary" else self.direction
        if direction in ("both", "up"):
            paths.append(_cusum_path(self._s[0], z - self.k_mean))
        else:
            paths.append(np.zeros_like(z))
        if direction in ("both", "down"):
            paths.append(_cusum_path(self._s[1], -z - self.k_mean))
        else:
            paths.append(np.zeros_like(z))
        h = self.h_binary if self._binary else self.h_mean
        limits += [h, h]
        if self.detect_variance and not self._binary:
            z2 = z * z
            paths.append(_cusum_path(self._s[2], z2 - self.k_var_up))
            # a spread floored at min_std was never measured: no fall below it can be (a flat metric alarmed for ever)
            measured = self._sigma > self.min_std
            paths.append(_cusum_path(self._s[3], self.k_var_down - z2) if measured else np.zeros_like(z))
        else:
            paths += [np.zeros_like(z), np.zeros_like(z)]
        limits += [self.h_var, self.h_var]
        over = np.stack(paths) > np.asarray(limits)[:, None]
        any_over = over.any(axis=0)
        if any_over.any():
            hit = int(np.argmax(any_over))
            falls_only = self.direction == "rises_on_binary" and self._binary and not over[0, hit]
            return hit, not falls_only
        self._s = np.array([p[-1] for p in paths])
        return -1, False

    def snapshot(self) -> dict[str, Any]:
        return {"n": self._n, "warm": list(self._warm), "mu": self._mu, "sigma": self._sigma,
                "s": self._s.tolist(), "binary": self._binary}

    def restore(self, state: dict[str, Any]) -> None:
        self._n, self._warm = int(state["n"]), list(state["warm"])
        self._mu, self._sigma = float(state["mu"]), float(state["sigma"])
        self._s = np.asarray(state["s"], dtype=np.float64)
        self._binary = bool(state["binary"])
