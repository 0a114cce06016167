"""river's ADWIN and Page-Hinkley behind our detector contract, as baselines and alternatives."""

from __future__ import annotations

import pickle
from typing import Any, ClassVar

import numpy as np

from models.drift.base import StreamDriftDetector


class RiverDetector(StreamDriftDetector):
    """river's ADWIN or Page-Hinkley behind our detector contract, as baselines and ensemble members.

    Parameters
    ----------
    kind
        ``adwin`` or ``page_hinkley``.
    direction
        ``both`` (river's own behaviour) or, for ADWIN, ``rises_on_binary``: while every value seen is 0 or 1
        (a classifier's errors), an alarm whose newer window has the lower mean is dropped (the model
        learning, not a drift to act on); ADWIN has already cut its window there, so it goes on afresh.
    kwargs
        Passed to river's detector (``delta`` for ADWIN, ``threshold`` for Page-Hinkley, ...).
    """

    name: ClassVar[str] = "river"

    def __init__(self, kind: str = "adwin", direction: str = "both", **kwargs: Any) -> None:
        from river import drift

        makers = {"adwin": drift.ADWIN, "page_hinkley": drift.PageHinkley}
        if kind not in makers:
            raise ValueError(f"unknown river detector {kind!r}")
        if direction not in ("both", "rises_on_binary") or (direction != "both" and kind != "adwin"):
            raise ValueError(f"direction must be 'both', or 'rises_on_binary' for adwin; got {direction!r} for {kind}")
        self.kind, self.kwargs, self.direction = kind, kwargs, direction
        self._binary = True
        self._det = makers[kind](**kwargs)
        self.name = kind  # type: ignore[misc]

    def params(self) -> dict[str, Any]:
        return {"kind": self.kind, "direction": self.direction, **self.kwargs}

    @property
    def statistic(self) -> float:
        if self.kind == "adwin":
            return float(self._det.width)
        return float(getattr(self._det, "_sum_increase", 0.0))

    @property
    def threshold(self) -> float:
        return float(self.kwargs.get("delta", 0.002)) if self.kind == "adwin" else float(self._det.threshold)

    def update(self, values: np.ndarray) -> np.ndarray:
        det = self._det
        found = []
        values = np.asarray(values, dtype=np.float64)
        if self.direction == "both":
            for i, v in enumerate(values.tolist()):
                det.update(v)
                if det.drift_detected:
                    found.append(i)
            return np.asarray(found, dtype=np.int64)
        binary = self._binary
        for i, v in enumerate(values.tolist()):
            binary = binary and (v == 0.0 or v == 1.0)
            before = det.estimation
            det.update(v)
            if det.drift_detected and not (binary and det.estimation < before):
                found.append(i)
        self._binary = binary
        return np.asarray(found, dtype=np.int64)

    def snapshot(self) -> dict[str, Any]:
        return {"pickled": pickle.dumps(self._det), "binary": self._binary}

    def restore(self, state: dict[str, Any]) -> None:
        self._det = pickle.loads(state["pickled"])
        self._binary = bool(state.get("binary", True))
