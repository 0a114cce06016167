"""Readings from a command's output: the shortest path from any vendor tool or script to the agent.

Each output line is ``sensor value [unit]`` or ``sensor=value``; lines starting with ``#`` are skipped.
"""

from __future__ import annotations

import logging
import subprocess
from typing import TYPE_CHECKING

from edge_agent.sources.base import Chunk, now_ms

if TYPE_CHECKING:
    from edge_agent.settings import CommandSource


log = logging.getLogger(__name__)


def parse_output(text: str) -> tuple[list[tuple[str, float, str | None]], list[str]]:
    """Readings and the lines that were not readings (to report, never drop silently)."""
    readings, bad = [], []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.replace("=", " ", 1).split() if "=" in line.split()[0] else line.split()
        try:
            if len(parts) not in (2, 3):
                raise ValueError
            value = float(parts[1])
            if value != value or value in (float("inf"), float("-inf")):
                raise ValueError
            readings.append((parts[0], value, parts[2] if len(parts) == 3 else None))
        except ValueError:
            bad.append(line)
    return readings, bad


class Command:
    def __init__(self, cfg: CommandSource) -> None:
        self.name = cfg.name
        self.interval_s = cfg.interval_s
        self.errors = 0
        self._cfg = cfg

    def read(self) -> list[Chunk]:
        ts = now_ms()
        try:
            proc = subprocess.run(
                self._cfg.command, capture_output=True, text=True, timeout=self._cfg.timeout_s, check=False
            )
        except FileNotFoundError:
            raise RuntimeError(
                f"command {self._cfg.command[0]!r} not found; fix command= in source {self.name!r}"
            ) from None
        except subprocess.TimeoutExpired:
            raise RuntimeError(
                f"command {self._cfg.command!r} ran past {self._cfg.timeout_s}s; raise timeout_s or fix the command"
            ) from None
        if proc.returncode != 0:
            raise RuntimeError(f"command {self._cfg.command!r} exited {proc.returncode}: {proc.stderr.strip()[:300]}")
        readings, bad = parse_output(proc.stdout)
        for line in bad:
            self.errors += 1
            log.warning("source %s: output line is not 'sensor value [unit]': %r", self.name, line[:200])
        return [Chunk(f"{self.name}.{s}", unit, [ts], [v]) for s, v, unit in readings]

    def close(self) -> None:
        pass
