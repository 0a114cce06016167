"""Run a ``FlowSpec`` on Faust: agents over the input topics, processors kept in a Faust table.

The adapter owns no logic, like the Bytewax one: the shared ``FlowOutput`` decodes (dead-lettering what
fails) and encodes, one processor per state key does the work. Each key's processor lives in a table as
versioned plain bytes (``streams.state``: never pickle, so a changelog cannot carry code), in a table
whose changelog topic is co-partitioned with the input, so a key's state moves with its partition when
workers join or leave, and a restarted worker rebuilds it from the changelog (read in bulk by the table's
store, ``streams.engines.faust_store``: with Faust's own replay, record by record, a restart took 105 s at
100,000 devices in ``bench scale``, 17 s with the bulk read).

Delivery is at least once, and a batch is acknowledged only after everything it caused is in Kafka:
outputs and dead letters first, then side sinks, then the new processor states. Each state carries the
input offsets it has absorbed, so a batch replayed after a crash skips what the state already holds
(its outputs were delivered before the state was written) and processors never apply an event twice.
A flow whose state key is not the Kafka key (one model fed by many users) goes through a repartition
topic keyed by state key first, as Faust's ``group_by`` would. A processor that raises costs the events of that
call, dead-lettered with the error, never the worker (``FlowOutput.processing_failed``, as in the Bytewax adapter).

A state lives in the changelog partition of the input partition its events come from, so the repartition topic
puts a state key in the partition the producers put messages keyed by it in (``producers_partition``: librdkafka's
CRC32 by default). Faust's producer hashed with murmur2: a device's keyed and unkeyed messages went to two
partitions, and its state was kept in two. A state stored in another partition than the one it is held from moves:
a tombstone deletes it there. That upgrades a deployment from before, whose repartitioned keys lie in their
murmur2 partition: a key whose old partition this worker holds keeps its state; one held by another worker starts
afresh once, and whenever the repartition path brings it into memory it is deleted from its murmur2 partition,
so that no later rebalance brings the old state back (a tombstone deletes only a key held from that partition,
``faust_store``).

One key can get events along both paths from one input partition (a producer that keys some of a device's
messages and not others): the direct one comes before the repartitioned copy of an earlier offset. So each state
keeps its absorbed offsets per path, and the two agents and the idle sweep work on states one at a time (a lock,
uncontended unless a flow really gets both kinds of events). The common case, Kafka key = state key, takes one
path only and costs what it did. A key silent for ``idle_after_s`` is flushed (what its processor held back is
handed on, as Bytewax does before it evicts a key) and leaves memory; a timer sweeps, so this happens even when
no event arrives. A key loaded from the changelog (a restart, a rebalance) counts as spoken at its load: silent that
long since, its bytes are decoded and flushed likewise, as Bytewax does with a resumed key, or what it held back
(batches behind a lost one, a call's last utterance) would stay stored, handed on only if it ever spoke again. Its
bytes stay in the table and the changelog until ``idle_retention_s`` has passed since its state was last written (a
conversation that ended, a retired device), then a tombstone deletes it from both, so that a restart does not load
it again: the Bytewax engine deletes an evicted key's state from its idle store likewise. A state loaded from the
changelog counts from when this worker loaded it, so a restart may keep a key longer, never shorter; a key that
speaks after its tombstone starts afresh, as under Bytewax.

Skipping by absorbed offset is sound only while each input partition reaches a state in offset order, with
nothing left out before an offset it has applied. Faust keeps that order except in one place: after it
restored a table, it resumes the input partitions and seeks them to their committed offsets while its
fetcher is still delivering, and records fetched in that window can vanish (a restarted worker lost two
readings that way). The adapter stops the consumer's flow when a rebalance completes, so the seek happens
with nothing in flight, as it does when there is nothing to restore; Faust resumes the flow after it.

The commit must never pass an offset the flow has not processed. Faust acknowledges the events a stream
skips during a rebalance (flow stopped, or fetched under an older generation) as if they were processed,
and its commit takes the first run of consecutive acknowledged offsets; it guards a gap at the head by
``min(acked) - committed > 1``, which lets one unprocessed offset through, and not at all before a
partition's first commit. A commit in that window followed by a crash would lose events. So only events
the flow itself handled count as acknowledged (``_ack_only_processed``); skipped ones are fetched again
after the seek to the committed offset, which is what Faust intends by skipping them.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
import ssl
import zlib
from collections import deque
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from connectors.kafka import KafkaSettings, admin_config, create_topics, logged_config
from connectors.prometheus import PROCESSING_SECONDS
from streams.engines.lag import consumer_group, start_monitor
from streams.engines.output import DeadLetter, FlowOutput, Message, flow_topics, flushed
from streams.memory import flow_collector
from streams.processor import Emit, Event, FlowSpec, Processor, Sink
from streams.runtime import FAUST_DEFAULTS, RuntimeSettings
from streams.state import encode_processor, restore_or_fresh

log = logging.getLogger(__name__)

TABLE = "processors"
BATCH_WITHIN_S = 0.2  # the most an agent waits to fill a batch (Faust only: Bytewax hands on what a poll brought)
# Workers that keep a standby copy of each table partition. None by default: the table's store is in memory, so a
# standby copy is a full replay of the other workers' states held here (two workers each held every device), and a
# promotion does not use it (the store loads a partition that becomes active in bulk, as Faust would replay it).
STANDBY_REPLICAS = 0
# After each batch one tombstone per touched changelog partition closes it: some Kafka-compatible brokers
# (Tansu 0.6) report a partition's end as the start of its last record batch, and Faust's recovery stops
# at the reported end. With a one-record batch last, the reported end is the true one. Harmless on Kafka.
MARKER = b"\x00eddyline-end"
# Where a repartitioned message came from, so that dead letters and offsets name the real source, and its
# timestamp, so that a flow judging by broker time (the fleet flow) sees the source's, not the repartition's.
_SRC_TOPIC, _SRC_PARTITION, _SRC_OFFSET, _SRC_KEY, _SRC_TIMESTAMP = (
    f"eddyline.source.{k}" for k in ("topic", "partition", "offset", "key", "timestamp"))
# A state's absorbed offsets are kept per path, after the topic's name ('@' is not allowed in one): one input
# partition's events reach a key in offset order along each path, straight from the input or through the
# repartition topic, not across the two.
_DIRECT, _REKEYED = "@direct", "@by-key"
SWEEP_CHUNK = 1000  # keys an idle sweep flushes per hold of the lock (a decode and flush: about 0.1 ms a device)
# a state to store: key, changelog partition, encoded state, processor, absorbed offsets, partitions to delete it from
_Changed = tuple[bytes, int, bytes, Processor, dict[tuple[str, int], int], set[int]]


def app_id(spec: FlowSpec, settings: KafkaSettings) -> str:
    """The Faust app id: the consumer group, and the prefix of its internal topics.

    Parameters
    ----------
    spec
        The flow.
    settings
        Kafka settings; the namespace prefixes the id.
    """
    return consumer_group(spec.name, "faust", settings)


def changelog_topic(spec: FlowSpec, settings: KafkaSettings) -> str:
    """The compacted topic that holds the flow's processor states (Faust's table changelog).

    Parameters
    ----------
    spec, settings
        As for ``app_id``.
    """
    return f"{app_id(spec, settings)}-{TABLE}-changelog"


def repartition_topic(spec: FlowSpec, settings: KafkaSettings) -> str:
    """The topic events are re-keyed through, so that each state key lives on one partition.

    Parameters
    ----------
    spec, settings
        As for ``app_id``.
    """
    return f"{app_id(spec, settings)}-by-key"


def ensure_topics(spec: FlowSpec, settings: KafkaSettings) -> None:
    """Create the flow's topics and Faust's internal ones; Faust itself is not allowed to declare any.

    Parameters
    ----------
    spec, settings
        As for ``app_id``.
    """
    create_topics(settings, flow_topics(spec))
    raw = settings.model_copy(update={"namespace": ""})
    create_topics(raw, [repartition_topic(spec, settings)])
    _create_compacted(raw, changelog_topic(spec, settings))


def _create_compacted(settings: KafkaSettings, name: str) -> None:
    """A changelog keeps the latest state per key; compaction bounds it on brokers that compact."""
    from confluent_kafka import KafkaError, KafkaException
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient(logged_config(admin_config(settings)))
    topic = NewTopic(name, num_partitions=settings.partitions, replication_factor=settings.replication_factor,
                     config={"cleanup.policy": "compact"})
    try:
        admin.create_topics([topic], operation_timeout=30, request_timeout=30)[name].result(30)
    except KafkaException as exc:
        if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
            raise RuntimeError(f"creating changelog {name!r} failed: {exc.args[0].str()}") from exc
    create_topics(settings, [name])  # exists now: waits until it is in the metadata


def _credentials(settings: KafkaSettings) -> Any:
    import faust

    protocol = settings.security_protocol
    if protocol == "PLAINTEXT":
        return None
    context = None
    if protocol in ("SSL", "SASL_SSL"):
        context = ssl.create_default_context(cafile=settings.ssl_ca_location)
        if settings.ssl_certificate_location:
            context.load_cert_chain(settings.ssl_certificate_location, settings.ssl_key_location)
    if protocol == "SSL":
        return faust.SSLCredentials(context)
    mechanism = settings.sasl_mechanism or "PLAIN"
    if mechanism == "GSSAPI":
        return faust.GSSAPICredentials(ssl_context=context)
    password = settings.sasl_password.get_secret_value() if settings.sasl_password else None
    return faust.SASLCredentials(username=settings.sasl_username, password=password, mechanism=mechanism,
                                 ssl_context=context)


PARTITIONERS = ("consistent_random", "murmur2_random")  # the librdkafka partitioners the repartition topic follows


def producers_partition(key: bytes, partitions: int, partitioner: str = "consistent_random") -> int | None:
    """The partition librdkafka's ``partitioner`` gives a message keyed ``key``: CRC32 of the key modulo the partition
    count by default (``consistent_random``), Java's murmur2 with ``murmur2_random``; None (any) for an empty key,
    which both place at random.

    Parameters
    ----------
    key
        The message key.
    partitions
        The topic's partition count.
    partitioner
        librdkafka's ``partitioner`` setting (``[kafka] extra``), one of ``PARTITIONERS``.

    Examples
    --------
    >>> from streams.engines.faust import producers_partition
    >>> producers_partition(b"device-003", 3), producers_partition(b"device-003", 3, "murmur2_random")
    (2, 0)
    """
    if not key:
        return None
    if partitioner == "murmur2_random":
        from aiokafka.partitioner import murmur2

        return (murmur2(key) & 0x7FFFFFFF) % partitions
    return zlib.crc32(key) % partitions


def _seconds(ms: str) -> float:
    return int(ms) / 1000


def _acks(value: str) -> int:
    return -1 if value == "all" else int(value)


def _offset_reset(value: str) -> str:
    return {"smallest": "earliest", "beginning": "earliest", "largest": "latest", "end": "latest"}.get(value, value)


# librdkafka names in ``[kafka] extra`` -> the Faust settings that say the same to aiokafka
_FAUST_EQUIVALENTS: dict[str, tuple[tuple[str, Any], ...]] = {
    "client.id": (("broker_client_id", str),),
    "request.timeout.ms": (("broker_request_timeout", _seconds), ("producer_request_timeout", _seconds)),
    "session.timeout.ms": (("broker_session_timeout", _seconds),),
    "heartbeat.interval.ms": (("broker_heartbeat_interval", _seconds),),
    "max.poll.interval.ms": (("broker_max_poll_interval", _seconds),),
    "max.partition.fetch.bytes": (("consumer_max_fetch_size", int),),
    "auto.offset.reset": (("consumer_auto_offset_reset", _offset_reset),),
    "check.crcs": (("broker_check_crcs", lambda v: v == "true"),),
    "metadata.max.age.ms": (("consumer_metadata_max_age_ms", int), ("producer_metadata_max_age_ms", int)),
    "connections.max.idle.ms": (("consumer_connections_max_idle_ms", int),
                                ("producer_connections_max_idle_ms", int)),
    "linger.ms": (("producer_linger", _seconds),),
    "batch.size": (("producer_max_batch_size", int),),
    "message.max.bytes": (("producer_max_request_size", int),),
    "compression.type": (("producer_compression_type", lambda v: None if v == "none" else v),),
    "acks": (("producer_acks", _acks),),
}


def faust_options(settings: KafkaSettings) -> dict[str, Any]:
    """``[kafka] extra`` as Faust settings, for its consumer and producer (aiokafka, not librdkafka).

    Keys with an aiokafka equivalent are translated; a security key without one (``sasl.oauthbearer.*``, ...)
    is refused, since running without it would connect in a way nobody asked for; other librdkafka-only
    keys (``log_level``, ``fetch.min.bytes``, ...) are logged and left out; ``fetch.wait.max.ms`` is not a Faust
    setting but reaches its consumer all the same (``fetch_wait_ms``).

    Parameters
    ----------
    settings
        Kafka settings; only ``extra`` is read here.
    """
    options: dict[str, Any] = {}
    ignored = []
    for key, value in settings.extra.items():
        if key == "fetch.wait.max.ms":  # not a Faust setting: ``fetch_wait_ms`` gives it to the transport
            continue
        if key == "partitioner":  # not a Faust setting: the repartition topic follows it (``producers_partition``)
            if value not in PARTITIONERS:
                raise ValueError(f"[kafka] extra partitioner={value!r}: the Faust engine re-keys events as "
                                 f"{' or '.join(PARTITIONERS)} only; use one of them or run with --engine bytewax")
            continue
        targets = _FAUST_EQUIVALENTS.get(key)
        if targets is None:
            if key.startswith(("ssl.", "sasl.", "security.")):
                raise ValueError(f"[kafka] extra {key!r} has no equivalent in the Faust engine's client (aiokafka); "
                                 "use the [kafka] ssl_*/sasl_* settings, or run this flow with --engine bytewax")
            ignored.append(key)
            continue
        try:
            options.update((name, convert(value)) for name, convert in targets)
        except ValueError:
            raise ValueError(f"[kafka] extra {key}={value!r} is not a valid value for the Faust engine") from None
    if ignored:
        log.warning("[kafka] extra keys without a Faust equivalent are not applied to its clients: %s",
                    ", ".join(sorted(ignored)), extra={"ignored": sorted(ignored)})
    return options


def fetch_wait_ms(settings: KafkaSettings) -> int:
    """How long the flow's consumer lets the broker hold a fetch: ``[kafka] extra`` ``fetch.wait.max.ms``, else
    ``FETCH_WAIT_MS`` (``streams.engines.faust_transport``; Faust's own 1,500 ms held a live flow's input back).

    Parameters
    ----------
    settings
        Kafka settings; only ``extra`` is read here.
    """
    from streams.engines.faust_transport import FETCH_WAIT_MS

    value = settings.extra.get("fetch.wait.max.ms")
    if value is None:
        return FETCH_WAIT_MS
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"[kafka] extra fetch.wait.max.ms={value!r} is not a whole number of milliseconds") from None


def _headers(items: Any) -> dict[str, bytes]:
    if not items:
        return {}
    pairs = items.items() if isinstance(items, dict) else items
    return {k: (v if isinstance(v, bytes) else str(v).encode()) for k, v in pairs if v is not None}


def unabsorbed(events: Sequence[Event], absorbed: Mapping[tuple[str, int], int]) -> list[Event]:
    """The events a state has yet to apply: once each, every input partition's in offset order.

    A redelivered batch (after a rebalance or a seek back to the committed offset) may repeat an event or
    bring a partition's later offset before an earlier one; applied as they came, the later offset would
    mark the earlier event absorbed and the state would never see it. Each partition's events are put in
    offset order in the slots they held, so the interleaving across partitions stays as it arrived.

    Parameters
    ----------
    events
        A batch as delivered.
    absorbed
        (topic, partition) -> the highest offset the state has applied.

    Examples
    --------
    >>> from streams.engines.faust import unabsorbed
    >>> from streams.processor import Event
    >>> batch = [Event("t", "k", {}, 0, 5), Event("t", "k", {}, 0, 4), Event("t", "k", {}, 0, 5)]
    >>> [e.offset for e in unabsorbed(batch, {("t", 0): 3})]
    [4, 5]
    """
    found: dict[tuple[str, int], dict[int, Event]] = {}
    for e in events:
        tp = (e.topic, e.partition)
        if e.offset > absorbed.get(tp, -1):
            found.setdefault(tp, {}).setdefault(e.offset, e)
    queues = {tp: deque(by_offset[o] for o in sorted(by_offset)) for tp, by_offset in found.items()}
    out = []
    for e in events:
        queue = queues.get((e.topic, e.partition))
        if queue:
            out.append(queue.popleft())
    return out


def _along(absorbed: Mapping[tuple[str, int], int], path: str) -> dict[tuple[str, int], int]:
    """The offsets absorbed along one path (``_DIRECT``, ``_REKEYED``), by (topic, partition) as events name them."""
    cut = len(path)
    return {(topic[:-cut], p): o for (topic, p), o in absorbed.items() if topic.endswith(path)}


def _by_path(absorbed: dict[tuple[str, int], int]) -> dict[tuple[str, int], int]:
    """A restored state's offsets, each under its path. A state stored before the paths were told apart has one
    offset per input partition for both; it counts for both, as it did then (a replay is not applied again)."""
    for (topic, partition), offset in [(tp, o) for tp, o in absorbed.items() if "@" not in tp[0]]:
        del absorbed[(topic, partition)]
        for path in (_DIRECT, _REKEYED):
            tp = (topic + path, partition)
            absorbed[tp] = max(offset, absorbed.get(tp, -1))
    return absorbed


def _ack_only_processed(consumer: Any, flow: str) -> None:
    """Let Faust's consumer count an event as acknowledged only if a stream tracked it (handed it on).

    Streams track an event when they pass it to the agent; an event skipped during a rebalance is never
    tracked, so it stays unacknowledged and cannot move the commit past itself (see the module docstring).
    """
    if getattr(consumer, "_eddyline_acks_guarded", False):
        return
    acknowledge = consumer.ack
    skipped = {"n": 0}

    def ack(message: Any) -> bool:
        if message.tracked:
            return acknowledge(message)
        skipped["n"] += 1
        if skipped["n"] == 1 or skipped["n"] % 1000 == 0:
            log.info("skipped during a rebalance, not acknowledged", extra={
                "flow": flow, "worker_pid": os.getpid(), "skipped": skipped["n"],
                "partition": f"{message.topic}[{message.partition}]", "offset": message.offset})
        return False

    consumer.ack = ack
    consumer._eddyline_acks_guarded = True


class _FlowRunner:
    """One worker's share of a flow: the processors of the keys in its partitions, and its sinks."""

    def __init__(self, spec: FlowSpec, settings: KafkaSettings, app: Any, table: Any,
                 idle_after_s: float | None = FAUST_DEFAULTS["idle_after_s"],
                 idle_retention_s: float | None = FAUST_DEFAULTS["idle_retention_s"]) -> None:
        self.spec = spec
        self.settings = settings
        self.output = FlowOutput(spec, settings)
        self.app = app
        self.table = table
        self.changelog = changelog_topic(spec, settings)
        self.repartition = repartition_topic(spec, settings)
        self.partitioner = settings.extra.get("partitioner", PARTITIONERS[0])
        self.sinks: list[Sink] | None = None
        # key -> (the table value it was loaded from, processor, offsets absorbed, changelog partition); reused
        # while the table still holds that very object, rebuilt when recovery or a rebalance replaced it
        self._live: dict[bytes, tuple[bytes, Processor, dict[tuple[str, int], int], int]] = {}
        # key -> when it last worked or was loaded (monotonic s), until it is flushed; its processor is in _live, or
        # it was loaded as bytes and not decoded since
        self._used: dict[bytes, float] = {}
        # key held here -> when its state was last written or loaded (monotonic s), and its changelog partition
        self._held: dict[bytes, tuple[float, int]] = {}
        self.idle_after_s = idle_after_s
        self.idle_retention_s = idle_retention_s
        # Held from loading states to storing them, by both agents and the idle sweep: one key's state is never
        # worked on by two of them at once (each would store its own copy, and the last write would win).
        self._states = asyncio.Lock()

    def open_sinks(self) -> list[Sink]:
        if self.sinks is None:
            self.sinks = [factory() for factory in self.spec.sinks]
        return self.sinks

    def close(self) -> None:
        log.info("worker stopping", extra={"flow": self.spec.name, "worker_pid": os.getpid(), "live": len(self._live),
                                           "keys": sum(1 for k in self.table.data.data if k != MARKER)})
        for sink in self.sinks or []:
            try:
                sink.close()
            except Exception:
                log.exception("closing a sink failed", extra={"flow": self.spec.name})
        self.sinks = None

    async def handle(self, batch: Sequence[Any], repartitioned: bool) -> None:
        """Process one batch of Faust events; returns once all it caused is delivered.

        A batch that only forwards events to the repartition topic touches no state and leaves the other agent be.
        """
        pending: list[Any] = []
        groups: dict[bytes, tuple[int, list[Event]]] = {}
        raw: dict[tuple[str, int, int], tuple[bytes | None, Any]] = {}  # the events' bytes, for dead letters
        for fevent in batch:
            msg = fevent.message
            topic, key, partition, offset = msg.topic, msg.key, msg.partition, msg.offset
            broker_ms = int(msg.timestamp * 1000) if msg.timestamp and msg.timestamp > 0 else -1  # type 0: create time
            if repartitioned:
                h = _headers(msg.headers)
                topic, key = h[_SRC_TOPIC].decode(), h.get(_SRC_KEY)
                partition, offset = int(h[_SRC_PARTITION]), int(h[_SRC_OFFSET])
                broker_ms = int(h[_SRC_TIMESTAMP]) if _SRC_TIMESTAMP in h else broker_ms
            out = self.output.decode(topic, key, msg.value, partition, offset, broker_ms)
            if isinstance(out, DeadLetter):
                pending.append(await self._send(*self.output.dead_letter(out)))
                continue
            state_key = self.spec.key(out).encode()
            if not repartitioned and state_key != (key or b""):
                headers = {_SRC_TOPIC: topic.encode(), _SRC_PARTITION: str(partition).encode(),
                           _SRC_OFFSET: str(offset).encode(), _SRC_TIMESTAMP: str(broker_ms).encode()}
                if key is not None:
                    headers[_SRC_KEY] = key
                partition = producers_partition(state_key, self.settings.partitions, self.partitioner)
                pending.append(await self._send(self.repartition, state_key, msg.value, headers, partition))
                continue
            groups.setdefault(state_key, (msg.partition, []))[1].append(out)
            raw[(out.topic, partition, offset)] = (key, msg.value)
        if not groups:
            await asyncio.gather(*pending)
            return

        path = _REKEYED if repartitioned else _DIRECT
        async with self._states:
            emits: list[Emit] = []
            letters: list[Message] = []
            changed: list[_Changed] = []
            with PROCESSING_SECONDS.labels(self.spec.name).time():
                for state_key, (table_partition, events) in groups.items():
                    proc, offsets = self._load(state_key)
                    fresh = unabsorbed(events, _along(offsets, path))
                    if not fresh:
                        continue
                    try:
                        emits.extend(proc.process(fresh))
                    except Exception as exc:  # the events go to dead letters; the state is stored as the call left it
                        letters.extend(self.output.processing_failed(
                            fresh, exc, lambda e: raw.get((e.topic, e.partition, e.offset), (None, None))))
                    self.output.processed(fresh)
                    for e in fresh:
                        tp = (e.topic + path, e.partition)
                        offsets[tp] = max(e.offset, offsets.get(tp, -1))
                    blob = encode_processor(proc, state_key.decode(), offsets)
                    elsewhere = self._elsewhere(state_key, table_partition, repartitioned)
                    changed.append((state_key, table_partition, blob, proc, offsets, elsewhere))
            await self._deliver(pending, emits, letters, changed)

    async def _deliver(self, pending: list[Any], emits: list[Emit], letters: list[Message], changed: list[_Changed],
                       keep: bool = True) -> None:
        """Send the emits and dead letters, wait for everything in ``pending`` too, run the sinks, then store the
        states (kept live with ``keep``): outputs are in Kafka before any state says they were made."""
        for emit in emits:
            if self.output.kafka_bound(emit):
                pending.append(await self._send(*self.output.encode(emit)))
        for letter in letters:
            pending.append(await self._send(*letter))
        await asyncio.gather(*pending)
        if emits and self.spec.sinks:
            sinks = self.open_sinks()
            loop = asyncio.get_running_loop()
            for sink in sinks:  # blocking clients (HTTP) run off the loop so heartbeats go on
                await loop.run_in_executor(None, sink.write, emits)
        if changed:
            await self._store(changed, keep)

    async def sweep(self) -> None:
        """Flush the keys idle for ``idle_after_s`` and drop their processors; their bytes stay in the table.

        A processor hands on what it held back (the sensor flow's batches waiting behind a lost one) before it
        leaves memory, as in the Bytewax adapter; its emits are delivered and its new state stored like a batch's.
        A key loaded as bytes and silent since is decoded for that, unless the flow's processors hold nothing back.
        A flush that hands nothing on is taken to have changed nothing: the key is dropped without encoding its
        state again, which at a fleet's size is most of them. The keys go ``SWEEP_CHUNK`` at a time, the lock
        released in between: after a restart a fleet's silent keys come due at once. Then the keys out of memory
        whose state is older than ``idle_retention_s`` are deleted (``_forget``). Skipped while a rebalance is on:
        the partitions may be leaving this worker (``settled`` waits for a sweep under way).
        """
        if self.idle_after_s is None or getattr(self.app, "rebalancing", False):
            return
        cutoff = time.monotonic() - self.idle_after_s
        due = [k for k, used in self._used.items() if used < cutoff]
        if not due and not self._expired():
            return
        for start in range(0, len(due), SWEEP_CHUNK):
            async with self._states:
                if getattr(self.app, "rebalancing", False):
                    return
                emits: list[Emit] = []
                changed: list[_Changed] = []
                for key in due[start:start + SWEEP_CHUNK]:
                    if self._used.get(key, cutoff) >= cutoff:  # spoke since, or its partition left
                        continue
                    del self._used[key]
                    leaving = self._flush(key)
                    if leaving is not None:
                        emits.extend(leaving[0])
                        changed.append(leaving[1])
                await self._deliver([], emits, [], changed, keep=False)
        async with self._states:
            if not getattr(self.app, "rebalancing", False):
                await self._forget(self._expired())

    def _flush(self, key: bytes) -> tuple[list[Emit], _Changed] | None:
        """What a leaving key hands on, and its state to store; None where there is nothing to store.

        A live processor's state is stored even if its flush raised (as the call left it). A key held as bytes keeps
        them unless its flush hands something on, and is not even decoded where the flow's processors hold nothing
        back: most of a restarted fleet.
        """
        live = self._live.pop(key, None)
        blob = self.table.get(key)
        if blob is None:  # its partition left this worker
            return None
        if live is not None and live[0] is blob:
            _, proc, offsets, partition = live
            out = flushed(self.spec, proc)
            if out == []:
                return None
        else:  # loaded from the changelog and silent since (or recovery replaced the bytes it was loaded from)
            if not self.output.holds_back(key.decode()):
                return None
            proc, offsets = self._load(key)
            partition, out = self._held[key][1], flushed(self.spec, proc)
            if not out:
                return None
        return out or [], (key, partition, encode_processor(proc, key.decode(), offsets), proc, offsets, set())

    async def settled(self) -> None:
        """Return once no batch or sweep is working on states (one under way finishes first)."""
        async with self._states:
            return

    def forget_moved(self) -> None:
        """Drop the live processors whose state the table no longer holds: after a rebalance the store keeps
        only the partitions this worker owns (``faust_store``), and the processors must go with their bytes. The
        states it loaded start their retention now (see the module docstring), and their idle time: silent for
        ``idle_after_s``, they are flushed from their bytes (``sweep``)."""
        store = self.table.data
        for key in [k for k, live in self._live.items() if store.data.get(k) is not live[0]]:
            del self._live[key]
        now, held, self._held, loaded = time.monotonic(), self._held, {}, []
        for key, partition in store._key_partition.items():
            if key in store.data and key != MARKER:
                if key in held and held[key][1] == partition:
                    self._held[key] = held[key]
                else:
                    self._held[key] = (now, partition)
                    loaded.append(key)
        self._used = {k: used for k, used in self._used.items() if k in self._held}
        if self.idle_after_s is not None:
            self._used.update(dict.fromkeys(loaded, now))

    def _expired(self) -> list[bytes]:
        """The keys out of memory and flushed whose state was written (or loaded) over ``idle_retention_s`` ago."""
        if self.idle_retention_s is None:
            return []
        cutoff = time.monotonic() - self.idle_retention_s
        return [k for k, (written, _) in self._held.items() if written < cutoff and k not in self._used]

    async def _forget(self, keys: list[bytes]) -> None:
        """Delete these keys' states: a tombstone in each one's changelog partition, then out of the table."""
        if not keys:
            return
        gone = [(k, self._held.pop(k)[1]) for k in keys]
        await asyncio.gather(*[await self._send(self.changelog, k, None, None, p) for k, p in gone])
        await self._close({p for _, p in gone})
        store = self.table.data
        for key in keys:
            store.data.pop(key, None)
            store._key_partition.pop(key, None)
        log.info("states past the idle retention deleted", extra={
            "flow": self.spec.name, "keys": len(gone), "idle_retention_s": self.idle_retention_s})

    def _elsewhere(self, key: bytes, partition: int, repartitioned: bool) -> set[int]:
        """The changelog partitions besides ``partition`` that may hold an older state of ``key``: the one it is held
        from here, and, when the repartition path brings it into memory, its murmur2 partition (module docstring)."""
        places = {self._held[key][1]} if key in self._held else set()
        if repartitioned and key not in self._live:
            places.add(producers_partition(key, self.settings.partitions, "murmur2_random"))
        return places - {partition}

    def _load(self, state_key: bytes) -> tuple[Processor, dict[tuple[str, int], int]]:
        blob = self.table.get(state_key)
        live = self._live.get(state_key)
        if live is not None and blob is not None and live[0] is blob:
            return live[1], live[2]
        proc, offsets = restore_or_fresh(self.spec, state_key.decode(), blob)
        return proc, _by_path(offsets)

    async def _store(self, changed: list[_Changed], keep: bool = True) -> None:
        sent = [await self._send(self.changelog, k, blob, None, partition) for k, partition, blob, *_ in changed]
        moved = sorted((c[0], p) for c in changed for p in c[5])
        sent += [await self._send(self.changelog, k, None, None, p) for k, p in moved]
        await asyncio.gather(*sent)
        await self._close({c[1] for c in changed} | {p for _, p in moved})
        now = time.monotonic()
        for state_key, partition, blob, proc, offsets, _ in changed:
            self.table.data.put(state_key, blob, partition)  # with its partition, so it leaves when that does
            self._held[state_key] = (now, partition)
            if keep:
                self._live[state_key] = (blob, proc, offsets, partition)
                self._used[state_key] = time.monotonic()

    async def _close(self, partitions: set[int]) -> None:
        """End each changelog partition written to with a marker (``MARKER``), and tell the store how far it is."""
        closing = [await self._send(self.changelog, MARKER, None, None, p) for p in sorted(partitions)]
        for meta in await asyncio.gather(*closing):  # each partition's marker is its last record
            self.table.data.written(meta.partition, meta.offset)

    async def _send(self, topic: str, key: bytes | None, value: bytes | None,
                    headers: dict[str, bytes] | None, partition: int | None = None) -> Any:
        return await self.app.producer.send(topic, key, value, partition, None,
                                            list(headers.items()) if headers else None)


