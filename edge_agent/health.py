"""The agent's health: its own CPU and memory from /proc/self, and the heartbeat it logs.

Heartbeats are log lines (``heartbeat key=value ...``) rather than a topic: they must get out when the
broker does not (that is when they matter most), journald keeps them with the unit, and the optional
Prometheus endpoint exposes the same numbers for scraping.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

_TICKS = os.sysconf("SC_CLK_TCK")
_PAGE = os.sysconf("SC_PAGE_SIZE")


def process_cpu_seconds(pid: int | str = "self") -> float:
    """User plus system CPU seconds of a process, from /proc/<pid>/stat."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / _TICKS  # utime, stime (fields 14 and 15)


def process_rss_bytes(pid: int | str = "self") -> int:
    with open(f"/proc/{pid}/statm") as f:
        return int(f.read().split()[1]) * _PAGE


class CpuMeter:
    """CPU share of this process between two calls, in percent of one core."""

    def __init__(self) -> None:
        self._cpu = process_cpu_seconds()
        self._wall = time.monotonic()

    def percent(self) -> float:
        cpu, wall = process_cpu_seconds(), time.monotonic()
        share = 100.0 * (cpu - self._cpu) / max(wall - self._wall, 1e-6)
        self._cpu, self._wall = cpu, wall
        return share


@dataclass
class Heartbeat:
    device_id: str
    buffer_depth: int
    buffer_readings: int
    buffer_bytes: int
    in_flight: int
    sampled_readings: int
    acked_readings: int
    send_rate: float  # readings acknowledged per second since the last heartbeat
    errors: int
    dropped_readings: int
    cpu_percent: float
    rss_mb: float

    def line(self) -> str:
        return "heartbeat " + " ".join(f"{k}={_fmt(v)}" for k, v in self.__dict__.items())


def _fmt(v: object) -> str:
    return f"{v:.2f}" if isinstance(v, float) else str(v)
