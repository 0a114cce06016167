"""The shared shape of our array detectors: a compiled kernel over a flat float64 state vector.

Keeping the whole state in one float64 array makes a snapshot a single copy, lets the kernel update it in
place without allocating, and keeps numba's per-call dispatch cheap (a few arrays, no Python objects).
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from models.anomaly._jit import LazyJit
from models.anomaly.base import AnomalyDetector


def as_inputs(values: Any, timestamps: Any) -> tuple[np.ndarray, np.ndarray]:
    """Validate one batch: 1-D, same length, finite values. Bad input is an error, never a silent skip."""
    v = np.ascontiguousarray(values, dtype=np.float64)
    t = np.ascontiguousarray(timestamps, dtype=np.int64)
    if v.ndim != 1 or t.ndim != 1:
        raise ValueError(f"values and timestamps must be 1-D, got shapes {v.shape} and {t.shape}")
    if v.shape[0] != t.shape[0]:
        raise ValueError(f"values and timestamps differ in length: {v.shape[0]} != {t.shape[0]}")
    if not np.isfinite(v).all():
        bad = int(np.flatnonzero(~np.isfinite(v))[0])
        raise ValueError(f"value at position {bad} is not finite ({v[bad]!r})")
    return v, t


class ArrayDetector(AnomalyDetector):
    """A detector whose logic is ``kernel(values, timestamps, state, params, out)`` (scores then learns)."""

    kernel: ClassVar[LazyJit]
    state_size: ClassVar[int]

    def __init__(self) -> None:
        self._state = np.zeros(self.state_size, dtype=np.float64)

    def _param_vector(self) -> np.ndarray:
        raise NotImplementedError

    def score_learn(self, values: np.ndarray, timestamps: np.ndarray) -> np.ndarray:
        v, t = as_inputs(values, timestamps)
        out = np.empty(v.shape[0], dtype=np.float64)
        if v.shape[0]:
            self.kernel(v, t, self._state, self._pvec, out)
        return out

    def snapshot(self) -> dict[str, Any]:
        return {"state": self._state.copy()}

    def restore(self, state: dict[str, Any]) -> None:
        arr = np.asarray(state["state"], dtype=np.float64)
        if arr.shape != (self.state_size,):
            raise ValueError(f"{self.name}: state has shape {arr.shape}, expected ({self.state_size},)")
        self._state = arr.copy()
