"""river's ADWIN and Page-Hinkley behind our detector contract, as baselines and alternatives."""

from __future__ import annotations

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

    state_version: ClassVar[int] = 1

    def snapshot(self) -> dict[str, Any]:
        """river's detector as plain data: its scalar fields, and ADWIN's window as the bytes river's own Rust
        helper serialises (numbers only, so restoring runs no code), versioned."""
        det = self._det
        fields = {k: v for k, v in vars(det).items() if isinstance(v, (bool, int, float, str))}
        state: dict[str, Any] = {"version": self.state_version, "binary": self._binary, "fields": fields}
        if self.kind == "adwin":
            state["window"] = bytes(det._helper.__getstate__())
        else:
            state["mean"] = [float(det._x_mean.n), float(det._x_mean._mean)]
        return state

    def restore(self, state: dict[str, Any]) -> None:
        if state.get("version") != self.state_version:
            raise ValueError(f"{self.kind}: snapshot state version {state.get('version', 0)} is not "
                             f"{self.state_version} (version 0 held a pickle, which is refused: unpickling "
                             "checkpointed data could run code); the detector starts afresh")
        from river import drift

        fields = dict(state["fields"])
        kwargs = {**self.kwargs, "delta": fields["delta"]} if "delta" in fields else dict(self.kwargs)
        det = {"adwin": drift.ADWIN, "page_hinkley": drift.PageHinkley}[self.kind](**kwargs)
        for k, v in fields.items():
            if k in vars(det) and isinstance(v, type(vars(det)[k])):
                setattr(det, k, v)
        if self.kind == "adwin":
            try:
                det._helper.__setstate__(bytes(state["window"]))
            except (KeyboardInterrupt, SystemExit):
                raise
            except BaseException as exc:  # river's Rust helper panics (a BaseException) on malformed bytes
                raise ValueError(f"adwin: the snapshot's window is malformed ({exc}); the detector starts afresh") from None
        else:
            det._x_mean.n, det._x_mean._mean = (float(x) for x in state["mean"])
        self._det, self._binary = det, bool(state["binary"])
