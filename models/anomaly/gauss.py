"""EWMA Gaussian detector: how many running standard deviations a value sits from the running mean.

The simplest detector that adapts to level and spread changes; it is the fast, dependable first choice
for a sensor with no seasonality. Score ``z^2 / (z^2 + z0^2)``: 0.5 at ``z == z0``.
"""

from __future__ import annotations

import math

from models.anomaly._array import ArrayDetector, check_positive, check_rates, fields, kernel_fields
from models.anomaly._jit import lazy_njit
from models.anomaly._steps import ewma_learn


PARAMS = ("alpha", "z0", "warmup")
SCALARS = ("n", "mean", "var")
PARAM, STATE = kernel_fields(PARAMS, ()), fields("STATE", SCALARS)


def _gauss_kernel(values, timestamps, start, params, scalars, mem, out):  # pragma: no cover - compiled
    p, st = params, scalars
    alpha, z0, warmup = p[PARAM.alpha], p[PARAM.z0], p[PARAM.warmup]
    n, mean, var = st[STATE.n], st[STATE.mean], st[STATE.var]
    for i in range(start, values.shape[0]):
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
    st[STATE.n], st[STATE.mean], st[STATE.var] = n, mean, var
    return values.shape[0]


class GaussianDetector(ArrayDetector):
    """Scores ``z^2 / (z^2 + z0^2)`` of each reading's distance from the EWMA mean. State: 24 bytes.

    Parameters
    ----------
    alpha
        EWMA rate of the running mean and variance.
    z0
        Distance in standard deviations that scores 0.5.
    warmup
        Readings scored 0 while the detector learns.
    threshold
        Score at or above which a reading is anomalous.

    Examples
    --------
    >>> import numpy as np
    >>> det = GaussianDetector()
    >>> scores = det.score_learn(np.r_[np.ones(50), 9.0] + np.arange(51) % 2 * 0.1, np.arange(51))
    >>> bool(scores[-1] >= det.threshold), det.state_nbytes()
    (True, 24)
    """

    name = "gauss"
    kernel = lazy_njit(_gauss_kernel)
    kernel_params = PARAMS
    scalars = SCALARS

    def __init__(self, alpha: float = 0.01, z0: float = 4.0, warmup: int = 30, threshold: float = 0.5) -> None:
        check_rates(alpha=alpha)
        check_positive(z0=z0)
        self._configure(locals())
