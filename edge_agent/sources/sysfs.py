"""Linux thermal zones and hwmon chips, read from sysfs: the temperatures, voltages and fans a Pi or Jetson exposes."""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING

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


def _read_int(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None  # a sensor that is asleep or gone answers EIO; skip it this round


def _clean(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name.strip()) or "unknown"


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

    def read(self) -> list[Chunk]:
        ts = now_ms()
        out = []
        for sensor, path in self._zones:
            raw = _read_int(path)
            if raw is not None:
                out.append(Chunk(sensor, "celsius", [ts], [raw / 1000.0]))
        return out

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

    def read(self) -> list[Chunk]:
        ts = now_ms()
        out = []
        for sensor, unit, scale, path in self._inputs:
            raw = _read_int(path)
            if raw is not None:
                out.append(Chunk(sensor, unit, [ts], [raw * scale]))
        return out

    def close(self) -> None:
        pass
