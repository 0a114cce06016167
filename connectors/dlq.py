"""Dead letters: input that could not be processed goes to ``dlq.<topic>`` unchanged, with why in headers.

The bytes are kept as they came so the event can be replayed once the cause is fixed; the headers say
what went wrong (a short machine reason plus the error text) and where the message came from.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping

from connectors.kafka import EventProducer
from schemas.topics import dlq_topic

__all__ = ["DeadLetterProducer", "dlq_headers", "dlq_info", "dlq_topic"]

PREFIX = "eddyline.dlq."
REASON, ERROR, TOPIC, PARTITION, OFFSET, TIME = (
    PREFIX + k for k in ("reason", "error", "topic", "partition", "offset", "time")
)
_MAX_ERROR = 2000
MAX_PAYLOAD = 512 * 1024  # of a dead letter's value: with its headers it fits one Kafka message (1 MB by default)


def dlq_headers(full_source_topic: str, reason: str, error: str, partition: int, offset: int) -> dict[str, bytes]:
    """The headers of a dead letter; engines that write through their own producer use this too.

    Parameters
    ----------
    full_source_topic
        The topic it was read from, namespace included.
    reason
        A short machine reason (``undecodable``, ``invalid``, ``unknown_schema``, ...).
    error
        The error text, for people (cut to 2000 characters).
    partition, offset
        Where it was read; -1 for an output that could not be encoded.

    Examples
    --------
    >>> from connectors.dlq import dlq_headers, dlq_info
    >>> headers = dlq_headers("prod.sensor.readings", "undecodable", "magic byte is 123", 2, 41)
    >>> info = dlq_info(headers)
    >>> info["reason"], info["topic"], info["partition"], info["offset"]
    ('undecodable', 'prod.sensor.readings', '2', '41')
    """
    return {
        REASON: reason.encode(),
        ERROR: error[:_MAX_ERROR].encode(errors="replace"),
        TOPIC: full_source_topic.encode(),
        PARTITION: str(partition).encode(),
        OFFSET: str(offset).encode(),
        TIME: str(time.time_ns() // 1_000_000).encode(),
    }


class DeadLetterProducer:
    """Sends undecodable or invalid input to its dead-letter topic through an ``EventProducer``.

    Delivery failures surface on the producer's ``flush``, which callers run before committing offsets.
    ``sent`` and ``by_reason`` count what was sent.

    Parameters
    ----------
    producer
        The producer to send with; its settings' namespace applies to the dead-letter topic.
    """

    def __init__(self, producer: EventProducer) -> None:
        self.producer = producer
        self.sent = 0
        self.by_reason: dict[str, int] = {}

    def send(
        self,
        source_topic: str,
        value: bytes | None,
        key: bytes | str | None,
        reason: str,
        error: str,
        partition: int,
        offset: int,
        origin: str | None = None,
    ) -> None:
        """Send one dead letter to ``dlq.<source_topic>``, the bytes unchanged and why in headers.

        Parameters
        ----------
        source_topic
            The logical topic it was read from.
        value, key
            The message as it came; a value over ``MAX_PAYLOAD`` is cut (the error says so): Kafka would refuse the
            letter whole, and a producer stopped on it would stop on it again after every restart.
        reason, error, partition, offset
            As for ``dlq_headers``.
        origin
            Where the input came from when that is not the Kafka topic (an MQTT topic); goes in the topic header.
        """
        if value is not None and len(value) > MAX_PAYLOAD:
            error = f"{error} (the value's {len(value)} bytes are cut to the first {MAX_PAYLOAD} here)"
            value = value[:MAX_PAYLOAD]
        where = origin if origin is not None else self.producer.settings.topic(source_topic)
        headers = dlq_headers(where, reason, error, partition, offset)
        self.producer.produce_raw(dlq_topic(source_topic), value, key, headers)
        self.sent += 1
        self.by_reason[reason] = self.by_reason.get(reason, 0) + 1


def dlq_info(
    headers: Mapping[str, bytes | str | None] | Iterable[tuple[str, bytes | str | None]] | None,
) -> dict[str, str]:
    """The dead-letter headers of a message (as ``Message.headers()`` gives them), keyed without the prefix.

    ``time`` is milliseconds since the Unix epoch, UTC, when the letter was written.

    Parameters
    ----------
    headers
        A mapping or a list of (name, value) pairs; other headers are ignored, None gives ``{}``.
    """
    if not headers:
        return {}
    items = headers.items() if isinstance(headers, Mapping) else headers
    out: dict[str, str] = {}
    for name, value in items:
        if name.startswith(PREFIX):
            if isinstance(value, bytes):
                value = value.decode(errors="replace")
            out[name[len(PREFIX):]] = "" if value is None else value
    return out
