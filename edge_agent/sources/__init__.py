"""Sensor sources: built from their ``[[edge.sources]]`` tables, each read on its own interval."""

from __future__ import annotations

from edge_agent.settings import (
    CommandSource,
    CsvSource,
    HwmonSource,
    PluginSource,
    ProcSource,
    SimulatedSource,
    SourceConfig,
    ThermalSource,
)
from edge_agent.sources.base import Chunk, Source, SourceError

__all__ = ["Chunk", "Source", "SourceError", "build_source"]


def build_source(cfg: SourceConfig) -> Source:
    if isinstance(cfg, SimulatedSource):
        from edge_agent.sources.simulated import Simulated

        return Simulated(cfg)
    if isinstance(cfg, ThermalSource):
        from edge_agent.sources.sysfs import Thermal

        return Thermal(cfg)
    if isinstance(cfg, HwmonSource):
        from edge_agent.sources.sysfs import Hwmon

        return Hwmon(cfg)
    if isinstance(cfg, ProcSource):
        from edge_agent.sources.procfs import Proc

        return Proc(cfg)
    if isinstance(cfg, CsvSource):
        from edge_agent.sources.replay import CsvReplay

        return CsvReplay(cfg)
    if isinstance(cfg, CommandSource):
        from edge_agent.sources.command import Command

        return Command(cfg)
    if isinstance(cfg, PluginSource):
        from edge_agent.sources.plugins import build_plugin

        return build_plugin(cfg)
    raise SourceError(f"unknown source kind {getattr(cfg, 'kind', cfg)!r}")