def app_settings(settings: KafkaSettings, state_dir: Path, standby_replicas: int = STANDBY_REPLICAS) -> dict[str, Any]:
    """The Faust settings of a flow's app: ``[kafka]``, then ``[kafka] extra`` where Faust can express it.

    Parameters
    ----------
    settings
        The flow's Kafka settings.
    state_dir
        Faust's local files (the table's local copy).
    standby_replicas
        Workers that keep a standby copy of each table partition (``STANDBY_REPLICAS``: see there).
    """
    from streams.engines.faust_transport import URL_SCHEME

    session_s = settings.session_timeout_ms / 1000
    hosts = [host.strip() for host in settings.bootstrap_servers.split(",")]
    options: dict[str, Any] = dict(
        broker=[f"kafka://{host}" for host in hosts],
        broker_consumer=[f"{URL_SCHEME}://{host}" for host in hosts],  # Faust's consumer with our fetch wait
        broker_credentials=_credentials(settings),
        broker_client_id=settings.client_id,
        broker_session_timeout=session_s,
        broker_heartbeat_interval=max(0.1, min(3.0, session_s / 3)),
        broker_rebalance_timeout=max(session_s, 10.0),
        broker_commit_interval=1.0,
        datadir=str(state_dir),
        store="memory://",
        topic_partitions=settings.partitions,
        topic_replication_factor=settings.replication_factor,
        topic_allow_declare=False,
        topic_disable_leader=True,
        table_standby_replicas=standby_replicas,
        consumer_auto_offset_reset="earliest",
        producer_acks=-1,
        producer_linger=settings.linger_ms / 1000,
        # aiokafka's 16 KB held a partition's sends to one or two 6.8 KB states a broker round trip
        producer_max_batch_size=settings.batch_size,
        producer_compression_type=None if settings.compression == "none" else settings.compression,
        processing_guarantee="at_least_once",
        # The store's persisted offsets were read from the changelog itself or acknowledged by it, so they cannot be
        # ahead of it; Faust's check compares them with the end the broker reports, which the embedded broker gives
        # as the start of the last batch: a worker killed between its states and its end markers left a batch of
        # several records last, and the next worker crashed in recovery (ConsistencyError).
        recovery_consistency_check=False,
        web_enabled=False,
        autodiscover=False,
    )
    options.update(faust_options(settings))
    return options


