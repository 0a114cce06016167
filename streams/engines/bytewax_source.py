"""Bytewax's Kafka input with micro-batching: a partition hands on what is available, up to ``batch_size``
messages, ``linger`` after the first of them was polled, or at once when the batch is full or the broker already
holds more (a backlog, where waiting would only idle the worker).

Under a live load a partition polled as fast as Bytewax asks brings a few messages a poll, and each poll's
batch pays the dataflow's per-batch costs (an activation of every step, a produce round); holding a poll's
messages for a few milliseconds makes batches fewer and larger (what that saved at 1,000 devices was within
the noise of a loaded machine: BENCHMARKS.md, "Fleet scale", fourth pass). A partition's snapshot is the offset
of the next message it has *not* emitted, so messages it holds when an epoch closes are read again after a
restart (at least once), never skipped.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from bytewax.connectors.kafka import KafkaError, KafkaSourceMessage
from bytewax.inputs import FixedPartitionedSource, StatefulSourcePartition
from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition
from confluent_kafka import KafkaError as ConfluentKafkaError
from confluent_kafka.admin import AdminClient

from connectors.kafka import for_client, logged_config

Item = KafkaSourceMessage[bytes | None, bytes | None] | KafkaError[bytes | None, bytes | None]

POLL_S = 0.001  # what Bytewax's own source waits in a poll that finds nothing


def _item(msg: Any) -> Item:
    """A confluent message as Bytewax's source emits it: a message, or an error carrying it."""
    kafka_msg = KafkaSourceMessage(key=msg.key(), value=msg.value(), topic=msg.topic(), headers=msg.headers() or [],
                                   latency=msg.latency(), offset=msg.offset(), partition=msg.partition(),
                                   timestamp=msg.timestamp())
    error = msg.error()
    return kafka_msg if error is None else KafkaError(error, kafka_msg)


class LingerPartition(StatefulSourcePartition[Item, int]):
    """One Kafka partition, read in batches of up to ``batch_size`` messages held at most ``linger``.

    Parameters
    ----------
    consumer
        A consumer for this partition alone, not yet assigned.
    topic, partition
        The partition.
    offset
        Where to start: an offset, or ``OFFSET_BEGINNING``.
    batch_size
        Most messages in a batch; a full batch goes at once.
    linger
        How long the first message of a batch waits for others; zero: a batch is what one poll brings.
        A partition's end (with ``enable.partition.eof``) emits what is held, then ends the partition.
    """

    def __init__(self, consumer: Consumer, topic: str, partition: int, offset: int, batch_size: int,
                 linger: timedelta) -> None:
        self.consumer = consumer
        self.batch_size = batch_size
        self.linger_s = linger.total_seconds()
        self.resume = offset  # the next message not yet emitted: the snapshot
        self.held: list[Item] = []
        self.until = 0.0  # when the held messages go (monotonic): ``linger`` after the first was polled
        self.awake: datetime | None = None
        self.eof = False
        self.part = TopicPartition(topic, partition)
        consumer.assign([TopicPartition(topic, partition, offset)])

    def next_batch(self) -> list[Item]:
        if self.eof and not self.held:
            raise StopIteration()
        behind = self._poll() if not self.eof else False
        if not self.held:
            return []
        wait = self.until - time.monotonic()
        if wait > 0 and len(self.held) < self.batch_size and not behind and not self.eof:
            self.awake = datetime.now(UTC) + timedelta(seconds=wait)
            return []
        batch, self.held, self.awake = self.held, [], None
        for item in reversed(batch):
            offset = (item.msg if isinstance(item, KafkaError) else item).offset
            if offset is not None and offset >= 0:  # an error may carry no offset
                self.resume = offset + 1
                break
        return batch

    def _poll(self) -> bool:
        """Take what the consumer has, up to a full batch; True when the broker is known to hold more (a
        backlog, where waiting would only idle the worker)."""
        msgs = self.consumer.consume(self.batch_size - len(self.held), 0 if self.held else POLL_S)
        if not msgs:
            return False
        if not self.held:
            self.until = time.monotonic() + self.linger_s
        for msg in msgs:
            error = msg.error()
            if error is not None and error.code() == ConfluentKafkaError._PARTITION_EOF:
                self.eof = True  # the end: what came before it is emitted, then the partition stops
                return False
            self.held.append(_item(msg))
        if not self.linger_s:
            return False
        high = self.consumer.get_watermark_offsets(self.part, cached=True)[1]  # as of the last fetch
        return high > msgs[-1].offset() + 1

    def next_awake(self) -> datetime | None:
        return self.awake

    def snapshot(self) -> int:
        return self.resume

    def close(self) -> None:
        self.consumer.close()


class LingerKafkaSource(FixedPartitionedSource[Item, int]):
    """Kafka topics as a Bytewax input, one ``LingerPartition`` per Kafka partition; errors are emitted as
    ``KafkaError`` items (the dataflow decides), offsets are kept in Bytewax's recovery store.

    Parameters
    ----------
    config
        librdkafka client settings (``bootstrap.servers`` and any security and fetch settings) for the partitions'
        consumers; the admin client that lists partitions takes those it reads (``connectors.kafka.for_client``),
        so a consumer-only key costs it no CONFWARN line.
    topics
        Topics to read (full names).
    batch_size
        Most messages per batch.
    linger
        How long a batch's first message waits for more (zero: off).
    tail
        Wait for new messages at a partition's end; False: the input ends there.
    starting_offset
        Where a partition without a checkpoint starts.
    consumer_defaults
        librdkafka settings the source gives its partitions' consumers (fetch wait, prefetch bound), under
        ``config`` so that ``[kafka] extra`` still wins.
    """

    def __init__(self, config: dict[str, Any], topics: Iterable[str], *, batch_size: int, linger: timedelta,
                 tail: bool = True, starting_offset: int = OFFSET_BEGINNING,
                 consumer_defaults: Mapping[str, Any] | None = None) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, not {batch_size}")
        if linger < timedelta(0):
            raise ValueError(f"linger must be zero or more, not {linger}")
        self.config = config
        self.consumer_defaults = dict(consumer_defaults or {})
        self.topics = list(topics)
        self.batch_size = batch_size
        self.linger = linger
        self.tail = tail
        self.starting_offset = starting_offset

    def consumer_config(self) -> dict[str, Any]:
        """What each partition's consumer is built with, before the source's own group and end-of-partition keys."""
        return {**self.consumer_defaults, **self.config}

    def list_parts(self) -> list[str]:
        meta = AdminClient(logged_config(for_client(self.config, "admin"))).list_topics(timeout=30)
        parts = []
        for topic in self.topics:
            found = meta.topics.get(topic)
            if found is None or found.error is not None:
                raise RuntimeError(f"cannot list the partitions of Kafka topic {topic!r}: "
                                   f"{'no such topic' if found is None else found.error.str()}; create it first")
            parts.extend(f"{i}-{topic}" for i in sorted(found.partitions))
        return parts

    def build_part(self, step_id: str, for_part: str, resume_state: int | None) -> LingerPartition:
        index, topic = for_part.split("-", 1)
        config = {**self.consumer_config(), "group.id": "BYTEWAX_IGNORED", "enable.auto.commit": False,
                  "enable.partition.eof": not self.tail}
        offset = self.starting_offset if resume_state is None else resume_state
        return LingerPartition(Consumer(logged_config(config)), topic, int(index), offset, self.batch_size, self.linger)
