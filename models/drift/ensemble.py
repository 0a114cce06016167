"""Several detectors on one stream: the first to fire declares the drift.

Our concept-drift detector is this ensemble of the self-starting CUSUM (fast on shifts of about a
deviation or more, and the only one that sees changes of spread) with river's ADWIN (strong on small,
slow mean shifts). Members keep their own state (each restarts itself after its own alarm, as it
would alone); an alarm within ``refractory`` values of the previous one is the same change seen by the
other member, and is not raised again. So its delay is never worse than either member's, and its false
alarms are at most the union of theirs, which is why the CUSUM's thresholds are set for very rare alarms.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from models.drift.base import StreamDriftDetector, make_detector


class DriftEnsemble(StreamDriftDetector):
    name: ClassVar[str] = "ours"

    def __init__(self, members: list[dict[str, Any]] | None = None, refractory: int = 1000) -> None:
        self.members_spec = members if members is not None else [{"name": "cusum"}, {"name": "adwin"}]
        if not self.members_spec:
            raise ValueError("an ensemble needs at least one member")
        self.refractory = refractory
        self._members = [make_detector(**spec) for spec in self.members_spec]
        self._since = refractory + 1  # values seen since the last alarm
        self.last_fired: str | None = None

    def params(self) -> dict[str, Any]:
        return {"members": self.members_spec, "refractory": self.refractory}

    @property
    def statistic(self) -> float:
        return self._members[0].statistic

    @property
    def threshold(self) -> float:
        return self._members[0].threshold

    def update(self, values: np.ndarray) -> np.ndarray:
        values = np.asarray(values, dtype=np.float64)
        hits = sorted((int(i), spec["name"]) for spec, m in zip(self.members_spec, self._members) for i in m.update(values))
        found: list[int] = []
        last = -self._since
        for i, who in hits:
            if i - last > self.refractory:
                found.append(i)
                last = i
                self.last_fired = who
        self._since = len(values) - last
        return np.asarray(found, dtype=np.int64)

    def snapshot(self) -> dict[str, Any]:
        return {"members": [m.snapshot() for m in self._members], "last_fired": self.last_fired, "since": self._since}

    def restore(self, state: dict[str, Any]) -> None:
        for member, s in zip(self._members, state["members"]):
            member.restore(s)
        self.last_fired, self._since = state["last_fired"], int(state["since"])