def build_app(
    spec: FlowSpec,
    settings: KafkaSettings,
    *,
    state_dir: Path,
    batch_size: int = FAUST_DEFAULTS["batch_size"],
    batch_within: float = BATCH_WITHIN_S,
    standby_replicas: int = STANDBY_REPLICAS,
    idle_after_s: float | None = FAUST_DEFAULTS["idle_after_s"],
    idle_retention_s: float | None = FAUST_DEFAULTS["idle_retention_s"],
) -> Any:
    """The Faust app of a flow: one agent over its inputs, one over its repartition topic, one table.

    Parameters
    ----------
    spec, settings
        The flow and its Kafka settings.
    state_dir
        Faust's local files (the table's local copy).
    batch_size
        Most events an agent takes at a time.
    batch_within
        Seconds an agent waits to fill a batch.
    standby_replicas
        Workers that keep a standby copy of each table partition (``STANDBY_REPLICAS``: see there).
    idle_after_s
        Seconds after which a silent key's processor leaves memory, its bytes staying in the table (None: never).
    idle_retention_s
        Seconds after its last write after which an idle key's state is deleted from the table and the changelog
        (None: kept for ever; deleted only while ``idle_after_s`` evicts).
    """
    from streams.engines.faust_app import App
    from streams.engines.faust_store import STORE_URL

    app = App(app_id(spec, settings), fetch_wait_ms=fetch_wait_ms(settings),
              **app_settings(settings, state_dir, standby_replicas))
    table = app.Table(TABLE, default=None, store=STORE_URL, options={"kafka": settings},
                      partitions=settings.partitions, changelog_topic=app.topic(
                          changelog_topic(spec, settings), key_serializer="raw", value_serializer="raw",
                          partitions=settings.partitions, internal=False))
    runner = _FlowRunner(spec, settings, app, table, idle_after_s, idle_retention_s)
    inputs = app.topic(*[settings.topic(t) for t in spec.inputs], key_serializer="raw", value_serializer="raw")
    by_key = app.topic(repartition_topic(spec, settings), key_serializer="raw", value_serializer="raw")

    async def drain(stream: Any, repartitioned: bool) -> None:
        _ack_only_processed(app.consumer, spec.name)
        runner.open_sinks()  # at start-up, as Bytewax builds its sinks: a sink may serve before any event
        try:
            async for batch in stream.noack_take(batch_size, within=batch_within):
                try:
                    await runner.handle(batch, repartitioned)
                except Exception as exc:  # nothing of this batch is acknowledged: it replays after a restart
                    log.exception("batch failed; stopping the worker", extra={"flow": spec.name})
                    await app.crash(exc)
                    return
                for event in batch:
                    await stream.ack(event)
        finally:
            runner.close()

    @app.agent(inputs, name=f"{spec.name}-in", concurrency=1)
    async def consume(stream: Any) -> None:
        await drain(stream, repartitioned=False)

    @app.agent(by_key, name=f"{spec.name}-by-key", concurrency=1)
    async def consume_by_key(stream: Any) -> None:
        await drain(stream, repartitioned=True)

    if idle_after_s is not None:
        @app.timer(idle_after_s / 4, name=f"{spec.name}-idle")
        async def sweep_idle() -> None:
            # on a clock, not on arrivals: a key's held batches go out when it falls silent even if all do
            try:
                await runner.sweep()
            except Exception as exc:  # as for a batch; the flushed states were not stored, so they flush again
                log.exception("idle sweep failed; stopping the worker", extra={"flow": spec.name})
                await app.crash(exc)

    input_names = set(inputs.topics)

    @app.on_rebalance_complete.connect
    async def seek_with_flow_stopped(sender: Any, **_: Any) -> None:
        # Faust seeks the input partitions to their committed offsets right after this signal and resumes
        # the flow after the seek; after a table restore the flow is still running and records fetched
        # during the seek can be lost (see the module docstring). Stopped here, nothing is in flight.
        app.consumer.stop_flow()

    @app.on_partitions_revoked.connect
    async def settle_before_revoke(sender: Any, revoked: Any, **_: Any) -> None:
        # the partitions may go to another worker: a sweep under way stores its states before they do
        await runner.settled()

    @app.on_partitions_assigned.connect
    async def assigned(sender: Any, assigned: Any, **_: Any) -> None:
        mine = sorted(f"{tp.topic}[{tp.partition}]" for tp in assigned if tp.topic in input_names)
        log.info("partitions assigned", extra={"flow": spec.name, "worker_pid": os.getpid(), "partitions": mine})

    @table.on_recover
    async def recovered() -> None:
        runner.forget_moved()
        keys = sum(1 for k in table.data if k != MARKER)
        log.info("state restored from the changelog", extra={"flow": spec.name, "worker_pid": os.getpid(),
                                                              "keys": keys, "live": len(runner._live)})

    app.eddyline_runner = runner
    return app


