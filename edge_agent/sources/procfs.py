"""The device's own vital signs from /proc: CPU busy share, memory use and load average, no psutil needed."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from edge_agent.sources.base import Chunk, SourceError, now_ms

if TYPE_CHECKING:
    from edge_agent.settings import ProcSource


def cpu_times(root: Path) -> tuple[int, int]:
    """(busy, total) jiffies of all CPUs together, from the first line of /proc/stat."""
    fields = [int(x) for x in (root / "stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    total = sum(fields[:8])  # guest time is already inside user and nice
    return total - idle, total


def meminfo(root: Path) -> dict[str, int]:
    """/proc/meminfo in bytes."""
    out = {}
    for line in (root / "meminfo").read_text().splitlines():
        key, _, rest = line.partition(":")
        parts = rest.split()
        if parts:
            out[key] = int(parts[0]) * (1024 if len(parts) > 1 and parts[1] == "kB" else 1)
    return out


class Proc:
    def __init__(self, cfg: ProcSource) -> None:
        self.name = cfg.name
        self.interval_s = cfg.interval_s
        self._root = Path(cfg.root)
        try:
            self._last = cpu_times(self._root)
            meminfo(self._root)
        except (OSError, ValueError, IndexError) as exc:
            raise SourceError(
                f"source {cfg.name!r}: cannot read {cfg.root}/stat or meminfo ({exc}); is this Linux?"
            ) from None

    def read(self) -> list[Chunk]:
        ts = now_ms()
        busy, total = cpu_times(self._root)
        d_busy, d_total = busy - self._last[0], total - self._last[1]
        self._last = (busy, total)
        mem = meminfo(self._root)
        load1, load5, load15 = (float(x) for x in (self._root / "loadavg").read_text().split()[:3])
        n = self.name
        out = [
            Chunk(
                f"{n}.mem.used", "byte", [ts], [float(mem["MemTotal"] - mem.get("MemAvailable", mem.get("MemFree", 0)))]
            ),
            Chunk(f"{n}.mem.available", "byte", [ts], [float(mem.get("MemAvailable", mem.get("MemFree", 0)))]),
            Chunk(f"{n}.load1", None, [ts], [load1]),
            Chunk(f"{n}.load5", None, [ts], [load5]),
            Chunk(f"{n}.load15", None, [ts], [load15]),
        ]
        if d_total > 0:
            out.insert(0, Chunk(f"{n}.cpu.busy", "percent", [ts], [100.0 * d_busy / d_total]))
        return out

    def close(self) -> None:
        pass
