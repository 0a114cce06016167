"""Linux thermal zones and hwmon chips, read from sysfs: the temperatures, voltages and fans a Pi or Jetson exposes.

A sysfs read runs the driver's code, and a driver waiting on a dead I2C bus may never return; so the files are read
on a thread of their own, and the agent waits at most ``timeout_s`` for them: a file whose read hangs holds that
thread only, and is skipped until its read returns, while every other sensor, source and the heartbeat go on.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING

from connectors.kafka_log import LogLimit
from edge_agent.sources.base import Chunk, SourceError, now_ms

if TYPE_CHECKING:
    from edge_agent.settings import HwmonSource, ThermalSource


# hwmon reports integers in milli-units (micro for power); the prefix of the file names the quantity.
_HWMON = {
    "temp": ("celsius", 1e-3),
    "in": ("volt", 1e-3),
    "curr": ("ampere", 1e-3),
    "power": ("watt", 1e-6),
    "fan": ("rpm", 1.0),
    "humidity": ("percent", 1e-3),
}
_INPUT = re.compile(r"^(temp|in|curr|power|fan|humidity)(\d+)_input$")
log = logging.getLogger(__name__)


def _read_int(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None  # a sensor that is asleep or gone answers EIO; skip it this round


def _clean(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name.strip()) or "unknown"


class _Files:
    """Reads a source's files on a daemon thread per round, waiting at most ``timeout_s`` for them; a file whose
    read has not returned is left out of later rounds, so at most one thread per file is ever stuck."""

    def __init__(self, name: str, timeout_s: float) -> None:
        self.name = name
        self.timeout_s = timeout_s
        self.errors = 0
        self._hung: dict[Path, float] = {}  # file -> when its read began; it leaves when the read returns
        self._log = LogLimit()

    def read(self, paths: list[Path]) -> dict[Path, int | None]:
        todo = [p for p in paths if p not in self._hung]
        got: dict[Path, int | None] = {}
        done = threading.Event()

        def work() -> None:
            for p in todo:
                if done.is_set():
                    return
                self._hung[p] = time.monotonic()
                got[p] = _read_int(p)
                del self._hung[p]

        reader = threading.Thread(target=work, name=f"sysfs {self.name}", daemon=True)
        reader.start()
        reader.join(self.timeout_s)
        done.set()
        if reader.is_alive():
            self.errors += 1
        if self._hung and self._log.due(self.name):
            stuck = ", ".join(f"{p} ({time.monotonic() - t:.0f} s)" for p, t in list(self._hung.items()))
            log.warning("source %s: reading %s has not returned (its driver hangs); skipped until it does, the other "
                        "sensors go on (errors so far: %d; repeats are logged once a minute)", self.name, stuck,
                        self.errors)
        return dict(got)


class Thermal:
    def __init__(self, cfg: ThermalSource) -> None:
        self.name = cfg.name
        self.interval_s = cfg.interval_s
        zones = sorted(Path(cfg.root).glob("thermal_zone*/temp"))
        if not zones:
            raise SourceError(
                f"source {cfg.name!r}: no thermal zones under {cfg.root}"
                "; remove this source or set root= to where they are"
            )
        self._zones: list[tuple[str, Path]] = []
        for temp in zones:
            kind = temp.parent / "type"
            label = _clean(kind.read_text()) if kind.is_file() else temp.parent.name
            self._zones.append((f"{self.name}.{temp.parent.name}.{label}", temp))
        self._files = _Files(self.name, cfg.timeout_s)

    @property
    def errors(self) -> int:
        return self._files.errors

    def read(self) -> list[Chunk]:
        ts = now_ms()
        raw = self._files.read([path for _, path in self._zones])
        return [Chunk(sensor, "celsius", [ts], [raw[path] / 1000.0]) for sensor, path in self._zones
                if raw.get(path) is not None]

    def close(self) -> None:
        pass


class Hwmon:
    def __init__(self, cfg: HwmonSource) -> None:
        self.name = cfg.name
        self.interval_s = cfg.interval_s
        self._inputs: list[tuple[str, str, float, Path]] = []
        for chip in sorted(Path(cfg.root).glob("hwmon*")):
            name_file = chip / "name"
            chip_name = _clean(name_file.read_text()) if name_file.is_file() else chip.name
            for f in sorted(chip.iterdir()):
                m = _INPUT.match(f.name)
                if not m:
                    continue
                unit, scale = _HWMON[m.group(1)]
                label_file = chip / f"{m.group(1)}{m.group(2)}_label"
                label = _clean(label_file.read_text()) if label_file.is_file() else f"{m.group(1)}{m.group(2)}"
                self._inputs.append((f"{self.name}.{chip.name}.{chip_name}.{label}", unit, scale, f))
        if not self._inputs:
            raise SourceError(
                f"source {cfg.name!r}: no hwmon inputs under {cfg.root}"
                "; remove this source or set root= to where they are"
            )
        self._files = _Files(self.name, cfg.timeout_s)

    @property
    def errors(self) -> int:
        return self._files.errors

    def read(self) -> list[Chunk]:
        ts = now_ms()
        raw = self._files.read([path for *_, path in self._inputs])
        return [Chunk(sensor, unit, [ts], [raw[path] * scale]) for sensor, unit, scale, path in self._inputs
                if raw.get(path) is not None]

    def close(self) -> None:
        pass
