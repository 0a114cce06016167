"""Several detectors on one stream: the first to fire declares the drift, and then all start afresh.

Our concept-drift detector is this ensemble of the self-starting CUSUM (fast on shifts of about a
deviation or more, and the only one that sees changes of spread) with river's ADWIN (strong on small,
slow mean shifts). An ensemble that fires when any member fires makes the union of their false alarms,
so each member is set stricter than it would be alone: the CUSUM's thresholds are raised, and ADWIN's
``delta`` is lowered from river's 0.002 to 0.0005 on a continuous stream. And when one member declares a
drift every member restarts from that point: a member that has not fired yet would otherwise still hold
the old regime and raise the same change again later, as a false alarm (most of those came after gradual
drifts, where ADWIN fires late).

On a 0/1 stream (a classifier's errors) both members count only a rise of the error rate
(``direction="rises_on_binary"``, as DDM and HDDM test only that side): on river's generators most false
alarms were the tree's error falling as it learnt. That leaves room for a looser ADWIN there (``delta``
0.01 while the stream is 0/1), which catches river's drifts sooner.

A drift is a change from a settled regime, and a stream's first values have none: the model behind an
error stream is still warming up, and on the MovieLens replay its first few hundred errors are low
(0.16-0.21 in the first 200: the replay opens with three users who liked 87 % of what they rated) and then
rise to about 0.4 as other users arrive. The loose ADWIN declared that rise a concept drift (at value
447; river's ADWIN at its defaults does too, at 479), and the retraining cooldown then missed the real
change. So no alarm counts until the stream has settled (``settle``, ``models.drift.settle.WarmUp``): the
first window of 800 values whose two halves agree (``models.drift.cusum.stationary``, the test the CUSUM
takes its reference by), judged from the stream alone. The members see the warm-up values; their alarms
there are dropped (none restarts the others). After a declared drift the ensemble does not wait again: the
detection itself says where the old regime ended.
The benchmark (``benchmarks/drift.py``) picked these settings on streams of other seeds than it reports.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from models.drift.base import StreamDriftDetector
from models.drift.members import make_member
from models.drift.settle import SETTLE, WarmUp

DEFAULT_MEMBERS: tuple[dict[str, Any], ...] = (
    {"name": "cusum", "h_mean": 16.0, "h_binary": 24.0, "h_var": 34.0, "direction": "rises_on_binary"},
    {"name": "adwin", "delta": 0.0005, "delta_binary": 0.01, "direction": "rises_on_binary"},
)
_CHUNK = 1024  # values fed to the members at a time: what a restart can waste


class DriftEnsemble(StreamDriftDetector):
    """Our concept-drift detector (``ours``): the first member to fire declares the drift, then all restart.

    Parameters
    ----------
    members
        Each member as ``make_member`` keywords (``{"name": "cusum", "h_mean": 16.0}``); by default the
        CUSUM and ADWIN of ``DEFAULT_MEMBERS``, each counting only rises on a 0/1 stream. At least one.
    settle
        No alarm counts before the stream has settled: a window of this many values whose halves agree
        (else the newer half is kept and the window filled again). 0: alarms count from the first value;
        else at least ``MIN_SETTLE``.
    """

    name: ClassVar[str] = "ours"

    def __init__(self, members: list[dict[str, Any]] | None = None, settle: int = SETTLE) -> None:
        self.members_spec = [dict(m) for m in (members if members is not None else DEFAULT_MEMBERS)]
        if not self.members_spec:
            raise ValueError("an ensemble needs at least one member")
        self.warm = WarmUp(settle)
        self.settle = settle
        self._members = self._fresh()
        self.last_fired: str | None = None

    def _fresh(self) -> list[StreamDriftDetector]:
        return [make_member(**spec) for spec in self.members_spec]

    def params(self) -> dict[str, Any]:
        return {"members": self.members_spec, "settle": self.settle}

    @property
    def statistic(self) -> float:
        return self._members[0].statistic

    @property
    def threshold(self) -> float:
        return self._members[0].threshold

    def update(self, values: np.ndarray) -> np.ndarray:
        values = np.asarray(values, dtype=np.float64)
        found: list[int] = []
        i, n = 0, len(values)
        while i < n:
            if not self.warm.settled:
                seg = self.warm.wanted(values[i:])
                for member in self._members:
                    member.update(seg)  # alarms before the stream has settled do not count
                self.warm.add(seg)
                i += len(seg)
                continue
            seg = values[i : i + _CHUNK]
            first, who = len(seg), None
            for spec, member in zip(self.members_spec, self._members):
                hits = member.update(seg)
                if len(hits) and int(hits[0]) < first:
                    first, who = int(hits[0]), spec["name"]
            if who is None:
                i += len(seg)
                continue
            found.append(i + first)
            self.last_fired = who
            self._members = self._fresh()  # the values after the alarm go to new members
            i += first + 1
        return np.asarray(found, dtype=np.int64)

    def snapshot(self) -> dict[str, Any]:
        return {"members": [m.snapshot() for m in self._members], "last_fired": self.last_fired,
                "warm": self.warm.window}

    def restore(self, state: dict[str, Any]) -> None:
        for member, s in zip(self._members, state["members"]):
            member.restore(s)
        self.last_fired = state["last_fired"]
        self.warm.restore(state.get("warm"))  # absent: a snapshot from before the warm-up, taken on a settled stream
