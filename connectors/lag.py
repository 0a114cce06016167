"""Consumer lag from what every Kafka-compatible broker gets right: committed offsets and fetch high watermarks.

A group's lag on a partition is the high watermark (the offset the next produced message gets) minus the
group's committed offset (the next message it will process). The high watermark is taken from a fetch
response, never from ListOffsets: some brokers (Tansu 0.6) answer ListOffsets with a wrong end offset
(99,563 for a partition holding 100,000), while a fetch response must carry the right high watermark or no
consumer would work. Reading it costs one small fetch per partition, started at the end ListOffsets reports
(or the group's committed offset, if that is further): a broker that answers ListOffsets right sends no
message back, one that answers with its last batch's start sends that batch only.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from confluent_kafka import (
    OFFSET_BEGINNING,
    OFFSET_END,
    Consumer,
    ConsumerGroupTopicPartitions,
    KafkaError,
    KafkaException,
    TopicPartition,
)

from connectors.kafka import KafkaSettings, make_admin, make_consumer
from connectors.prometheus import CONSUMER_LAG

__all__ = ["LagMonitor", "LagReader", "PartitionLag"]

log = logging.getLogger(__name__)

Partition = tuple[str, int]


@dataclass(frozen=True, slots=True)
class PartitionLag:
    """One partition's lag for one consumer group.

    Parameters
    ----------
    topic
        The full topic name (namespace included).
    partition
        The partition number.
    committed
        The group's committed offset; ``None`` when it committed nothing there (it starts at ``start``).
    start
        The log start offset (the oldest message still kept).
    high
        The high watermark from a fetch response.
    """

    topic: str
    partition: int
    committed: int | None
    start: int
    high: int

    @property
    def lag(self) -> int:
        """Messages the group has yet to process; never negative."""
        position = self.start if self.committed is None else self.committed
        return max(0, self.high - position)


class LagReader:
    """Reads committed offsets of any group (admin API) and high watermarks (fetches) for a set of topics.

    The reader's own consumer never joins a group and never commits: it assigns the partitions at the end
    ListOffsets reports (never before the group's committed offset), waits for one fetch response per
    partition (end-of-partition, or a message where that end was short), reads the watermarks that response
    carried and lets go of the partitions again. ``messages_read`` counts the messages that cost.

    Parameters
    ----------
    settings
        Where the brokers are and how to authenticate.
    timeout_s
        How long one reading waits for the broker before it gives up on the partitions still unanswered.

    Examples
    --------
    >>> reader = LagReader(KafkaSettings(bootstrap_servers="127.0.0.1:9"), timeout_s=0.1)  # doctest: +SKIP
    >>> [p.lag for p in reader.lag("eddyline-anomaly", ["sensor.readings"])]  # doctest: +SKIP
    [0, 12, 3]
    """

    def __init__(self, settings: KafkaSettings, *, timeout_s: float = 5.0) -> None:
        self.settings = settings
        self.timeout_s = timeout_s
        self.messages_read = 0  # messages fetched to find watermarks, over the reader's life
        self._admin = make_admin(settings)
        self._consumer = make_consumer(
            settings,
            f"eddyline-lag-reader-{uuid.uuid4().hex}",
            **{
                "enable.partition.eof": True,
                "fetch.wait.max.ms": 10,
                "max.partition.fetch.bytes": 1024,  # one small batch per partition is all a reading needs
                "queued.max.messages.kbytes": 64,
                "queued.min.messages": 1,
            },
        )

    def partitions(self, topics: Iterable[str]) -> list[Partition]:
        """Every partition of the topics (full names) that exist; a missing topic has none yet."""
        meta = self._consumer.list_topics(timeout=self.timeout_s)
        return [
            (name, p)
            for name in dict.fromkeys(topics)
            if (tm := meta.topics.get(name)) is not None and tm.error is None
            for p in sorted(tm.partitions)
        ]

    def committed(self, group: str, partitions: Iterable[Partition]) -> dict[Partition, int | None]:
        """The group's committed offset per partition (``None`` where it committed nothing)."""
        wanted = [TopicPartition(t, p) for t, p in partitions]
        if not wanted:
            return {}
        request = ConsumerGroupTopicPartitions(group, wanted)
        try:
            answer = self._admin.list_consumer_group_offsets([request], request_timeout=self.timeout_s)[group]
            found = answer.result(self.timeout_s).topic_partitions
        finally:
            self._admin.poll(0)  # serves its librdkafka log lines (make_admin routes them to logging): none pile up
        return {(tp.topic, tp.partition): (tp.offset if tp.offset >= 0 else None) for tp in found}

    def watermarks(self, starts: Mapping[Partition, int | None]) -> dict[Partition, tuple[int, int]]:
        """(log start, high watermark) per partition, from a fetch near each partition's end.

        The fetch starts at the end ListOffsets reports, or at ``start`` (``None``: the first offset) where that
        is further. Partitions the broker did not answer for within ``timeout_s`` are left out.
        """
        if not starts:
            return {}
        deadline = time.monotonic() + self.timeout_s  # ListOffsets (half of it at most) and the fetches together
        self._consumer.assign([TopicPartition(t, p, offset) for (t, p), offset in self._fetch_from(starts).items()])
        waiting = set(starts)
        try:
            while waiting and time.monotonic() < deadline:
                for msg in self._consumer.consume(500, 0.05):
                    err = msg.error()
                    if err is None:
                        self.messages_read += 1
                    if err is None or err.code() == KafkaError._PARTITION_EOF:
                        waiting.discard((msg.topic(), msg.partition()))
            return {
                key: self._consumer.get_watermark_offsets(TopicPartition(*key), cached=True)
                for key in starts
                if key not in waiting
            }
        finally:
            self._consumer.unassign()

    def _fetch_from(self, starts: Mapping[Partition, int | None]) -> dict[Partition, int]:
        """Where each partition's fetch starts: ListOffsets' end, or ``start`` where that is further.

        A short end (Tansu answers with its last batch's start) costs only the messages after it, and the fetch
        still carries the right high watermark; where ListOffsets fails the fetch starts at ``start``.
        """
        wanted = [TopicPartition(t, p, OFFSET_END) for t, p in starts]
        try:
            ends = {(tp.topic, tp.partition): tp.offset
                    for tp in self._consumer.offsets_for_times(wanted, timeout=self.timeout_s / 2)
                    if tp.error is None and tp.offset >= 0}
        except KafkaException as e:
            log.debug("ListOffsets failed; fetching from the committed offsets", extra={"error": str(e.args[0])})
            ends = {}
        return {key: max(OFFSET_BEGINNING if start is None else start, ends.get(key, OFFSET_BEGINNING))
                for key, start in starts.items()}

    def lag(self, group: str, topics: Iterable[str]) -> list[PartitionLag]:
        """The group's lag on every partition of ``topics`` (full names) the broker answered for."""
        return self.lags({group: topics})[group]

    def lags(self, groups: Mapping[str, Iterable[str]]) -> dict[str, list[PartitionLag]]:
        """Several groups' lag (group -> its topics), with one fetch per partition for all of them. A group whose
        offsets cannot be read now (one rebalancing) is left out, so that it does not blank the others."""
        committed = {}
        for g, topics in groups.items():
            try:
                committed[g] = self.committed(g, self.partitions(topics))
            except KafkaException as exc:
                log.info("consumer group offsets not read", extra={"group": g, "error": str(exc.args[0])})
        if not committed and groups:
            raise KafkaException(KafkaError(KafkaError._TRANSPORT, "no group's offsets could be read"))
        starts: dict[Partition, int | None] = {}
        for offsets in committed.values():
            for key, offset in offsets.items():
                known = starts.get(key, offset)
                starts[key] = None if offset is None or known is None else min(offset, known)
        marks = self.watermarks(starts)
        return {
            g: [PartitionLag(t, p, c, *marks[(t, p)]) for (t, p), c in offsets.items() if (t, p) in marks]
            for g, offsets in committed.items()
        }

    def close(self) -> None:
        self._consumer.close()


class LagMonitor(threading.Thread):
    """Keeps ``eddyline_consumer_lag{flow,topic,partition}`` of one flow process current.

    One per flow process, beside the engine: it reads the flow's group every ``interval_s`` and sets the
    gauge per input partition (a handful of series per flow, never one per device). An engine that keeps
    its offsets outside Kafka (Bytewax keeps them in its recovery store) passes ``positions``: they are
    committed to the group first, so that the gauge and any Kafka tool (the live page, kafka-exporter,
    Burrow) see how far the flow got.

    Parameters
    ----------
    settings
        Kafka settings; ``topics`` are logical names under their namespace.
    flow
        The flow's name, the ``flow`` label.
    group
        The consumer group whose committed offsets count.
    topics
        The flow's logical input topics, the ``topic`` label.
    interval_s
        Seconds between readings.
    positions
        Returns, per (logical topic, partition), the offset of the next message the flow will take.
    """

    def __init__(
        self,
        settings: KafkaSettings,
        flow: str,
        group: str,
        topics: Iterable[str],
        *,
        interval_s: float = 5.0,
        positions: Callable[[], Mapping[Partition, int]] | None = None,
    ) -> None:
        super().__init__(daemon=True, name=f"lag-monitor-{flow}")
        self.settings, self.flow, self.group = settings, flow, group
        self.logical = {settings.topic(t): t for t in topics}
        self.interval_s = interval_s
        self.positions = positions
        self.last: list[PartitionLag] = []
        self._committed: dict[Partition, int] = {}
        self._halt = threading.Event()
        self._reader: LagReader | None = None
        self._committer: Consumer | None = None

    def run(self) -> None:
        while not self._halt.is_set():
            try:
                self.refresh()
            except Exception as exc:  # noqa: BLE001 - the broker may be away; the next reading tries again
                log.warning("consumer lag not read", extra={"flow": self.flow, "error": str(exc)})
            self._halt.wait(self.interval_s)
        self._close()

    def refresh(self) -> list[PartitionLag]:
        """Commit the engine's positions (if any), read the lag and set the gauge; returns what it read.

        A partition this reading has no lag for (the broker did not answer for it in time, or the reading
        failed) loses its series, as a group whose offsets cannot be read is left out of ``LagReader.lags``:
        an old value exported as current would hide a lag that grows while the broker is away.
        """
        exported = {(p.topic, p.partition) for p in self.last}
        self.last = []
        try:
            if self._reader is None:
                self._reader = LagReader(self.settings)
            if self.positions is not None:
                self._commit(self.positions())
            self.last = self._reader.lag(self.group, self.logical)
        finally:
            for topic, partition in exported - {(p.topic, p.partition) for p in self.last}:
                CONSUMER_LAG.remove(self.flow, self.logical[topic], str(partition))
        for p in self.last:
            CONSUMER_LAG.labels(self.flow, self.logical[p.topic], str(p.partition)).set(p.lag)
        return self.last

    def _commit(self, positions: Mapping[Partition, int]) -> None:
        fresh = {
            (self.settings.topic(t), p): o
            for (t, p), o in list(positions.items())
            if self._committed.get((self.settings.topic(t), p)) != o
        }
        if not fresh:
            return
        if self._committer is None:
            self._committer = make_consumer(self.settings, self.group)
        self._committer.commit(offsets=[TopicPartition(t, p, o) for (t, p), o in fresh.items()], asynchronous=False)
        self._committer.poll(0)  # serves its librdkafka log lines (make_consumer routes them to logging): none pile up
        self._committed.update(fresh)

    def stop(self) -> None:
        """Stop after the current reading; the thread closes its clients."""
        self._halt.set()

    def _close(self) -> None:
        if self._reader is not None:
            self._reader.close()
        if self._committer is not None:
            self._committer.close()
