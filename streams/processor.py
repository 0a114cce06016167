"""The engine-independent core of every flow.

A flow is a ``FlowSpec``: which topics it reads, how events are keyed, and a factory that makes one
``Processor`` per key (a device, a conversation, a model). A processor is a plain object: decoded
events in, events to emit out, state that snapshots to plain data. The Bytewax and Faust adapters only
move batches between Kafka and processors, so a flow's logic is tested without a broker and both
engines give the same outputs.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol, runtime_checkable

from models.checkpoint import Checkpointed


@dataclass(frozen=True, slots=True)
class Event:
    """A decoded input event and where it came from."""

    topic: str  # logical topic name, without the namespace prefix
    key: str | None
    record: dict[str, Any]
    partition: int = -1
    offset: int = -1
    broker_ms: int = -1  # the message's Kafka timestamp (append time, or create time on such topics); -1: unknown


@dataclass(frozen=True, slots=True)
class Emit:
    """An output event; ``record['event_id']`` derives from the input so that replays repeat it."""

    topic: str  # logical topic name, without the namespace prefix
    key: str
    event_type: str  # a schemas event type, used to encode it
    record: dict[str, Any]


class Processor(Checkpointed, ABC):
    """One key's logic and state. Subclasses keep state as plain data and say how to rebuild themselves.

    ``state_version`` names the layout of ``snapshot()``: raise it when the layout changes, so that a checkpoint
    of the old layout is refused with a clear message instead of restored wrongly.
    """

    state_version: ClassVar[int] = 1

    @abstractmethod
    def process(self, events: Sequence[Event]) -> list[Emit]:
        """Handle events of this key, in order, and return what to emit."""

    def flush(self) -> list[Emit]:
        """What the processor still holds back (events waiting for their turn), processed now: an engine calls
        it before the key leaves memory for being idle."""
        return []


SINK_ONLY = "sink."  # emits on topics with this prefix feed side sinks and are never written to Kafka


@runtime_checkable
class Sink(Protocol):
    """A side effect fed by a flow's emits (alert delivery, metrics); must tolerate redelivery."""

    def write(self, emits: Sequence[Emit]) -> None: ...

    def close(self) -> None: ...


def kafka_key(event: Event) -> str:
    return event.key or ""


@dataclass
class FlowSpec:
    """What an engine needs to run a flow."""

    name: str
    inputs: dict[str, str]  # logical topic -> schemas event type
    make_processor: Callable[[str], Processor]  # state key -> a fresh processor for it
    outputs: dict[str, str] = field(default_factory=dict)  # logical topic -> event type, for topic creation
    key: Callable[[Event], str] = kafka_key
    sinks: list[Callable[[], Sink]] = field(default_factory=list)  # factories, called once per worker


def run_local(spec: FlowSpec, events: Sequence[Event], processors: dict[str, Processor] | None = None) -> list[Emit]:
    """Run a flow over events in memory, no Kafka, no engine: the reference the adapters must match."""
    processors = {} if processors is None else processors
    out: list[Emit] = []
    for event in events:
        k = spec.key(event)
        proc = processors.get(k)
        if proc is None:
            proc = processors[k] = spec.make_processor(k)
        out.extend(proc.process([event]))
    return out
