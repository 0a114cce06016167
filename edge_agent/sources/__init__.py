"""Sensor sources: built from their ``[[edge.sources]]`` tables, each read on its own interval.

``build_source`` dispatches on ``kind`` and takes either the validated settings model or the plain
namespace the lean runtime gets (``edge_agent.runner``), so reading sensors never needs pydantic.
"""

from __future__ import annotations

from typing import Any

from edge_agent.sources.base import Chunk, Source, SourceError

__all__ = ["Chunk", "Source", "SourceError", "build_source"]


def build_source(cfg: Any) -> Source:
    kind = getattr(cfg, "kind", None)
    if kind == "simulated":
        from edge_agent.sources.simulated import Simulated

        return Simulated(cfg)
    if kind == "thermal":
        from edge_agent.sources.sysfs import Thermal

        return Thermal(cfg)
    if kind == "hwmon":
        from edge_agent.sources.sysfs import Hwmon

        return Hwmon(cfg)
    if kind == "proc":
        from edge_agent.sources.procfs import Proc

        return Proc(cfg)
    if kind == "csv":
        from edge_agent.sources.replay import CsvReplay

        return CsvReplay(cfg)
    if kind == "command":
        from edge_agent.sources.command import Command

        return Command(cfg)
    if kind == "plugin":
        from edge_agent.sources.plugins import build_plugin

        return build_plugin(cfg)
    raise SourceError(f"unknown source kind {kind!r}; use simulated, thermal, hwmon, proc, csv, command or plugin")
