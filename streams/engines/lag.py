"""Which consumer group holds a flow's offsets on each engine, and the lag monitor a flow process runs.

Faust commits to its app's group. Bytewax keeps offsets in its recovery store and resumes from there; the
monitor commits the positions it consumed to a group of its own (advisory: a restart still resumes from
recovery), so that lag is read the same way for both engines, by the flow process and by anyone else
(the live page, Kafka tools). The two engines use different groups, so that switching a flow's engine
never makes Faust resume from offsets Bytewax wrote.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Literal

from connectors.kafka import KafkaSettings
from connectors.lag import LagMonitor
from streams.processor import FlowSpec

__all__ = ["ENGINES", "Engine", "consumer_group", "start_monitor"]

Engine = Literal["bytewax", "faust"]
ENGINES: tuple[Engine, ...] = ("bytewax", "faust")


def consumer_group(flow: str, engine: Engine, settings: KafkaSettings) -> str:
    """The consumer group whose committed offsets say how far ``flow`` got on ``engine``."""
    suffix = "" if engine == "faust" else f"-{engine}"
    return settings.topic(f"eddyline-{flow}{suffix}")


def start_monitor(
    spec: FlowSpec,
    settings: KafkaSettings,
    engine: Engine,
    interval_s: float | None,
    positions: Callable[[], Mapping[tuple[str, int], int]] | None = None,
) -> LagMonitor | None:
    """Start the flow process's lag monitor (``interval_s`` None: none); stop it with ``.stop()``."""
    if interval_s is None:
        return None
    monitor = LagMonitor(settings, spec.name, consumer_group(spec.name, engine, settings), spec.inputs,
                         interval_s=interval_s, positions=positions)
    monitor.start()
    return monitor
