"""The one path between Kafka messages and a flow's processors, shared by every engine adapter.

Decoding with dead-lettering, encoding emits, dead letters with their reason in headers, the metrics each of
those raises, and the list of topics a flow writes: Bytewax and Faust call the same code, so they decode,
dead-letter, encode and count identically, and a change here reaches both.

Dead letters are kept for weeks and read by operators, so those of inputs that carry what people said (transcripts)
are redacted as the flow's outputs are, by the flow's own ``FlowSpec.redact``: the letter is the event with its text
redacted, still one to send again (the flows redact first, so it scores the same), and its error text is redacted
too. The original bytes are not kept: the headers say where they are on the source topic, for as long as that topic
keeps them; a letter whose bytes cannot be read to redact them keeps no value at all.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, replace
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

from prometheus_client import Counter, Histogram

from connectors.dlq import dlq_headers
from connectors.kafka import KafkaSettings
from connectors.prometheus import DLQ_EVENTS, END_TO_END_LATENCY, EVENTS_CONSUMED, EVENTS_EMITTED, metric
from schemas import TRANSCRIPT, AvroSerde, RegistryUnavailableError, SchemaError
from schemas.topics import dlq_topic
from streams.processor import SINK_ONLY, Emit, Event, FlowSpec, Processor

__all__ = ["PROCESSING_FAILED", "Codec", "DeadLetter", "FlowOutput", "Message", "flow_topics", "flushed"]

log = logging.getLogger(__name__)

PROCESSING_FAILED = "processing_failed"  # the dead-letter reason of events whose processor raised, in both engines
SPOKEN = {TRANSCRIPT: "text"}  # input event types that carry what people said, and the field that holds it
EVENT_TIME_AHEAD = metric(Counter, "eddyline_event_time_ahead", "Outputs whose event time was ahead of this "
                          "process's clock, so that no event-time latency could be observed.", ["flow"])
BROKER_LATENCY = metric(Histogram, "eddyline_broker_to_processed_latency_seconds",
                        "From an input message's Kafka timestamp to the flow having processed it.", ["flow"],
                        buckets=END_TO_END_LATENCY._upper_bounds[:-1])


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """An input that could not become an event, or an emit that could not be encoded, with why.

    Parameters
    ----------
    topic
        The logical topic it was read from (or meant for); the letter goes to ``dlq.<topic>``.
    key, value
        The bytes as they came (for an invalid emit: its key and the record as JSON).
    reason
        A short machine reason (``decode_failed``, ``invalid_output``, a schema rule's name).
    error
        The error text, for people.
    partition, offset
        Where it was read; -1 for an emit.
    """

    topic: str
    key: bytes | None
    value: bytes | None
    reason: str
    error: str
    partition: int
    offset: int


class Message(NamedTuple):
    """A record ready for a producer: full topic name (namespace applied), key, value and headers."""

    topic: str
    key: bytes | None
    value: bytes | None
    headers: dict[str, bytes] | None


class Codec:
    """Knows a flow's topics: full names to logical ones and event types, and emits to bytes.

    Parameters
    ----------
    settings
        Kafka settings; their ``namespace`` prefixes every topic name.
    inputs
        Logical input topic -> the event type it carries.
    serde
        The Avro serde (by default on the configured schema registry, pausing while it cannot answer, with
        readers and writers compiled per schema).
    arrays
        Decode arrays of numbers as numpy arrays (``AvroSerde.decode``), for flows whose processors ask for them.
    """

    def __init__(self, settings: KafkaSettings, inputs: dict[str, str], serde: AvroSerde | None = None,
                 arrays: bool = False) -> None:
        from connectors.schema_registry import configured_serde

        self.settings = settings
        self.serde = serde or configured_serde(consumer=True, compiled=True)
        self.inputs = inputs
        self.arrays = arrays
        self._logical = {settings.topic(t): t for t in inputs}

    def decode(
        self, topic: str, key: bytes | None, value: bytes | None, partition: int, offset: int, broker_ms: int = -1
    ) -> Event | DeadLetter:
        """An event, or a dead letter that says why the message is not one.

        Raises only ``RegistryUnavailableError`` (a serde that does not pause): the registry's fault, not the
        event's, so it is retried later and never dead-lettered.

        Parameters
        ----------
        topic
            The full topic name it was read from.
        key, value
            The message's bytes.
        partition, offset
            Where it was read, kept in the dead letter's headers.
        broker_ms
            The message's Kafka timestamp in ms (-1: unknown), kept on the event for latency.
        """
        logical = self._logical.get(topic, topic)
        event_type = self.inputs.get(logical)
        if event_type is None:
            return DeadLetter(logical, key, value, "unknown_topic", f"flow does not read {topic}", partition, offset)
        try:
            record = self.serde.decode(value, event_type, arrays=self.arrays)
        except RegistryUnavailableError:
            raise
        except SchemaError as exc:
            return DeadLetter(logical, key, value, exc.reason, str(exc), partition, offset)
        except Exception as exc:  # a bug in a rule must not kill the flow either
            return DeadLetter(logical, key, value, "decode_failed", f"{type(exc).__name__}: {exc}", partition, offset)
        return Event(logical, key.decode(errors="replace") if key else None, record, partition, offset, broker_ms)

    def encode(self, emit: Emit) -> tuple[str, bytes, bytes]:
        """Full topic name, key and value; emits are checked against their schema like any producer's.

        Parameters
        ----------
        emit
            A processor's output.
        """
        topic = self.settings.topic(emit.topic)
        return topic, emit.key.encode(), self.serde.encode(emit.event_type, emit.record, topic=topic)


def _plain(value: Any) -> Any:
    """JSON for what ``json`` does not know: numpy arrays and numbers as lists and numbers, the rest as text."""
    return value.tolist() if hasattr(value, "tolist") else str(value)


def flow_topics(spec: FlowSpec) -> list[str]:
    """Every logical topic a flow reads or writes, dead letters of inputs and outputs included.

    Engines create them all before the first write, so that a dead letter never fails for want of a topic
    on a Kafka with auto-creation off.

    Parameters
    ----------
    spec
        The flow.
    """
    outputs = [t for t in spec.outputs if not t.startswith(SINK_ONLY)]
    written = [*spec.inputs, *outputs]
    return list(dict.fromkeys([*written, *(dlq_topic(t) for t in written)]))


class FlowOutput:
    """A flow's decode, encode and dead-letter path, with its metrics: what an engine adapter calls.

    Parameters
    ----------
    spec
        The flow: its name labels the metrics, its inputs and outputs decide the topics.
    settings
        Kafka settings (the namespace).
    serde
        The Avro serde (the local registry by default).
    """

    def __init__(self, spec: FlowSpec, settings: KafkaSettings, serde: AvroSerde | None = None) -> None:
        self.spec = spec
        self.settings = settings
        self.codec = Codec(settings, spec.inputs, serde, arrays=spec.arrays)
        self._latency = END_TO_END_LATENCY.labels(spec.name)
        self._ahead = EVENT_TIME_AHEAD.labels(spec.name)
        self._broker_latency = BROKER_LATENCY.labels(spec.name)
        self._consumed: dict[str, Any] = {}  # logical topic -> its counter child: labels() per event costs
        self._emitted: dict[str, Any] = {}
        self.positions: dict[tuple[str, int], int] = {}  # (logical topic, partition) -> next offset to take
        self._holds_back: bool | None = None
        self._spoken = {t: SPOKEN[e] for t, e in spec.inputs.items() if e in SPOKEN}  # logical topic -> its field
        if self._spoken and spec.redact is None:
            raise ValueError(f"flow {spec.name} reads what people said ({', '.join(self._spoken)}) but gives no "
                             "FlowSpec.redact: its dead letters would keep it")

    def holds_back(self, key: str) -> bool:
        """Whether the flow's processors hand anything on when their key leaves memory (they override
        ``Processor.flush``); where they do not, a key held as bytes leaves without being decoded.

        Parameters
        ----------
        key
            Any state key of the flow: the answer is the same for all, and kept after the first.
        """
        if self._holds_back is None:
            self._holds_back = type(self.spec.make_processor(key)).flush is not Processor.flush
        return self._holds_back

    def _count(self, cache: dict[str, Any], metric: Any, topic: str) -> None:
        counter = cache.get(topic)
        if counter is None:
            counter = cache[topic] = metric.labels(self.spec.name, topic)
        counter.inc()

    def decode(
        self, topic: str, key: bytes | None, value: bytes | None, partition: int, offset: int, broker_ms: int = -1
    ) -> Event | DeadLetter:
        """Decode one consumed message (full topic name), count it and note the partition's next offset.

        Parameters
        ----------
        topic, key, value, partition, offset, broker_ms
            As for ``Codec.decode``.
        """
        out = self.codec.decode(topic, key, value, partition, offset, broker_ms)
        if isinstance(out, DeadLetter):
            out = self._redacted(out)
        self._count(self._consumed, EVENTS_CONSUMED, out.topic)
        self.positions[(out.topic, partition)] = offset + 1
        return out

    @staticmethod
    def kafka_bound(emit: Emit) -> bool:
        """Whether an emit goes to Kafka (emits on ``sink.`` topics feed side sinks only).

        Parameters
        ----------
        emit
            A processor's output.
        """
        return not emit.topic.startswith(SINK_ONLY)

    def encode(self, emit: Emit) -> Message:
        """The message for an emit; an emit that breaks its schema becomes a dead letter, never an exception.

        Parameters
        ----------
        emit
            A processor's output, bound for Kafka.
        """
        try:
            topic, key, value = self.codec.encode(emit)
        except SchemaError as exc:  # a processor produced an invalid event: keep it, with the reason
            return self._unencodable(emit, "invalid_output", str(exc))
        except Exception as exc:  # a key or record no encoder takes must not stop the flow either
            return self._unencodable(emit, "encode_failed", f"{type(exc).__name__}: {exc}")
        self._count(self._emitted, EVENTS_EMITTED, emit.topic)
        lag_s = time.time() - emit.record.get("event_time", 0) / 1000.0
        if lag_s < 0.0:  # a producer clock ahead of ours: counted, since no latency can be measured
            self._ahead.inc()
        elif lag_s < 86_400:  # replays of old data say nothing about the pipeline's latency
            self._latency.observe(lag_s)
        return Message(topic, key, value, None)

    def processed(self, events: Sequence[Event]) -> None:
        """Observe, for events just processed, the time since the broker stamped them: the pipeline's own
        latency, whatever the producers' clocks say.

        Parameters
        ----------
        events
            Events a processor has just handled.
        """
        now_ms = time.time() * 1000.0
        for e in events:
            if e.broker_ms > 0:
                self._broker_latency.observe(max(0.0, now_ms - e.broker_ms) / 1000.0)

    def _unencodable(self, emit: Emit, reason: str, error: str) -> Message:
        log.error("invalid output event", extra={"flow": self.spec.name, "topic": emit.topic, "error": error})
        key = emit.key.encode(errors="surrogatepass") if isinstance(emit.key, str) else None  # the letter must go
        value = json.dumps(emit.record, default=_plain).encode()
        return self.dead_letter(DeadLetter(emit.topic, key, value, reason, error, -1, -1))

    def processing_failed(self, events: Sequence[Event], exc: Exception,
                          raw: Callable[[Event], tuple[bytes | None, Any]]) -> list[Message]:
        """Each event of a processor call that raised as a dead letter (``processing_failed``, with the error), so
        that one bad event costs its call, not the flow at every restart; ``raw`` gives an event's key and value.

        Both engines go on alike: the key keeps its processor as the call left it (what it applied before it raised
        stays applied, and its emits are lost), rather than roll back to a saved state that can be an epoch old and
        would forget events whose outputs are out (an opened incident); the events count as absorbed, so a replay
        does not apply them again, and a sequenced flow goes on with the next numbers rather than wait for these.

        Parameters
        ----------
        events
            The call's events.
        exc
            What the processor raised.
        raw
            An event's key and value as the dead letter carries them (its message's bytes, or ``reencoded``).
        """
        error = f"{type(exc).__name__}: {exc}"
        log.error("a processor raised; its events are dead-lettered", exc_info=exc,
                  extra={"flow": self.spec.name, "events": len(events), "error": error})
        return [self.dead_letter(self._redacted(DeadLetter(e.topic, *raw(e), PROCESSING_FAILED, error, e.partition,
                                                           e.offset))) for e in events]

    def _redacted(self, dead: DeadLetter) -> DeadLetter:
        """``dead`` with what people said redacted, where its topic carries that (see the module's docstring)."""
        field, redact = self._spoken.get(dead.topic), self.spec.redact
        if field is None or redact is None:
            return dead
        event_type, serde = self.spec.inputs[dead.topic], self.codec.serde
        try:
            record = serde.decode(dead.value or b"", event_type, check=False)
            record[field] = redact(record[field])
            value: bytes | None = serde.encode(event_type, record, topic=self.settings.topic(dead.topic), check=False)
        except Exception:  # unreadable (or not Avro: see ``reencoded``): nothing of it may go
            value = None
        return replace(dead, value=value, error=redact(dead.error))

    def reencoded(self, event: Event) -> tuple[bytes | None, bytes]:
        """An event's key and value as its input topic carries them (the value as JSON when it cannot be encoded),
        for a dead letter written where the message's own bytes are no longer at hand.

        Parameters
        ----------
        event
            A decoded input event.
        """
        key = None if event.key is None else event.key.encode(errors="surrogatepass")
        try:
            return key, self.codec.serde.encode(self.spec.inputs[event.topic], event.record,
                                                topic=self.settings.topic(event.topic), check=False)
        except Exception:
            return key, json.dumps(event.record, default=_plain).encode()

    def dead_letter(self, dead: DeadLetter) -> Message:
        """The dead-letter message for ``dead``: the bytes unchanged, the reason and origin in headers.

        Parameters
        ----------
        dead
            What could not be decoded or encoded, and why.
        """
        DLQ_EVENTS.labels(self.spec.name, dead.topic, dead.reason).inc()
        log.info("dead-lettered", extra={"flow": self.spec.name, "topic": dead.topic, "reason": dead.reason})
        headers = dlq_headers(self.settings.topic(dead.topic), dead.reason, dead.error, dead.partition, dead.offset)
        return Message(self.settings.topic(dlq_topic(dead.topic)), dead.key, dead.value, headers)


def flushed(spec: FlowSpec, processor: Processor) -> list[Emit] | None:
    """What the processor held back, handed on as its key leaves memory (both engines); None (logged as an error)
    if it raised: the key leaves all the same, and what it held has no message of its own to dead-letter.

    Parameters
    ----------
    spec
        The flow (its name goes in the log).
    processor
        The leaving key's processor.
    """
    try:
        return processor.flush()
    except Exception:
        log.exception("a processor raised while handing on what it held back; that is lost", extra={"flow": spec.name})
        return None