def run_worker(spec: FlowSpec, settings: KafkaSettings, *, state_dir: Path, loglevel: str = "WARNING",
               lag_interval_s: float | None = FAUST_DEFAULTS["lag_interval_s"], **app_options: Any) -> int:
    """Run one Faust worker in this process until SIGINT/SIGTERM; returns its exit code.

    Parameters
    ----------
    spec, settings, state_dir
        As for ``build_app``.
    loglevel
        Faust's log level.
    lag_interval_s
        How often a lag monitor reads the app's group (None: no monitor).
    app_options
        More ``build_app`` keywords.
    """
    import faust

    state_dir.mkdir(parents=True, exist_ok=True)
    app = build_app(spec, settings, state_dir=state_dir, **app_options)
    worker = faust.Worker(app, loglevel=loglevel, quiet=True, redirect_stdouts=False, override_logging=False)
    monitor = start_monitor(spec, settings, "faust", lag_interval_s)
    try:
        with flow_collector():
            worker.execute_from_commandline()
    except SystemExit as exc:
        return int(exc.code or 0)
    finally:
        if monitor is not None:
            monitor.stop()
    return 0


def run(
    spec: FlowSpec,
    settings: KafkaSettings,
    *,
    state_dir: Path | None = None,
    workers: int = 1,
    batch_size: int = FAUST_DEFAULTS["batch_size"],
    standby_replicas: int = STANDBY_REPLICAS,
    loglevel: str = "WARNING",
    lag_interval_s: float | None = FAUST_DEFAULTS["lag_interval_s"],
    idle_after_s: float | None = FAUST_DEFAULTS["idle_after_s"],
    idle_retention_s: float | None = FAUST_DEFAULTS["idle_retention_s"],
) -> None:
    """Run until interrupted: ``workers`` Faust workers (one process each) in one consumer group.

    Faust keeps state in Kafka (the changelog), so ``state_dir`` holds only Faust's local files.

    Parameters
    ----------
    spec, settings, batch_size, standby_replicas, idle_after_s, idle_retention_s
        As for ``build_app``.
    state_dir
        Local files, one folder per worker (default ``.eddyline/state/<flow>-faust``).
    workers
        Worker processes.
    loglevel
        Faust's log level.
    lag_interval_s
        How often each worker's lag monitor reads the app's group (None: no monitor).
    """
    folder = state_dir or Path(".eddyline/state") / f"{spec.name}-faust"
    ensure_topics(spec, settings)
    options = {"batch_size": batch_size, "standby_replicas": standby_replicas, "loglevel": loglevel,
               "lag_interval_s": lag_interval_s, "idle_after_s": idle_after_s,
               "idle_retention_s": idle_retention_s}
    if workers <= 1:
        code = run_worker(spec, settings, state_dir=folder / "worker-0", **options)
        if code:
            raise SystemExit(code)
        return
    from streams.engines.bytewax_cluster import supervise

    supervise(spec.name, [(_child, (spec, settings, folder / f"worker-{i}", options)) for i in range(workers)])


def _child(spec: FlowSpec, settings: KafkaSettings, folder: Path, options: dict[str, Any]) -> None:
    raise SystemExit(run_worker(spec, settings, state_dir=folder, **options))


def main(argv: Sequence[str] | None = None) -> None:
    """``python -m streams.engines.faust FLOW [--state-dir DIR] [--workers N]``, settings from the environment."""
    import argparse

    from streams import logs
    from streams.flows import flow_spec

    parser = argparse.ArgumentParser(prog="python -m streams.engines.faust", description=main.__doc__)
    parser.add_argument("flow")
    parser.add_argument("--state-dir", type=Path, default=None)
    parser.add_argument("--workers", type=int, default=1)
    args = parser.parse_args(argv)
    logs.setup()
    runtime = RuntimeSettings()
    spec = flow_spec(args.flow)
    try:
        run(spec, KafkaSettings(), state_dir=args.state_dir or runtime.state_dir / f"{spec.name}-faust",
            workers=args.workers, **runtime.faust_options(),
            loglevel=logging.getLevelName(logging.getLogger().level))
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
