"""The shared shape of our array detectors: a compiled kernel over a flat float64 state vector.

Keeping the whole state in one float64 array makes a snapshot a single copy, lets the kernel update it in
place without allocating, and keeps numba's per-call dispatch cheap (a few arrays, no Python objects).
"""

from __future__ import annotations

import inspect
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


def check_rates(**rates: float) -> None:
    """EWMA rates live in (0, 1]."""
    for name, rate in rates.items():
        if not 0.0 < rate <= 1.0:
            raise ValueError(f"{name} must be in (0, 1], got {rate}")


def check_at_least(minimum: float, **values: float) -> None:
    for name, value in values.items():
        if value < minimum:
            raise ValueError(f"{name} must be >= {minimum}, got {value}")


def check_positive(**values: float) -> None:
    for name, value in values.items():
        if value <= 0:
            raise ValueError(f"{name} must be positive, got {value}")


def check_fraction(**values: float) -> None:
    for name, value in values.items():
        if not 0.0 <= value <= 1.0:
            raise ValueError(f"{name} must be in [0, 1], got {value}")


class ArrayDetector(AnomalyDetector):
    """A detector whose logic is ``kernel(values, timestamps, state, params, out)`` (scores then learns).

    Its constructor arguments are its parameters: ``_configure`` stores each as an attribute of its
    default's type, and ``kernel_params`` names those the kernel reads, in the order of its params vector.
    """

    kernel: ClassVar[LazyJit]
    kernel_params: ClassVar[tuple[str, ...]]

    def _state_size(self) -> int:
        raise NotImplementedError

    def _configure(self, args: dict[str, Any]) -> None:
        """Called by a subclass ``__init__`` with its ``locals()``, after validating them."""
        for name, default in _defaults(type(self)).items():
            setattr(self, name, type(default)(args[name]))
        self._pvec = np.array([getattr(self, name) for name in self.kernel_params], dtype=np.float64)
        self.state_size = self._state_size()
        self._state = np.zeros(self.state_size, dtype=np.float64)

    def params(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in _defaults(type(self))}

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


def _defaults(cls: type) -> dict[str, Any]:
    params = inspect.signature(cls.__init__).parameters
    return {name: p.default for name, p in params.items() if name != "self"}
