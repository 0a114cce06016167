"""What a sensor source is: something read on an interval that returns readings grouped by sensor."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable


@dataclass(slots=True)
class Chunk:
    """Readings of one sensor: parallel lists, timestamps in ms since the epoch (UTC)."""

    sensor: str
    unit: str | None
    timestamps: list[int] = field(default_factory=list)
    values: list[float] = field(default_factory=list)


@runtime_checkable
class Source(Protocol):
    """A plug-in source implements this; ``read`` is called every ``interval_s`` seconds.

    ``read`` may raise: the agent logs the error, counts it and calls again next interval.
    """

    name: str
    interval_s: float

    def read(self) -> list[Chunk]: ...

    def close(self) -> None: ...


class SourceError(RuntimeError):
    """A source cannot be set up as configured; the message says what to change."""


def now_ms() -> int:
    return time.time_ns() // 1_000_000
