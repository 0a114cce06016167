"""The Faust table store of the flow's processor states: in memory, loaded from the changelog in bulk.

Faust's in-memory store has no persisted offset, so a worker given a changelog partition replays it record by
record through Faust's recovery loop (a queue, a timed wait and bookkeeping per record): 20,000 states of
6.5 KB took it 10 s here with 16 MB fetches (10,000 took 13 s with its 1 MB ones), the C client 1.7 s. This
store reads its newly assigned changelog partitions with the C client first and says how far it read
(``persisted_offset``, as Faust's RocksDB store does from its files), so Faust's own recovery starts there and
replays only what was written after, if anything. The states stay bytes: each key is decoded only when the flow
next needs it. Standby partitions (more than one worker) are still replayed by Faust.

The store holds the keys of the changelog partitions that are active here, and no others: when a rebalance takes
a partition away (to another worker, or to a standby role here), its keys leave memory, and their states stay in
the changelog for the worker that owns them now. Keys the flow writes are put with their partition (``put``) for
that; before, only loaded keys had one, so a worker kept every device it had ever scored after a rebalance. A
partition that becomes active here, newly assigned or promoted from standby, is loaded in bulk; one that stays
active is not read again: the store reports the last offset the flow wrote to it (``written``) as persisted, where
Faust's recovery would otherwise replay, record by record, all that was written since its last recovery. A tombstone
deletes a key only if the key is held from that partition: a state that moved to another partition (``faust``: the
repartition topic's partitioner changed) leaves one where it was, and loading both must not delete it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable
from typing import Any

from confluent_kafka import KafkaException, Message
from faust import stores
from faust.stores import memory
from faust.types import TP

from connectors.kafka import KafkaSettings, scan_to_end

log = logging.getLogger(__name__)

LOAD_TIMEOUT_S = 600.0
STORE_URL = "eddyline-changelog://memory/"  # the table's ``store``: Faust finds this class by the URL's scheme


def read_changelog(settings: KafkaSettings, topic: str, partitions: Iterable[int], timeout_s: float = LOAD_TIMEOUT_S
                   ) -> tuple[dict[int, dict[bytes, bytes | None]], dict[int, int]]:
    """The latest value of each key in changelog partitions, and the last offset read in each.

    Reads each partition from its start to its end as of the start (``connectors.kafka.scan_to_end``, bulk
    fetches); a key whose latest record is a tombstone maps to None. Partitions that are empty are left out of
    the offsets.

    Parameters
    ----------
    settings
        Kafka settings (connection and security); the topic name is used as given.
    topic
        The changelog topic.
    partitions
        Its partitions to read.
    timeout_s
        Give up (``TimeoutError``) after this long.
    """
    partitions = list(partitions)
    values: dict[int, dict[bytes, bytes | None]] = {p: {} for p in partitions}
    last: dict[int, int] = {}

    def keep(msg: Message) -> None:
        values[msg.partition()][msg.key()] = msg.value()
        last[msg.partition()] = msg.offset()

    try:
        pending = scan_to_end(settings, topic, keep, partitions=partitions, timeout=timeout_s)
    except KafkaException as exc:
        raise RuntimeError(f"reading changelog {topic}: {exc.args[0].str()}") from None
    if pending:
        raise TimeoutError(f"reading changelog {topic} partitions {sorted(pending)} took over {timeout_s} s")
    return values, last


class ChangelogStore(memory.Store):
    """Faust's in-memory store, filled from the changelog in bulk when partitions are assigned to it.

    Parameters
    ----------
    args, kwargs
        As for Faust's stores; ``options["kafka"]`` is the ``KafkaSettings`` to read the changelog with.
    """

    def __post_init__(self) -> None:
        super().__post_init__()
        self._loaded: dict[TP, int] = {}  # changelog partition -> last offset loaded here, until recovery ends
        self._active: set[int] = set()  # the changelog partitions active here since the last rebalance
        self._written: dict[int, int] = {}  # active changelog partition -> last offset the flow wrote to it

    def put(self, key: bytes, value: bytes, partition: int) -> None:
        """Keep a state the flow wrote to changelog ``partition``, so that it leaves memory with its partition.

        Parameters
        ----------
        key, value
            The state key and its encoded state.
        partition
            The changelog partition it was written to (the input's, co-partitioned).
        """
        self.data[key] = value
        self._key_partition[key] = partition

    def written(self, partition: int, offset: int) -> None:
        """Note that the flow's writes to changelog ``partition`` reached ``offset`` (all of them in Kafka).

        What this worker wrote to a partition it keeps active is in memory already, so after a rebalance Faust's
        recovery goes on from there (``persisted_offset``) instead of replaying, record by record, everything
        written since its last recovery: in the rebalance test that replay rebuilt every processor a worker kept.

        Parameters
        ----------
        partition
            The changelog partition.
        offset
            The last offset written to it, as the broker acknowledged it.
        """
        if offset > self._written.get(partition, -1):
            self._written[partition] = offset

    def _drop_partitions_other_than(self, kept: set[int]) -> int:
        gone = [k for k, p in self._key_partition.items() if p not in kept]
        for key in gone:
            self.data.pop(key, None)
            del self._key_partition[key]
        return len(gone)

    @property
    def kafka(self) -> KafkaSettings:
        """The settings to read the changelog with (the table's ``options["kafka"]``)."""
        return (self.options or {})["kafka"]

    def persisted_offset(self, tp: TP) -> int | None:
        """How far this store holds ``tp`` (loaded, or written by the flow here); Faust's recovery goes on from
        there (None: from the start)."""
        known = [o for o in (self._loaded.get(tp), self._written.get(tp.partition)) if o is not None]
        return max(known) if known else None

    async def on_rebalance(self, assigned: Any, revoked: Any, newly_assigned: Any, generation_id: int = 0) -> None:
        """Drop the keys of partitions no longer active here; load the newly active ones before Faust's recovery
        reads its offsets."""
        await super().on_rebalance(assigned, revoked, newly_assigned, generation_id)
        topic = self.table.changelog_topic.get_topic_name()
        active = {tp.partition for tp in self.app.assignor.assigned_actives() if tp.topic == topic}
        wanted = sorted(active - self._active)  # newly assigned, or promoted from a standby copy Faust replayed
        for tp in revoked:
            self._loaded.pop(tp, None)
        self._written = {p: o for p, o in self._written.items() if p in active and p in self._active}
        dropped = self._drop_partitions_other_than(active)
        if dropped:
            log.info("states of partitions moved away dropped from memory", extra={
                "topic": topic, "keys": dropped, "active": sorted(active)})
        self._active = active
        if not wanted:
            return
        started = time.monotonic()
        values, last = await asyncio.get_running_loop().run_in_executor(
            None, read_changelog, self.kafka, topic, wanted)
        keys = 0
        for partition, found in values.items():
            for key, value in found.items():
                if value is None:
                    if self._key_partition.get(key) == partition:  # held from another: a state that moved away
                        self.data.pop(key, None)
                        del self._key_partition[key]
                else:
                    self.data[key] = value
                    self._key_partition[key] = partition
                    keys += 1
            if partition in last:
                self._loaded[TP(topic, partition)] = last[partition]
        log.info("changelog loaded in bulk", extra={"topic": topic, "partitions": wanted, "keys": keys,
                                                    "seconds": round(time.monotonic() - started, 3)})

    async def on_recovery_completed(self, active_tps: Any, standby_tps: Any) -> None:
        """Forget the loaded offsets: for partitions it keeps, Faust's recovery knows how far it has read."""
        await super().on_recovery_completed(active_tps, standby_tps)
        self._loaded.clear()


stores.STORES.aliases.setdefault(STORE_URL.partition(":")[0], f"{__name__}:ChangelogStore")
