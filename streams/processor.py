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
    """A decoded input event and where it came from.

    Parameters
    ----------
    topic
        The logical topic name, without the namespace prefix (``sensor.readings``).
    key
        The Kafka key as text, or None.
    record
        The decoded Avro record.
    partition, offset
        Where it was read; -1 when it did not come from Kafka (tests, ``run_local``).
    broker_ms
        The message's Kafka timestamp in ms (append time, or create time on such topics); -1 when unknown.
    """

    topic: str  # logical topic name, without the namespace prefix
    key: str | None
    record: dict[str, Any]
    partition: int = -1
    offset: int = -1
    broker_ms: int = -1  # the message's Kafka timestamp (append time, or create time on such topics); -1: unknown


@dataclass(frozen=True, slots=True)
class Emit:
    """An output event; ``record['event_id']`` derives from the input so that replays repeat it.

    Parameters
    ----------
    topic
        The logical topic name, without the namespace prefix. Topics starting with ``sink.`` feed the flow's
        side sinks only and are never written to Kafka.
    key
        The Kafka key (decides the partition).
    event_type
        The schemas event type used to encode ``record`` (``schemas.ANOMALY_SCORE``, ...).
    record
        The record to encode; it is validated against the event type's schema when encoded.
    """

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
        """Handle events of this key, in order, and return what to emit.

        Parameters
        ----------
        events
            Decoded events of this processor's key, in the order they were read; after a crash the events
            since the last checkpoint come again and must give the same emits.
        """

    def flush(self) -> list[Emit]:
        """What the processor still holds back (events waiting for their turn), processed now: an engine calls
        it before the key leaves memory for being idle."""
        return []


SINK_ONLY = "sink."  # emits on topics with this prefix feed side sinks and are never written to Kafka


@runtime_checkable
class Sink(Protocol):
    """A side effect fed by a flow's emits (alert delivery, metrics); must tolerate redelivery."""

    def write(self, emits: Sequence[Emit]) -> None:
        """Take a batch of the flow's emits (all of them: a sink picks the topics it cares about).

        Parameters
        ----------
        emits
            The emits of one batch, in order; after a crash some may come again.
        """
        ...

    def close(self) -> None: ...


def kafka_key(event: Event) -> str:
    """The default state key of a flow: the event's Kafka key (empty for none).

    Parameters
    ----------
    event
        The decoded input event.
    """
    return event.key or ""


@dataclass
class FlowSpec:
    """What an engine needs to run a flow: its topics, how events are keyed, and how processors are made.

    Parameters
    ----------
    name
        The flow's name; consumer group, recovery store and metrics labels derive from it.
    inputs
        Logical input topic -> the schemas event type it carries (used to decode and to dead-letter).
    make_processor
        State key -> a fresh processor for that key. Called the first time a key is seen, and before a
        restore, so it must not depend on anything but the key.
    outputs
        Logical output topic -> event type, so that the engines can create the topics before running.
    key
        Event -> the state key (a device, a conversation, a model). Defaults to the Kafka key.
    sinks
        Factories of side sinks fed with every emit (alert delivery, dashboards); called once per worker.
    arrays
        The engines decode arrays of numbers as numpy arrays for this flow's processors (lists where a message
        is left to fastavro, so processors accept both): for processors that compute on whole arrays.
    redact
        Takes what people said out of a text, as the flow's processors do before any output: dead letters are
        kept for weeks and read by operators, so the engines pass those of inputs that carry speech (transcripts)
        through it. A flow that reads such inputs must give it.

    Examples
    --------
    A flow that counts the events of each key, run in memory:

    >>> from streams.processor import Emit, Event, FlowSpec, Processor, run_local
    >>> class Count(Processor):
    ...     def __init__(self, key):
    ...         self.key, self.seen = key, 0
    ...     def process(self, events):
    ...         self.seen += len(events)
    ...         return [Emit("counts", self.key, "count", {"key": self.key, "seen": self.seen})]
    ...     def snapshot(self):
    ...         return {"seen": self.seen}
    ...     def restore(self, state):
    ...         self.seen = state["seen"]
    ...     def params(self):
    ...         return {"key": self.key}
    >>> spec = FlowSpec(name="count", inputs={"clicks": "click"}, make_processor=Count)
    >>> emits = run_local(spec, [Event("clicks", "ann", {}), Event("clicks", "bob", {}), Event("clicks", "ann", {})])
    >>> [(e.key, e.record["seen"]) for e in emits]
    [('ann', 1), ('bob', 1), ('ann', 2)]
    """

    name: str
    inputs: dict[str, str]  # logical topic -> schemas event type
    make_processor: Callable[[str], Processor]  # state key -> a fresh processor for it
    outputs: dict[str, str] = field(default_factory=dict)  # logical topic -> event type, for topic creation
    key: Callable[[Event], str] = kafka_key
    sinks: list[Callable[[], Sink]] = field(default_factory=list)  # factories, called once per worker
    arrays: bool = False  # decode arrays of numbers as numpy arrays
    redact: Callable[[str], str] | None = None  # what people said, out of a text: for dead letters of speech


def run_local(spec: FlowSpec, events: Sequence[Event], processors: dict[str, Processor] | None = None) -> list[Emit]:
    """Run a flow over events in memory, no Kafka, no engine: the reference the adapters must match.

    Parameters
    ----------
    spec
        The flow.
    events
        Decoded input events, in the order they would be read.
    processors
        Key -> processor, to continue from earlier calls; filled with the processors this call makes.

    Returns
    -------
    Every emit, in order, side-sink emits (``sink.*`` topics) included.
    """
    processors = {} if processors is None else processors
    out: list[Emit] = []
    for event in events:
        k = spec.key(event)
        proc = processors.get(k)
        if proc is None:
            proc = processors[k] = spec.make_processor(k)
        out.extend(proc.process([event]))
    return out
