"""What a sensor source is: something read on an interval that returns readings grouped by sensor."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable


MAX_READINGS_PER_READ = 100_000  # a few MB in memory: seconds of a fast vibration sensor, not a runaway plug-in


@dataclass(slots=True)
class Chunk:
    """Readings of one sensor: parallel lists, timestamps in ms since the epoch (UTC).

    Parameters
    ----------
    sensor
        The sensor's name, unique within the device.
    unit
        The unit of the values, or None.
    timestamps, values
        The readings, pairwise.
    flags
        The readings the device's own model flagged, as a ``schemas.flags`` bitmask; None when unscored.
    """

    sensor: str
    unit: str | None
    timestamps: list[int] = field(default_factory=list)
    values: list[float] = field(default_factory=list)
    flags: bytes | None = None


@runtime_checkable
class Source(Protocol):
    """A plug-in source implements this; ``read`` is called every ``interval_s`` seconds.

    ``read`` may raise: the agent logs the error, counts it and calls again next interval. It returns (or yields)
    at most ``MAX_READINGS_PER_READ`` readings; the agent keeps that many, and logs and counts the read. A plug-in's
    constructor takes ``(name, interval_s, **options)``, the options coming from its ``[[edge.sources]]``
    table (see ``edge_agent.sources.plugins``).

    Examples
    --------
    >>> from edge_agent.sources.base import Chunk, Source, now_ms
    >>> class Constant:
    ...     def __init__(self, name, interval_s, value=1.0):
    ...         self.name, self.interval_s, self.value = name, interval_s, value
    ...     def read(self):
    ...         return [Chunk("level", "m", [now_ms()], [self.value])]
    ...     def close(self):
    ...         pass
    >>> source = Constant("tank", 5.0, value=2.5)
    >>> isinstance(source, Source), source.read()[0].values
    (True, [2.5])
    """

    name: str
    interval_s: float

    def read(self) -> list[Chunk]: ...

    def close(self) -> None: ...


class SourceError(RuntimeError):
    """A source cannot be set up as configured; the message says what to change."""


def now_ms() -> int:
    """The wall-clock time in ms since the epoch (UTC), as readings are stamped."""
    return time.time_ns() // 1_000_000
