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
    delta_binary
        With ``rises_on_binary``: ADWIN's ``delta`` while the stream is 0/1, where the dropped falls leave
        room for a looser one; the first other value restarts ADWIN with ``delta`` from there on (a
        continuous stream's first value, as a rule). None: ``delta`` throughout.
    kwargs
        Passed to river's detector (``delta`` for ADWIN, ``threshold`` for Page-Hinkley, ...).
    """

    name: ClassVar[str] = "river"

    def __init__(self, kind: str = "adwin", direction: str = "both", delta_binary: float | None = None,
                 **kwargs: Any) -> None:
        from river import drift

        makers = {"adwin": drift.ADWIN, "page_hinkley": drift.PageHinkley}
        if kind not in makers:
            raise ValueError(f"unknown river detector {kind!r}")
        if direction not in ("both", "rises_on_binary") or (direction != "both" and kind != "adwin"):
            raise ValueError(f"direction must be 'both', or 'rises_on_binary' for adwin; got {direction!r} for {kind}")
        if delta_binary is not None and direction != "rises_on_binary":
            raise ValueError("delta_binary needs direction='rises_on_binary'")
        self.kind, self.kwargs, self.direction, self.delta_binary = kind, kwargs, direction, delta_binary
        self._binary = True
        self._det = makers[kind](**(kwargs if delta_binary is None else {**kwargs, "delta": delta_binary}))
        self.name = kind  # type: ignore[misc]

    def params(self) -> dict[str, Any]:
        return {"kind": self.kind, "direction": self.direction, "delta_binary": self.delta_binary, **self.kwargs}

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
            if binary and v != 0.0 and v != 1.0:
                binary = False
                if self.delta_binary is not None:
                    from river import drift

                    det = self._det = drift.ADWIN(**self.kwargs)
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
