"""EWMA Gaussian detector: how many running standard deviations a value sits from the running mean.

The simplest detector that adapts to level and spread changes; it is the fast, dependable first choice
for a sensor with no seasonality. Score ``z^2 / (z^2 + z0^2)``: 0.5 at ``z == z0``.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from models.anomaly._array import ArrayDetector
from models.anomaly._jit import lazy_njit


def _gauss_kernel(values, timestamps, state, params, out):  # pragma: no cover - compiled
    alpha, z0, warmup = params[0], params[1], params[2]
    n, mean, var = state[0], state[1], state[2]
    for i in range(values.shape[0]):
        x = values[i]
        s = 0.0
        if n >= 2.0:
            scale = math.sqrt(var)
            floor = 1e-9 * max(1.0, abs(mean))
            if scale < floor:
                scale = floor
            z = abs(x - mean) / scale
            if z != z:
                s = 1.0
            else:
                s = z * z / (z * z + z0 * z0) if z < 1e150 else 1.0
            if n < warmup:
                s = 0.0
        a = max(alpha, 1.0 / (n + 1.0))
        d = x - mean
        mean = mean + a * d
        var = (1.0 - a) * (var + a * d * d)
        if not (math.isfinite(mean) and math.isfinite(var)):
            mean, var = x, 0.0
        n += 1.0
        out[i] = s
    state[0], state[1], state[2] = n, mean, var


class GaussianDetector(ArrayDetector):
    name = "gauss"
    kernel = lazy_njit(_gauss_kernel)
    state_size = 3

    def __init__(self, alpha: float = 0.01, z0: float = 4.0, warmup: int = 30, threshold: float = 0.5) -> None:
        if not 0.0 < alpha <= 1.0:
            raise ValueError(f"alpha must be in (0, 1], got {alpha}")
        if z0 <= 0:
            raise ValueError(f"z0 must be positive, got {z0}")
        super().__init__()
        self.alpha, self.z0, self.warmup, self.threshold = float(alpha), float(z0), int(warmup), float(threshold)
        self._pvec = np.array([self.alpha, self.z0, float(self.warmup)], dtype=np.float64)

    def params(self) -> dict[str, Any]:
        return {"alpha": self.alpha, "z0": self.z0, "warmup": self.warmup, "threshold": self.threshold}
