"""Faust's stream buffers bounded by the bytes of the messages they hold, not only by their number.

Faust buffers each agent's input in a queue of at most ``stream_buffer_maxsize`` events (4,096) and stops fetching
a partition while its queue is nearly full. An event is a Kafka message, whatever it holds: a sensor batch of 150
readings (2.2 KB) or one of the MQTT bridge's 10,000 (about 170 KB), so the bound's memory went with message size:
8.8 MB of 2.2 KB batches over a backlog (BENCHMARKS.md, "Session 11: Faust prefetch and revoked keys"), about
700 MB of 170 KB ones, 4 GB at the 1 MB librdkafka lets a message have. Here an event weighs one per
``unit_bytes`` of its message (at least one), so a queue holds ``maxsize`` small events as before, and large ones up
to about ``maxsize * unit_bytes`` bytes (``QUEUE_BYTES``), as the Bytewax source's prefetch is bounded in bytes.
"""

from __future__ import annotations

from typing import Any

from mode.utils.queues import ThrowableQueue

QUEUE_BYTES = 16 << 20  # per queue: 4,096 events of up to 4 KB, as Faust's default holds the 2.2 KB batches


def message_bytes(item: Any) -> int:
    """Bytes of the Kafka message behind a queued event (key and value as fetched); 0 if it has none.

    Parameters
    ----------
    item
        A queued event (``faust.Event``) or anything else a Faust queue holds.
    """
    message = getattr(item, "message", None)
    if message is None:
        return 0
    return max(0, getattr(message, "serialized_value_size", 0) or 0) + max(
        0, getattr(message, "serialized_key_size", 0) or 0)


class ByteBoundedQueue(ThrowableQueue):
    """Faust's queue, whose size (``qsize``: what ``full`` and the fetch pause compare with ``maxsize``) is the
    sum of its events' weights: one per ``unit_bytes`` of message, at least one.

    Parameters
    ----------
    unit_bytes
        Message bytes that weigh one.
    args, kwargs
        As for ``ThrowableQueue`` (``maxsize``, ``flow_control``, ``clear_on_resume``).
    """

    def __init__(self, *args: Any, unit_bytes: int, **kwargs: Any) -> None:
        self.unit_bytes = unit_bytes
        self.weight = 0
        super().__init__(*args, **kwargs)

    def weigh(self, item: Any) -> int:
        """What ``item`` counts for: its message's bytes in ``unit_bytes``, rounded up, at least one.

        Parameters
        ----------
        item
            A queued event.
        """
        return max(1, -(-message_bytes(item) // self.unit_bytes))

    def _put(self, item: Any) -> None:
        super()._put(item)
        self.weight += self.weigh(item)

    def _get(self) -> Any:
        item = super()._get()
        self.weight -= self.weigh(item)
        return item

    def qsize(self) -> int:
        return self.weight

    def clear(self) -> None:
        super().clear()
        self.weight = 0
