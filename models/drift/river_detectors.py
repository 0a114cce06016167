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
    kwargs
        Passed to river's detector (``delta`` for ADWIN, ``threshold`` for Page-Hinkley, ...).
    """

    name: ClassVar[str] = "river"

    def __init__(self, kind: str = "adwin", **kwargs: Any) -> None:
        from river import drift

        makers = {"adwin": drift.ADWIN, "page_hinkley": drift.PageHinkley}
        if kind not in makers:
            raise ValueError(f"unknown river detector {kind!r}")
        self.kind, self.kwargs = kind, kwargs
        self._det = makers[kind](**kwargs)
        self.name = kind  # type: ignore[misc]

    def params(self) -> dict[str, Any]:
        return {"kind": self.kind, **self.kwargs}

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
        for i, v in enumerate(np.asarray(values, dtype=np.float64).tolist()):
            det.update(v)
            if det.drift_detected:
                found.append(i)
        return np.asarray(found, dtype=np.int64)

    def snapshot(self) -> dict[str, Any]:
        return {"pickled": pickle.dumps(self._det)}

    def restore(self, state: dict[str, Any]) -> None:
        self._det = pickle.loads(state["pickled"])
