"""How well a canary's own model agrees with the platform's detector, reading by reading.

A device on ``sensor_batch`` v2 says which readings its model flagged (``local_flags``, with the model's
version); the sensor flow scores the same readings on ``scores.anomaly``. ``AgreementJoin`` pairs the two
by (device, sensor, timestamp) for the devices it watches only, and counts the four outcomes. Whichever
side arrives first waits in a bounded per-series buffer (the newest ``max_pending`` readings), so a side
that never comes (the anomaly flow down, a device summarising) costs a fixed amount of memory. The
timestamps joined last (as many again) are remembered, so a batch and its scores delivered again after
the join (at-least-once delivery) are not counted twice.

The measures: ``agreement`` is the share of joined readings where both say the same (anomalous or not);
``recall`` is the share of the platform's anomalies the device also flagged (None when the platform
flagged none). Agreement is what the rollout gates on: it punishes a model that flags too much as well
as one that flags too little; recall is reported alongside because anomalies are rare and a model that
never flags still agrees on most readings.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from schemas.flags import unpack_flags
from schemas.scores import series_scores

__all__ = ["Agreement", "AgreementJoin"]


@dataclass
class Agreement:
    """Joined readings of one device by outcome (plain counts)."""

    both: int = 0
    device_only: int = 0
    platform_only: int = 0
    neither: int = 0

    @property
    def joined(self) -> int:
        return self.both + self.device_only + self.platform_only + self.neither

    @property
    def agreement(self) -> float | None:
        """Share of joined readings where device and platform agree; None before any joined."""
        return (self.both + self.neither) / self.joined if self.joined else None

    @property
    def recall(self) -> float | None:
        """Share of the platform's anomalies the device flagged; None while the platform flagged none."""
        platform = self.both + self.platform_only
        return self.both / platform if platform else None

    def describe(self) -> str:
        recall = "n/a" if self.recall is None else f"{self.recall:.2f}"
        return (f"agreement {self.agreement or 0.0:.3f} over {self.joined} readings "
                f"(device flagged {self.both + self.device_only}, platform {self.both + self.platform_only}, "
                f"recall of the platform's anomalies {recall})")


_NONE = np.zeros(0, dtype=np.int64)


@dataclass
class _Side:
    times: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    flags: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=bool))


class AgreementJoin:
    """Joins devices' local flags with the platform's scores and counts agreement per device.

    Parameters
    ----------
    devices
        The devices to watch (the canaries); everything else is ignored before any decoding work.
    version
        Only readings this model version flagged count (older batches are the previous model's).
    max_pending
        Readings kept per device, sensor and side while the other side has not arrived, and joined
        timestamps remembered per device and sensor to ignore a redelivery.
    """

    def __init__(self, devices: list[str], version: str, max_pending: int = 4096) -> None:
        self.version = version
        self.max_pending = max_pending
        self.counts = {d: Agreement() for d in devices}
        self._pending: dict[tuple[str, str], tuple[_Side, _Side]] = {}
        self._joined: dict[tuple[str, str], np.ndarray] = {}

    def watches(self, device_id: str) -> bool:
        return device_id in self.counts

    def add_readings(self, batch: dict[str, Any]) -> None:
        """Take one decoded ``sensor_batch``: its flagged series, if the device runs ``version``."""
        device = batch["device_id"]
        if device not in self.counts or batch.get("local_model") != self.version:
            return
        for s in batch["series"]:
            if s.get("local_flags") is None:
                continue
            flags = unpack_flags(s["local_flags"], len(s["values"]))
            self._add(device, s["sensor"], 0, np.asarray(s["timestamps"], dtype=np.int64), flags)

    def add_scores(self, scores: dict[str, Any]) -> None:
        """Take one decoded ``anomaly_score``: a reading is anomalous at or above the record's threshold."""
        device = scores["device_id"]
        if device not in self.counts:
            return
        for s in scores["series"]:
            times, values = series_scores(s)
            self._add(device, s["sensor"], 1, times, values >= scores["threshold"])

    def _add(self, device: str, sensor: str, side: int, times: np.ndarray, flags: np.ndarray) -> None:
        key = (device, sensor)
        sides = self._pending.setdefault(key, (_Side(), _Side()))
        mine, other = sides[side], sides[1 - side]
        joined = self._joined.get(key, _NONE)
        times, first = np.unique(times, return_index=True)  # a reading twice in one batch counts once
        new = ~np.isin(times, joined) & ~np.isin(times, mine.times)  # nor one delivered again
        times, flags = times[new], flags[first][new]
        _, at_mine, at_other = np.intersect1d(times, other.times, return_indices=True)
        local, platform = flags[at_mine], other.flags[at_other]
        if side == 1:
            local, platform = platform, local
        c = self.counts[device]
        c.both += int(np.sum(local & platform))
        c.device_only += int(np.sum(local & ~platform))
        c.platform_only += int(np.sum(~local & platform))
        c.neither += int(np.sum(~local & ~platform))
        if len(at_mine):
            self._joined[key] = np.concatenate([joined, times[at_mine]])[-self.max_pending :]
        keep_other = np.ones(len(other.times), dtype=bool)
        keep_other[at_other] = False
        other.times, other.flags = other.times[keep_other], other.flags[keep_other]
        keep = np.ones(len(times), dtype=bool)
        keep[at_mine] = False
        mine.times = np.concatenate([mine.times, times[keep]])[-self.max_pending :]
        mine.flags = np.concatenate([mine.flags, flags[keep]])[-self.max_pending :]

    def pending(self) -> int:
        """Readings waiting for their other side, all devices together."""
        return sum(len(s.times) for pair in self._pending.values() for s in pair)
