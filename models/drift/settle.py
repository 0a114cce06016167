"""The warm-up of a concept-drift detector: no alarm counts until the stream has settled.

A drift is a change from a settled regime, and a stream's first values have none: the model behind an error
stream is still warming up, its error rate climbing as it meets more of the world (on the MovieLens replay
from 0.16-0.21 in the first 200 errors to about 0.4). So an alarm counts only once a window of ``settle``
values has two halves that agree (``models.drift.cusum.stationary``); while they do not, the newer half is
kept and the window filled again. The detector sees the warm-up values (it learns the regime from them) and
its alarms there are dropped. After a declared drift nothing waits again: the detection itself says where
the old regime ended.

``WarmUp`` is that window; our ensemble (``ours``) keeps one for its members, and ``Settled`` gives any other
detector the same warm-up, so ``[drift] settle`` means one thing whichever detector the flow runs.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from models.drift.base import StreamDriftDetector
from models.drift.cusum import stationary

SETTLE = 800  # values in the window that must settle before an alarm counts
MIN_SETTLE = 4  # the least window ``stationary`` can judge: two halves of two values


class WarmUp:
    """The window a stream must settle in before a detector's alarms count; plain data to checkpoint.

    Parameters
    ----------
    settle
        Values in the window; 0: settled from the first value; else at least ``MIN_SETTLE``.
    """

    def __init__(self, settle: int = SETTLE) -> None:
        if settle != 0 and settle < MIN_SETTLE:
            raise ValueError(f"settle must be 0 (no warm-up) or at least {MIN_SETTLE} values, not {settle}")
        self.settle = settle
        self.window: list[float] | None = [] if settle else None  # None: the stream has settled

    @property
    def settled(self) -> bool:
        """Whether alarms count now."""
        return self.window is None

    def wanted(self, values: np.ndarray) -> np.ndarray:
        """The head of ``values`` that the window takes next: up to where it is full and judged.

        Parameters
        ----------
        values
            The values not fed to the detector yet.
        """
        return values[: self.settle - len(self.window or [])]

    def add(self, seg: np.ndarray) -> None:
        """Take ``seg`` (a ``wanted`` head, already fed to the detector); judge the window once it is full.

        Parameters
        ----------
        seg
            The values.
        """
        if self.window is None:
            return
        self.window.extend(seg.tolist())
        if len(self.window) >= self.settle:
            self.window = None if stationary(np.asarray(self.window)) else self.window[len(self.window) // 2:]

    def restore(self, window: list[float] | None) -> None:
        """Take the window back from a snapshot (None: settled).

        Parameters
        ----------
        window
            ``self.window`` as it was snapshotted.
        """
        self.window = None if window is None else [float(v) for v in window]


class Settled(StreamDriftDetector):
    """One of the single detectors (``make_member``) whose alarms count only once the stream has settled
    (``WarmUp``).

    Parameters
    ----------
    name
        The detector: ``cusum``, ``adwin`` or ``page_hinkley``. It sees every value; its alarms during the
        warm-up are dropped.
    settle
        As for ``WarmUp``.
    params
        The detector's own parameters.
    """

    def __init__(self, name: str, settle: int = SETTLE, **params: Any) -> None:
        from models.drift.members import make_member

        self.detector = make_member(name, **params)
        self.name = name  # type: ignore[misc]  # it is that detector, warmed up
        self.detector_params = params
        self.warm = WarmUp(settle)

    def params(self) -> dict[str, Any]:
        return {"name": self.name, "settle": self.warm.settle, **self.detector_params}

    @property
    def statistic(self) -> float:
        return self.detector.statistic

    @property
    def threshold(self) -> float:
        return self.detector.threshold

    def update(self, values: np.ndarray) -> np.ndarray:
        values = np.asarray(values, dtype=np.float64)
        i = 0
        while i < len(values) and not self.warm.settled:
            seg = self.warm.wanted(values[i:])
            self.detector.update(seg)  # alarms before the stream has settled do not count
            self.warm.add(seg)
            i += len(seg)
        return (self.detector.update(values[i:]) + i).astype(np.int64) if i < len(values) else np.empty(0, np.int64)

    def snapshot(self) -> dict[str, Any]:
        return {"detector": self.detector.snapshot(), "warm": self.warm.window}

    def restore(self, state: dict[str, Any]) -> None:
        if set(state) != {"detector", "warm"}:  # the detector's own, taken before it had a warm-up: a settled stream
            self.detector.restore(state)
            self.warm.restore(None)
            return
        self.detector.restore(state["detector"])
        self.warm.restore(state["warm"])
