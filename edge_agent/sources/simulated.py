"""Synthetic sensors for demos, tests and benchmarks: reproducible from the seed and the reading index.

Reading ``k`` of sensor ``s`` has a fixed timestamp (start + k / rate-per-sensor) and value, so a test can
recompute exactly what should have arrived and find any reading that went missing or came twice. When the wall
clock steps by more than a minute (NTP setting a device that booted in 1970), the start moves with it: the readings
go on from the new time, never a month of them in one read nor none for an hour.
"""

from __future__ import annotations

import math
import time
from typing import TYPE_CHECKING

from edge_agent.sources.base import Chunk

if TYPE_CHECKING:
    from edge_agent.settings import SimulatedSource

_STEP_MS = 60_000  # a clock change larger than this is a step, not the lag of a late read


def simulated_value(seed: int, sensor: int, k: int) -> float:
    """The value of reading ``k`` of sensor ``sensor``: a slow sine plus deterministic noise."""
    h = ((k * 2654435761) ^ (sensor * 40503) ^ (seed * 97)) & 0xFFFF
    return round(20.0 + sensor + 5.0 * math.sin(k / 50.0) + (h / 65535.0 - 0.5) * 0.4, 4)


class Simulated:
    def __init__(self, cfg: SimulatedSource, start_ms: int | None = None) -> None:
        self.name = cfg.name
        self.interval_s = cfg.interval_s
        self._cfg = cfg
        self._per_sensor = cfg.rate / cfg.sensors
        self._period_ms = 1000.0 / self._per_sensor
        self._start_ms = start_ms if start_ms is not None else time.time_ns() // 1_000_000
        self._next = 0  # index of the next reading of every sensor

    def read(self) -> list[Chunk]:
        now = time.time_ns() // 1_000_000
        overdue = now - (self._start_ms + self._next * self._period_ms)  # ms the next reading is late by
        early = _STEP_MS + self._period_ms  # a slow sensor's next reading is due up to a period ahead: no step
        if not -early <= overdue <= max(_STEP_MS, 2 * 1000 * self.interval_s):  # stepped: go on from now
            self._start_ms = now - int(self._next * self._period_ms)
        due = int((now - self._start_ms) / self._period_ms) + 1
        if due <= self._next:
            return []
        ks = range(self._next, due)
        self._next = due
        start, period, seed = self._start_ms, self._period_ms, self._cfg.seed
        stamps = [start + int(k * period) for k in ks]
        return [
            Chunk(
                f"{self.name}.s{s}",
                self._cfg.unit,
                stamps,
                [simulated_value(seed, s, k) for k in ks],
            )
            for s in range(self._cfg.sensors)
        ]

    def close(self) -> None:
        pass
