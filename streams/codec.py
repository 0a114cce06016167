"""Between Kafka messages and processor events: decoding with dead-lettering, and encoding emits.

Shared by every engine adapter so that Bytewax and Faust decode, dead-letter and encode identically.
"""

from __future__ import annotations

from dataclasses import dataclass

from connectors.kafka import KafkaSettings
from schemas import AvroSerde, SchemaError
from streams.processor import Emit, Event


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """An input that could not become an event, with why."""

    topic: str  # logical source topic
    key: bytes | None
    value: bytes | None
    reason: str
    error: str
    partition: int
    offset: int


class Codec:
    """Knows a flow's topics: full names to logical ones and event types, and emits to bytes."""

    def __init__(self, settings: KafkaSettings, inputs: dict[str, str], serde: AvroSerde | None = None) -> None:
        self.settings = settings
        self.serde = serde or AvroSerde()
        self.inputs = inputs
        self._logical = {settings.topic(t): t for t in inputs}

    def decode(
        self, topic: str, key: bytes | None, value: bytes | None, partition: int, offset: int
    ) -> Event | DeadLetter:
        logical = self._logical.get(topic, topic)
        event_type = self.inputs.get(logical)
        if event_type is None:
            return DeadLetter(logical, key, value, "unknown_topic", f"flow does not read {topic}", partition, offset)
        try:
            record = self.serde.decode(value, event_type)
        except SchemaError as exc:
            return DeadLetter(logical, key, value, exc.reason, str(exc), partition, offset)
        except Exception as exc:  # a bug in a rule must not kill the flow either
            return DeadLetter(logical, key, value, "decode_failed", f"{type(exc).__name__}: {exc}", partition, offset)
        return Event(logical, key.decode(errors="replace") if key else None, record, partition, offset)

    def encode(self, emit: Emit) -> tuple[str, bytes, bytes]:
        """Full topic name, key and value; emits are checked against their schema like any producer's."""
        topic = self.settings.topic(emit.topic)
        return topic, emit.key.encode(), self.serde.encode(emit.event_type, emit.record, topic=topic)
