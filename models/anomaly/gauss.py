"""EWMA Gaussian detector: how many running standard deviations a value sits from the running mean.

The simplest detector that adapts to level and spread changes; it is the fast, dependable first choice
for a sensor with no seasonality. Score ``z^2 / (z^2 + z0^2)``: 0.5 at ``z == z0``.
"""

from __future__ import annotations

import math

from models.anomaly._array import ArrayDetector, check_positive, check_rates
from models.anomaly._jit import lazy_njit
from models.anomaly._steps import ewma_learn


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
        mean, var = ewma_learn(x, n, mean, var, alpha)
        n += 1.0
        out[i] = s
    state[0], state[1], state[2] = n, mean, var


class GaussianDetector(ArrayDetector):
    name = "gauss"
    kernel = lazy_njit(_gauss_kernel)
    kernel_params = ("alpha", "z0", "warmup")

    def __init__(self, alpha: float = 0.01, z0: float = 4.0, warmup: int = 30, threshold: float = 0.5) -> None:
        check_rates(alpha=alpha)
        check_positive(z0=z0)
        self._configure(locals())

    def _state_size(self) -> int:
        return 3
