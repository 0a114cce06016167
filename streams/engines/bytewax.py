"""Run a ``FlowSpec`` on Bytewax: Kafka in, processors keyed by state key, Kafka and side sinks out.

The adapter owns no logic: it decodes (dead-lettering what fails), hands each key's batch to that
key's processor, encodes what comes back and writes it. Processors are checkpointed by Bytewax's
recovery (as versioned plain bytes, ``streams.state``, at each epoch with the Kafka offsets), so a restart
resumes from the last epoch and replays at most one epoch of input; outputs repeat with the same ids and
sinks drop the repeats. Keys silent for a while move to an ``IdleStore`` next to the recovery files. A processor
that raises costs the events of that call, dead-lettered with the error (``_process``), never the flow.
With ``buckets`` (``[runtime] state_buckets``), Bytewax's state keys are buckets of keys (``_BucketLogic``) whose
checkpoints carry older states by version in that store, so a restart loads what changed lately, not every key.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import bytewax.operators as op
from bytewax.connectors.kafka import KafkaError, KafkaSourceMessage
from bytewax.dataflow import Dataflow
from bytewax.operators import StatefulBatchLogic
from bytewax.outputs import DynamicSink, FixedPartitionedSink, StatefulSinkPartition, StatelessSinkPartition

from connectors.kafka import EventProducer, KafkaSettings, client_config, create_topics
from connectors.prometheus import PROCESSING_SECONDS
from streams.engines.bytewax_epochs import RecoveryEpochs
from streams.engines.bytewax_source import LingerKafkaSource
from streams.engines.lag import start_monitor
from streams.engines.output import FlowOutput, Message, flow_topics, flushed
from streams.memory import HeapReleaser, flow_collector
from streams.processor import Emit, Event, FlowSpec, Processor, Sink
from streams.runtime import BYTEWAX_DEFAULTS
from streams.state import (
    IdleStore, StateError, bucket_entry, bucket_of, decode_bucket, decode_checkpoint, encode_bucket_entries,
    encode_processor, is_bucket, refuse, restore_or_fresh,
)

log = logging.getLogger(__name__)

BYTEWAX_EPOCH_INTERVAL = timedelta(seconds=10)  # cli_main's own default

IDLE_DIR = "idle"  # evicted keys, one SQLite file per process, in a folder of their own: SQLite files of
IDLE_FILES = "idle*.sqlite3"  # ours beside Bytewax's recovery partitions made a cluster's processes panic at start
LEGACY_IDLE_FILE = "idle.sqlite3"  # where eddyline 0.x kept them, in the recovery folder itself


def idle_path(state_dir: Path, process: int = 0) -> Path:
    """Where one process of a flow keeps its evicted keys.

    Parameters
    ----------
    state_dir
        The flow's state folder.
    process
        The process's index in its cluster (0 alone).
    """
    return state_dir / IDLE_DIR / f"idle-{process}.sqlite3"


def move_legacy_idle_store(state_dir: Path) -> None:
    """Move an idle store left in the recovery folder by an older eddyline into the idle folder, where every
    process reads it; call it before the processes start.

    Parameters
    ----------
    state_dir
        The flow's state folder.
    """
    legacy = state_dir / LEGACY_IDLE_FILE
    if legacy.exists():
        (state_dir / IDLE_DIR).mkdir(parents=True, exist_ok=True)
        legacy.rename(state_dir / IDLE_DIR / LEGACY_IDLE_FILE)


def idle_store(state_dir: Path, process: int = 0, retention_s: float | None = None) -> IdleStore:
    """The idle store of one process (``idle_path``), which also reads the other processes' files.

    Parameters
    ----------
    state_dir, process
        As for ``idle_path``.
    retention_s
        How long an evicted key's state is kept (``IdleStore``); None: for ever.
    """
    return IdleStore(idle_path(state_dir, process), peers=IDLE_FILES, retention_s=retention_s)


def bucket_key(index: int, buckets: int) -> str:
    """Bytewax's state key of bucket ``index`` of ``buckets``. The count is part of it, so a checkpoint of another
    bucket count resumes under keys that no event reaches, and its states move to the idle store.

    Parameters
    ----------
    index
        The bucket (``streams.state.bucket_of``).
    buckets
        The bucket count.
    """
    return f"~buckets/{buckets}/{index}"


FETCH_WAIT_MS = 50  # librdkafka's 500 ms default, on a broker that waits it out, was most of a live batch's latency
QUEUED_KBYTES = 8192  # messages prefetched per partition, KB: librdkafka's 64 MB made a flow over a backlog hold about
# 500 MB more than over a short topic (3 partitions; BENCHMARKS.md, "Session 10: memory over a long run")


CONSUMER_DEFAULTS = {"fetch.wait.max.ms": FETCH_WAIT_MS, "queued.max.messages.kbytes": QUEUED_KBYTES}
"""The source's partition consumers' own settings (``LingerKafkaSource(consumer_defaults=...)``): a fetch waits at most
``FETCH_WAIT_MS`` for data, since a scoring flow wants its input as it arrives and an idle partition's fetches cost
little; each consumer prefetches at most ``QUEUED_KBYTES`` ahead of the flow, a few polls' worth, so that a flow
catching up on a backlog holds what it scores next rather than 64 MB of every partition. ``[kafka] extra`` wins."""


def source_config(settings: KafkaSettings) -> dict[str, Any]:
    """What the Bytewax Kafka source's consumers get on top of Bytewax's own keys: every client setting of
    ``[kafka]``, ``extra``'s consumer and shared keys included (TLS, SASL/OAuth, fetch tuning). Bytewax assigns
    partitions and keeps offsets in its recovery store, so group and commit settings are its own; the partition
    consumers add ``CONSUMER_DEFAULTS`` under these, and the admin client that lists partitions takes the keys
    an admin client reads (``connectors.kafka.for_client``).

    Parameters
    ----------
    settings
        Kafka settings.
    """
    return client_config(settings, "consumer")


class _ProcessorLogic(StatefulBatchLogic):
    """One key's processor inside Bytewax; its snapshot is the processor as versioned plain bytes.

    A resumed key stays bytes until its next event. With an ``IdleStore`` and ``idle_after``, a key silent that
    long is flushed (``_flush_saved`` if still bytes), written there and discarded, so memory follows active keys;
    it is reloaded when it speaks again.
    A resumed bucket (``_BucketLogic``'s layout, before a switch back to one key per device) moves its keys'
    states to the idle store, where each key finds its own, and hands on what they held back (``_move_to_idle``).
    """

    def __init__(self, spec: FlowSpec, output: FlowOutput, resume: bytes | None, idle: IdleStore | None,
                 idle_after: timedelta | None) -> None:
        self.spec = spec
        self.output = output
        self.timer = PROCESSING_SECONDS.labels(spec.name)
        self.idle = idle
        self.idle_after = idle_after if idle is not None else None
        self.moved = is_bucket(resume)
        self.moved_held: list[Emit] = []  # what the moved keys held back, handed on as this logic leaves
        if self.moved:  # before any key of this process asks the idle store for its state
            self.moved_held = _move_to_idle(output, idle, _bucket_states(spec, resume, idle))
        self.saved = None if self.moved else resume
        self.key: str | None = None
        self.processor: Processor | None = None
        now = datetime.now(UTC)
        self.due = now if self.moved else now + self.idle_after if self.idle_after is not None else None

    def on_batch(self, values: list[Event]) -> tuple[list[Outputs], bool]:
        if self.processor is None:
            self.key = self.spec.key(values[0])
            saved = self.saved if self.saved is not None or self.idle is None else self.idle.get(self.key)
            self.processor, _ = restore_or_fresh(self.spec, self.key, saved)
            self.saved = None
        with self.timer.time():
            emits, letters = _process(self.output, self.processor, values)
        self.output.processed(values)
        self.due = datetime.now(UTC) + self.idle_after if self.idle_after is not None else None
        return _outputs(self.output, emits, letters), StatefulBatchLogic.RETAIN

    def notify_at(self) -> datetime | None:
        return self.due

    def on_notify(self) -> tuple[list[Outputs], bool]:
        if self.moved and self.processor is None:  # a bucket's states, moved to the idle store when built
            if self.idle is not None:
                self.idle.commit_held()
            return _outputs(self.output, self.moved_held), StatefulBatchLogic.DISCARD
        if self.idle is None or self.idle_after is None:
            return [], StatefulBatchLogic.RETAIN
        if self.processor is not None:
            held, key = _flush(self.spec, self.processor), self.key or ""
            blob = encode_processor(self.processor, key)
        elif self.saved is not None:
            try:
                key = decode_checkpoint(self.saved)["key"]
            except StateError:  # a resumed state that would be refused anyway: keep it where recovery has it
                self.due = None
                return [], StatefulBatchLogic.RETAIN
            held, blob = _flush_saved(self.output, key, self.saved)
        else:
            return [], StatefulBatchLogic.RETAIN
        self.idle.put(key, blob)  # committed before the discard can reach a checkpoint
        return _outputs(self.output, held), StatefulBatchLogic.DISCARD

    def snapshot(self) -> bytes | None:
        if self.processor is None:
            return self.saved
        return encode_processor(self.processor, self.key or "")


class StagedStates:
    """One process's bucket states on their way to its store (``IdleStore.put_versions``), written together.

    A bucket's snapshot carries the states that changed in its epoch as bytes, and stages them here; a later
    write puts everything staged in one transaction (one sync for many buckets), and from then on the buckets'
    snapshots carry only each state's version number. So Bytewax's recovery store holds about the states that
    changed lately, not every device's, and a restart loads that. A snapshot refers to a version only once it is
    written (``durable``); until then it carries the bytes, so a write that lags costs checkpoint bytes, never a
    state. A replaced version a checkpoint may still refer to is deleted once Bytewax's resume epoch has passed
    every epoch that could have been running when it was replaced (``RecoveryEpochs``); without ``epochs``,
    ``GRACE_S`` after it was replaced.

    With ``background``, a thread of its own writes every ``WRITE_EVERY_S`` (a quarter epoch where shorter: an
    epoch's states are written well before the next epoch's snapshots, which then refer to them by version) and
    the snapshots only read how far it got (``written``): the SQLite commit, synced to disk, then stalls no
    snapshot on the worker's thread, where it held every event arriving at an epoch's end (20-330 ms an epoch at
    1,000 devices under load: BENCHMARKS.md, Fleet scale, "Latency at half load, fifth pass"). The resume epoch
    that decides deletions is still read by the snapshots (``RecoveryEpochs``, at most once per
    ``FLUSH_EVERY_S``) and handed to the writer.

    Parameters
    ----------
    store
        The process's store.
    epochs
        The flow's recovery partitions, read.
    background
        Write from a thread of its own (the flow); False: the first snapshot of an epoch writes (``flush``).
    """

    FLUSH_EVERY_S = 1.0  # without ``background``: at most one write per this (an epoch's snapshots come in a burst)
    WRITE_EVERY_S = 0.5  # with ``background``: a write at least this often (a quarter epoch where shorter)
    GRACE_S = 60.0  # without ``epochs``: a replaced version is deleted this long after

    def __init__(self, store: IdleStore, epochs: RecoveryEpochs | None = None, background: bool = False) -> None:
        self.store = store
        self.epochs = epochs
        self._lock = threading.Lock()  # the lists below; never held while writing
        self._writing = threading.Lock()  # one write at a time
        self._next = time.time_ns()  # versions grow across restarts too
        self._staged: list[tuple[str, int, bytes]] = []
        self._forget: list[tuple[float, str, int]] = []  # (epoch to pass, or time without epochs; key, below)
        self._drop: list[tuple[str, int]] = []  # (key, version) that no checkpoint refers to
        self.durable = 0  # every version up to this is written
        self._flushed = time.monotonic()
        self._failed: BaseException | None = None
        self._seen = -math.inf  # with ``background`` and ``epochs``: the resume epoch as the worker last read it
        self._read_at = -math.inf
        self._stop = threading.Event()
        self._writer: threading.Thread | None = None
        if background:
            self._writer = threading.Thread(target=self._write_on, name="eddyline-staged-states", daemon=True)
            self._writer.start()

    def stage(self, key: str, state: bytes) -> int:
        """Stage a key's new state; returns its version, which is durable once ``durable`` reaches it.

        Parameters
        ----------
        key
            The device (state key).
        state
            Its encoded state (``streams.state``).
        """
        with self._lock:
            self._next += 1
            self._staged.append((key, self._next, state))
            return self._next

    def forget(self, key: str, below: int | None = None) -> None:
        """The key's versions under ``below`` are replaced; delete them after the grace.

        Parameters
        ----------
        key
            The device (state key).
        below
            Versions under this one go; None: every version staged so far.
        """
        until = self.epochs.running_bound() if self.epochs is not None else time.monotonic() + self.GRACE_S
        with self._lock:
            self._forget.append((until, key, self._next + 1 if below is None else below))

    def drop(self, key: str, version: int) -> None:
        """Delete a version that no checkpoint refers to, with the next write (no grace).

        Parameters
        ----------
        key
            The device (state key).
        version
            The version (``stage``), staged or written.
        """
        with self._lock:
            self._drop.append((key, version))

    def written(self) -> int:
        """``durable``, for a snapshot: with ``background`` as the writer left it (raising what made a write fail,
        so that the epoch is not committed), else after ``flush``."""
        if self._writer is None:
            return self.flush()
        if self._failed is not None:
            raise RuntimeError(f"writing bucket states to {self.store.path} failed: {self._failed}") from self._failed
        now = time.monotonic()
        if self.epochs is not None and now - self._read_at >= self.FLUSH_EVERY_S:
            with self._lock:
                forgets = self._forget
            self._seen, self._read_at = self._passed(now, forgets), now
        return self.durable

    def flush(self, force: bool = False) -> int:
        """Write what is staged if the last write is ``FLUSH_EVERY_S`` old; returns ``durable``.

        Parameters
        ----------
        force
            Write now, however recent the last write.
        """
        with self._writing:
            with self._lock:
                now = time.monotonic()
                if not force and now - self._flushed < self.FLUSH_EVERY_S:
                    return self.durable
                forgets = self._forget
            # the writer thread never reads the recovery partitions (``written`` does, on the worker's thread)
            passed = self._seen if self._writer is not None and self.epochs is not None else self._passed(now, forgets)
            with self._lock:
                due = [(k, below) for until, k, below in self._forget if until < passed]
                staged, drop, upto = self._staged, self._drop, self._next
                if not staged and not due and not drop:
                    return self.durable
                self._forget = [f for f in self._forget if f[0] >= passed]
                self._staged, self._drop = [], []
            try:
                self.store.put_versions(staged, due, drop)
            except BaseException:
                with self._lock:  # kept for the next write
                    self._staged[:0], self._drop[:0] = staged, drop
                    self._forget.extend((-math.inf, k, below) for k, below in due)
                raise
            with self._lock:
                self.durable = upto
                self._flushed = now
                return self.durable

    def close(self) -> None:
        """Stop the writer, if any, after a last write."""
        if self._writer is not None:
            self._stop.set()
            self._writer.join(30)

    def _write_on(self) -> None:
        every = min(self.WRITE_EVERY_S, self.epochs.interval_s / 4) if self.epochs is not None else self.WRITE_EVERY_S
        while not self._stop.wait(every):
            try:
                self.flush(force=True)
            except Exception as exc:  # the next snapshot raises it: the epoch is not committed
                log.exception("writing bucket states failed")
                self._failed = exc
                return
        self.flush(force=True)

    def _passed(self, now: float, forgets: list[tuple[float, str, int]]) -> float:
        """Forgets recorded under this are due: the resume epoch (read only when one waits), or the time."""
        if self.epochs is None:
            return math.nextafter(now, math.inf)
        if not forgets:
            return -math.inf
        resume = self.epochs.resume_epoch()
        return -math.inf if resume is None else resume


ENCODE_EARLY = timedelta(seconds=0.5)  # a key that spoke once in an epoch is encoded this long after, not at its end
DECODED_OVERHEAD = 8_000  # a decoded processor's bytes beyond its encoded state's (default detector, 3 sensors:
# 14.5 KB decoded for 6.7 KB encoded), so 100,000 such devices stay decoded in 1.5 GB of ``decoded_bytes``, and
# a fleet whose series keep seasonal tables (50-75 KB per device) keeps fewer


class _BucketLogic(StatefulBatchLogic):
    """A bucket of keys inside Bytewax: Bytewax's state key is ``bucket_of(key, buckets)``, so a restart resumes at
    most ``buckets`` Bytewax keys however many devices there are (Bytewax's resume grows faster than its key
    count: ``eddyline bench resume``).

    A key's state is, in the bucket, either its ``encode_processor`` bytes (changed lately) or the version of
    those bytes in the process's store (``StagedStates``); it is re-encoded only when it processed events since
    the last snapshot (or, having spoken once in an epoch, ``ENCODE_EARLY`` after), decoded when it next speaks,
    and its processor dropped again once silent for ``keep_decoded`` or pushed out by more recent keys
    (``decoded_bytes`` per process, shared by ``buckets``). With ``idle_after``, a key silent that long is flushed
    (``_flush_saved`` where it is bytes) and leaves the bucket for the ``IdleStore``, and an empty bucket leaves
    Bytewax. Resumed states that this layout does not route here (one key per device, another bucket count) move to
    the idle store, where each key finds its own, and what they held back is handed on (``_move_to_idle``).
    """

    def __init__(self, spec: FlowSpec, output: FlowOutput, resume: bytes | None, idle: IdleStore | None,
                 idle_after: timedelta | None, buckets: int, staged: StagedStates | None, *,
                 keep_decoded: timedelta, decoded_bytes: int) -> None:
        self.spec = spec
        self.output = output
        self.timer = PROCESSING_SECONDS.labels(spec.name)
        self.idle = idle
        self.idle_after = idle_after if idle is not None else None
        self.buckets = buckets
        self.staged = staged
        self.index: int | None = None
        self.inline: dict[str, bytes] = {}  # key -> its bytes, as of the last snapshot (or as resumed)
        self.refs: dict[str, int] = {}  # key -> the version of its bytes in the store
        self.ref_entries: dict[str, bytes] = {}  # the keys of ``refs`` -> their entry in the snapshot, kept
        self.pending: dict[str, int] = {}  # key -> the staged version of its ``inline`` bytes
        self.live: dict[str, Processor] = {}
        self.spoke: dict[str, float] = {}  # the keys of ``live``, least recently spoken first -> when (monotonic)
        self.held: dict[str, int] = {}  # the keys of ``live`` -> the memory their processor is taken to hold
        self.held_bytes = 0  # the sum of ``held``, kept within ``budget``
        self.budget = decoded_bytes // buckets  # this bucket's share of the process's decoded processors
        self.keep_decoded_s = keep_decoded.total_seconds()
        self.dirty: set[str] = set()  # keys that processed events since the last snapshot
        self.early: dict[str, datetime | None] = {}  # keys that spoke this epoch -> when to encode early (None: not)
        self.encode_at: datetime | None = None  # at most the earliest of ``early``
        self.due: dict[str, datetime] = {}
        self.next_due: datetime | None = None  # at most the earliest of ``due``
        self.moved = False
        self.moved_held: list[Emit] = []  # what the moved keys held back, handed on as this logic leaves
        if resume is not None:
            self._resume(resume)

    def _resume(self, resume: bytes) -> None:
        try:
            bucket = decode_bucket(resume) if is_bucket(resume) else None
        except StateError as exc:
            refuse(self.spec.name, "a bucket of states", exc)
            return
        if bucket is not None and bucket.buckets == self.buckets:
            self.index = bucket.index
            self.inline, self.refs = bucket.states, bucket.refs
            self.ref_entries = {key: bucket_entry(key, version) for key, version in self.refs.items()}
            if self.idle_after is not None:
                self.next_due = datetime.now(UTC) + self.idle_after
                self.due = dict.fromkeys([*self.inline, *self.refs], self.next_due)
            if not self.inline and not self.refs:  # checkpointed empty (moved away before it left): leave now
                self.next_due = datetime.now(UTC)
            return
        # one key's state (the per-key layout) or a bucket of another bucket count: its keys belong to other
        # buckets now, which find them in the idle store; moved before any key of this process asks for its state
        self.moved_held = _move_to_idle(self.output, self.idle, _bucket_states(self.spec, resume, self.idle))
        self.moved = True
        self.next_due = datetime.now(UTC)  # then this logic leaves

    def on_batch(self, values: list[Event]) -> tuple[list[Outputs], bool]:
        by_key: dict[str, list[Event]] = {}
        for event in values:
            by_key.setdefault(self.spec.key(event), []).append(event)
        emits: list[Emit] = []
        letters: list[Message] = []
        wall = datetime.now(UTC)
        due = wall + self.idle_after if self.idle_after is not None else None
        early = wall + ENCODE_EARLY
        now = time.monotonic()
        with self.timer.time():
            for key, events in by_key.items():
                done, dead = _process(self.output, self._processor(key), events)
                emits.extend(done)
                letters.extend(dead)
                self.dirty.add(key)
                self.early[key] = None if key in self.early else early  # twice in an epoch: at its end only
                self.spoke.pop(key, None)
                self.spoke[key] = now
                if due is not None:
                    self.due[key] = due
        self.output.processed(values)
        if due is not None and self.next_due is None:
            self.next_due = due
        if self.encode_at is None:
            self.encode_at = early
        return _outputs(self.output, emits, letters), StatefulBatchLogic.RETAIN

    def _saved(self, key: str) -> bytes | None:
        """The key's bytes as this bucket last saved them; None for a key new to it (or refused: counted)."""
        blob = self.inline.get(key)
        if blob is None and key in self.refs:
            blob = self.idle.get_version(key, self.refs[key]) if self.idle is not None else None
            if blob is None:
                refuse(self.spec.name, f"of {key!r}", StateError(
                    f"version {self.refs[key]} of its state is in no state store of this flow"))
        return blob

    def _processor(self, key: str) -> Processor:
        processor = self.live.get(key)
        if processor is None:
            if self.index is None:
                self.index = bucket_of(key, self.buckets)
            if key in self.inline or key in self.refs:
                saved = self._saved(key)
            else:
                saved = self.idle.get(key) if self.idle is not None else None
            processor = self.live[key] = restore_or_fresh(self.spec, key, saved)[0]
            self._hold(key, len(saved) if saved is not None else 0)
        return processor

    def _hold(self, key: str, encoded: int) -> None:
        """Take the decoded processor of ``key`` to hold its ``encoded`` size plus ``DECODED_OVERHEAD``."""
        held = encoded + DECODED_OVERHEAD
        self.held_bytes += held - self.held.get(key, 0)
        self.held[key] = held

    def _undecode(self, key: str) -> None:
        """Drop the key's processor, if decoded (its bytes stay)."""
        self.live.pop(key, None)
        self.spoke.pop(key, None)
        self.held_bytes -= self.held.pop(key, 0)

    def notify_at(self) -> datetime | None:
        if self.encode_at is None or self.next_due is None:
            return self.encode_at or self.next_due
        return min(self.encode_at, self.next_due)

    def on_notify(self) -> tuple[list[Outputs], bool]:
        if self.moved and self.idle is not None:  # the moved states are committed before this logic leaves
            self.idle.commit_held()
        emits, self.moved_held = self.moved_held, []
        now = datetime.now(UTC)
        if self.encode_at is not None and self.encode_at <= now:
            self._encode_early(now)
        leaving: dict[str, bytes] = {}
        if self.idle is not None:
            for key in [k for k, at in self.due.items() if at <= now]:
                processor = self.live.pop(key, None)
                if processor is not None:
                    emits.extend(_flush(self.spec, processor))
                    leaving[key] = encode_processor(processor, key)
                elif (blob := self._saved(key)) is not None:
                    held, leaving[key] = _flush_saved(self.output, key, blob)
                    emits.extend(held)
                self._drop(key)
            if leaving:
                self.idle.put_many(leaving)  # committed before the bucket's snapshot without them
        self.next_due = min(self.due.values()) if self.due else None
        if not self.inline and not self.refs and not self.live:
            return _outputs(self.output, emits), StatefulBatchLogic.DISCARD
        return _outputs(self.output, emits), StatefulBatchLogic.RETAIN

    def _drop(self, key: str) -> None:
        stored = [self.refs.pop(key, None), self.pending.pop(key, None)] != [None, None]
        self.ref_entries.pop(key, None)
        self.inline.pop(key, None)
        self.dirty.discard(key)
        self.early.pop(key, None)
        self.due.pop(key, None)
        self._undecode(key)
        if stored and self.staged is not None:
            self.staged.forget(key)

    def _encode(self, key: str) -> None:
        """The key's processor to bytes, staged for the store: from now on its bytes are its state."""
        blob = self.inline[key] = encode_processor(self.live[key], key)
        self._hold(key, len(blob))
        if self.staged is not None:
            replaced = self.pending.pop(key, None)
            if replaced is not None:  # no checkpoint refers to it: each that has it has the key's bytes too
                self.staged.drop(key, replaced)
            self.pending[key] = self.staged.stage(key, blob)

    def _encode_early(self, now: datetime) -> None:
        """Encode the keys that spoke once this epoch and have been silent ``ENCODE_EARLY`` since, now rather than
        all in the epoch's snapshot: a snapshot encodes every key that spoke in the epoch on the worker's thread,
        and every event arriving meanwhile waits (0.5 s per epoch at 1,000 devices under load, BENCHMARKS.md). A
        key that speaks again is encoded again at the snapshot (at most twice per epoch), one that spoke twice
        only there."""
        waiting = []
        for key, at in self.early.items():
            if at is None:
                continue
            if at <= now:
                self._encode(key)
                self.dirty.discard(key)
                self.early[key] = None
            else:
                waiting.append(at)
        self.encode_at = min(waiting) if waiting else None

    def _forget_decoded(self) -> None:
        """Drop the processors (their bytes stay) of keys silent ``keep_decoded_s``, and the least recently spoken
        beyond this bucket's ``budget``: so a device that speaks every minute or two is not
        decoded again each time (a restore costs about 5 times an encode), and memory stays bounded in a large
        fleet. The share is by memory, not by keys: a device with seasonal tables holds 5 times the default's."""
        cutoff = time.monotonic() - self.keep_decoded_s
        for key, spoke in list(self.spoke.items()):
            if spoke >= cutoff and self.held_bytes <= self.budget:
                break
            self._undecode(key)

    def snapshot(self) -> bytes:
        durable = self.staged.written() if self.staged is not None else 0
        for key, version in list(self.pending.items()):
            if version <= durable and key not in self.dirty:  # written: the checkpoint carries its version now
                previous = self.refs.get(key)
                self.refs[key] = version
                self.ref_entries[key] = bucket_entry(key, version)
                del self.inline[key], self.pending[key]
                if previous is not None:
                    self.staged.forget(key, version)
        for key in self.dirty:
            self._encode(key)
        self.dirty.clear()
        self.early.clear()
        self.encode_at = None
        self._forget_decoded()
        index = self.index if self.index is not None else -1
        return encode_bucket_entries(self.buckets, index, [bucket_entry(k, v) for k, v in self.inline.items()],
                                     list(self.ref_entries.values()))


def _bucket_states(spec: FlowSpec, blob: bytes, store: IdleStore | None) -> dict[str, bytes]:
    """The keys' states in resumed bytes of either layout (a bucket, or one key's state), to move; those refused
    are left out (logged and counted: those keys start fresh)."""
    try:
        if not is_bucket(blob):
            return {str(decode_checkpoint(blob)["key"]): blob}
        bucket = decode_bucket(blob)
    except StateError as exc:
        refuse(spec.name, "saved in another state layout", exc)
        return {}
    states = dict(bucket.states)
    for key, version in bucket.refs.items():
        if key in states:  # its bytes are newer than that version
            continue
        found = store.get_version(key, version) if store is not None else None
        if found is None:
            refuse(spec.name, f"of {key!r}", StateError(f"version {version} of its state is in no state store"))
        else:
            states[key] = found
    return states


def _move_to_idle(output: FlowOutput, idle: IdleStore | None, states: dict[str, bytes]) -> list[Emit]:
    """States resumed in another layout, into the idle store, where each key finds its own when it next speaks; what
    they held back, for the moving logic to hand on as it leaves. They leave memory as evicted keys do, flushed
    (``_flush_saved``): else a key that never speaks again keeps what it held until retention deletes it.

    Written at once without a sync (``IdleStore.hold``), so that a key speaking on another process of a cluster
    finds its state there; Bytewax builds every resumed logic before it notifies any, so the first moved logic to
    leave syncs all of them (100,000 devices' states in one sync, not 100,000).
    Safe to repeat after a crash: the resumed logics are discarded only after the commit (what they hand on comes
    again, with the same ids), and a key that the new layout has saved since keeps that newer state (the idle store
    is read only for keys without one).
    """
    if not states:
        return []
    if idle is None:
        raise RuntimeError(f"{output.spec.name}: the checkpoint holds states saved in another state layout and there "
                           "is no idle store to move them to; run with a state folder")
    held: list[Emit] = []
    for key, blob in states.items():
        emits, states[key] = _flush_saved(output, key, blob)
        held.extend(emits)
    idle.hold(states)
    return held


class Outputs:
    """What one processor step hands downstream, as one item: its emits, for the side sinks, and the Kafka messages
    of those bound for Kafka, encoded in the step (dead letters travel the same way, with no emits). One item per
    batch and no encoding step of its own: a poll of one or two live messages crossed one more operator for it
    (BENCHMARKS.md, Fleet scale, "Session 8: live batches").

    It iterates its emits. Only the messages cross to another worker (the Kafka sink's partition is chosen by
    key): the side sinks take the emits where they were made, so pickling leaves them out.

    Parameters
    ----------
    emits
        The processor's emits, in order.
    messages
        The Kafka messages of those bound for Kafka (or dead letters).
    """

    __slots__ = ("emits", "messages")

    def __init__(self, emits: list[Emit], messages: list[Message]) -> None:
        self.emits = emits
        self.messages = messages

    def __iter__(self) -> Iterator[Emit]:
        return iter(self.emits)

    def __reduce__(self) -> tuple[type, tuple[list[Emit], list[Message]]]:
        return Outputs, ([], self.messages)


def _outputs(output: FlowOutput, emits: list[Emit], letters: Sequence[Message] = ()) -> list[Outputs]:
    """A key's emits as one item downstream, with the messages of those bound for Kafka (``FlowOutput.encode``:
    an emit that cannot be encoded becomes a dead letter), and ``letters``, dead letters of the step's own."""
    if not emits and not letters:
        return []
    return [Outputs(emits, [*(output.encode(e) for e in emits if output.kafka_bound(e)), *letters])]


def _process(output: FlowOutput, processor: Processor, events: list[Event]) -> tuple[list[Emit], list[Message]]:
    """The processor's emits for ``events`` and no dead letters; if it raises, no emits and each event a dead letter
    (``FlowOutput.processing_failed``), its value re-encoded: this step no longer has the message's bytes."""
    try:
        return processor.process(events), []
    except Exception as exc:
        return [], output.processing_failed(events, exc, output.reencoded)


def _flush(spec: FlowSpec, processor: Processor) -> list[Emit]:
    """``engines.output.flushed``, nothing where the processor raised."""
    return flushed(spec, processor) or []


def _flush_saved(output: FlowOutput, key: str, blob: bytes) -> tuple[list[Emit], bytes]:
    """What a key leaving memory as bytes (resumed and silent since, its processor dropped after ``keep_decoded``, or
    resumed in another state layout) held back, and its bytes to store: it is decoded and flushed as a decoded key is,
    or what it held would stay in the store, handed on only if the key ever spoke again. The bytes leave unchanged
    where the flush hands nothing on (most keys: no encode), and undecoded where the flow's processors hold nothing
    back (``FlowOutput.holds_back``)."""
    if not output.holds_back(key):
        return [], blob
    processor = restore_or_fresh(output.spec, key, blob)[0]
    held = flushed(output.spec, processor)
    return (held, encode_processor(processor, key)) if held else ([], blob)


class _ProducerPartition(StatefulSinkPartition):
    """Produces as batches come and waits for the broker's acknowledgements once per epoch, in ``snapshot``: Bytewax
    commits an epoch only after its snapshots, so an output not acknowledged stops the commit and its input is
    read again (at least once). Waiting after every batch instead held each live message for a round trip."""

    def __init__(self, settings: KafkaSettings) -> None:
        self.producer = EventProducer(settings)

    def write_batch(self, items: list[Outputs]) -> None:
        for out in items:
            for topic, key, value, headers in out.messages:
                self.producer.produce_raw(topic, value, key, headers, serve=False)
        self.producer.poll()  # delivery callbacks once per batch, not per message

    def snapshot(self) -> None:
        self.producer.flush(30.0)  # raises if any delivery failed: the epoch is not committed, input replays

    def close(self) -> None:
        self.producer.close(30.0)


class _ProducerSink(FixedPartitionedSink):
    """Writes the messages of ``Outputs`` items; failed deliveries fail the epoch, never vanish.

    One partition per worker, so that each worker produces its own outputs.
    """

    def __init__(self, settings: KafkaSettings, workers: int) -> None:
        self.settings = settings
        self.workers = workers

    def list_parts(self) -> list[str]:
        return [str(i) for i in range(self.workers)]

    def build_part(self, step_id: str, for_part: str, resume_state: None) -> _ProducerPartition:
        return _ProducerPartition(self.settings.model_copy(update={"namespace": ""}))


class _SidePartition(StatelessSinkPartition):
    def __init__(self, sink: Sink) -> None:
        self.sink = sink

    def write_batch(self, items: list[tuple[str, Outputs]]) -> None:
        self.sink.write([e for _, out in items for e in out.emits])

    def close(self) -> None:
        self.sink.close()


class _SideSink(DynamicSink):
    def __init__(self, factory: Any) -> None:
        self.factory = factory

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _SidePartition:
        return _SidePartition(self.factory())


def build_dataflow(
    spec: FlowSpec, settings: KafkaSettings, *, batch_size: int = BYTEWAX_DEFAULTS["batch_size"],
    output: FlowOutput | None = None, idle: IdleStore | None = None,
    idle_after: timedelta | None = BYTEWAX_DEFAULTS["idle_after"], workers: int = 1,
    buckets: int = BYTEWAX_DEFAULTS["buckets"], epochs: RecoveryEpochs | None = None,
    linger: timedelta = BYTEWAX_DEFAULTS["linger"], staged: StagedStates | None = None,
    keep_decoded: timedelta = BYTEWAX_DEFAULTS["keep_decoded"], decoded_bytes: int = BYTEWAX_DEFAULTS["decoded_bytes"],
) -> Dataflow:
    """The Bytewax dataflow of a flow: decode, key, one processor per key, encode or dead-letter, write.

    Decoding, encoding and dead letters go through ``streams.engines.output``, the path the Faust adapter
    shares; the dataflow itself only moves batches.

    Parameters
    ----------
    spec
        The flow.
    settings
        Kafka settings: brokers, credentials and the topic namespace.
    batch_size
        Most messages read from a partition at a time.
    linger
        How long a partition holds a poll's first message for more, up to ``batch_size`` (``LingerKafkaSource``);
        zero: a batch is what one poll brings.
    output
        The decode/encode path to use (its ``positions`` feed the lag monitor); a new one by default.
    idle, idle_after
        Where keys silent for ``idle_after`` go to leave memory (either None: they stay); they come back when
        they speak. The idle store also takes the states of a checkpoint written in another state layout.
    workers
        Workers in the whole cluster: the Kafka output has one partition per worker.
    buckets
        Bytewax state keys: 0 gives each key (device) its own; N (by default ``[runtime] state_buckets``, 1,024)
        groups keys into N buckets by a stable hash (``_BucketLogic``), so a restart resumes at most N keys.
    keep_decoded, decoded_bytes
        With ``buckets``: how long a silent key's processor stays decoded, and about how much memory this process's
        decoded processors may take (``[runtime] keep_decoded_s``, ``decoded_bytes``); beyond either a processor
        goes back to its bytes until its key speaks again.
    epochs
        The recovery partitions, read: replaced bucket versions are deleted once no resume can reach them.
    staged
        Where bucket states go on their way to ``idle`` (``run_dataflow`` passes one writing in the background);
        None: one that the snapshots write.
    """
    output = output or FlowOutput(spec, settings)
    flow = Dataflow(spec.name)
    source = LingerKafkaSource(source_config(settings), [settings.topic(t) for t in spec.inputs],
                               batch_size=batch_size, linger=linger, consumer_defaults=CONSUMER_DEFAULTS)
    messages = op.input("kafka-in", flow, source)

    def decode(batch: list[KafkaSourceMessage | KafkaError]) -> list[tuple[str, Event | Outputs]]:
        out: list[tuple[str, Event | Outputs]] = []
        for msg in batch:
            if isinstance(msg, KafkaError):
                if msg.err.fatal():
                    raise RuntimeError(f"fatal Kafka error in {spec.name}: {msg.err}")
                log.warning("kafka consumer error", extra={"flow": spec.name, "error": str(msg.err)})
                continue
            broker_ms = msg.timestamp[1] if msg.timestamp and msg.timestamp[0] else -1
            item = output.decode(msg.topic, msg.key, msg.value, msg.partition, msg.offset, broker_ms)
            out.append((route(spec.key(item)), item) if isinstance(item, Event)
                       else ("", Outputs([], [output.dead_letter(item)])))
        return out

    def route(key: str) -> str:
        return bucket_key(bucket_of(key, buckets), buckets) if buckets else key

    if staged is None and buckets and idle is not None:
        staged = StagedStates(idle, epochs)

    def logic(resume: bytes | None) -> StatefulBatchLogic:
        if buckets:
            return _BucketLogic(spec, output, resume, idle, idle_after, buckets, staged, keep_decoded=keep_decoded,
                                decoded_bytes=decoded_bytes)
        return _ProcessorLogic(spec, output, resume, idle, idle_after)

    # Steps work on whole batches (a poll's messages, a key's emits): one Python call per batch, not per item; the
    # processor step encodes its own outputs (``Outputs``), so a poll crosses no separate encoding step.
    decoded = op.flat_map_batch("decode", messages, decode)
    split = op.branch("valid", decoded, lambda kv: isinstance(kv[1], Event))
    processed = op.stateful_batch("process", split.trues, logic)
    out = op.merge("to-kafka", processed, split.falses)
    op.output("kafka-out", out, _ProducerSink(settings, workers))
    for i, factory in enumerate(spec.sinks):
        op.output(f"side-sink-{i}", processed, _SideSink(factory))
    return flow


def ensure_topics(spec: FlowSpec, settings: KafkaSettings) -> None:
    """Create every topic the flow reads or writes, before it writes.

    Parameters
    ----------
    spec
        The flow; its inputs, outputs and their dead-letter topics are created.
    settings
        Kafka settings (the namespace applies).
    """
    create_topics(settings, flow_topics(spec))


def run(
    spec: FlowSpec,
    settings: KafkaSettings,
    *,
    state_dir: Path | None = None,
    epoch_interval: timedelta = BYTEWAX_DEFAULTS["epoch_interval"],
    workers: int = 1,
    batch_size: int = BYTEWAX_DEFAULTS["batch_size"],
    lag_interval_s: float | None = BYTEWAX_DEFAULTS["lag_interval_s"],
    idle_after: timedelta | None = BYTEWAX_DEFAULTS["idle_after"],
    idle_retention_s: float | None = BYTEWAX_DEFAULTS["idle_retention_s"],
    buckets: int = BYTEWAX_DEFAULTS["buckets"],
    linger: timedelta = BYTEWAX_DEFAULTS["linger"],
    keep_decoded: timedelta = BYTEWAX_DEFAULTS["keep_decoded"],
    decoded_bytes: int = BYTEWAX_DEFAULTS["decoded_bytes"],
) -> None:
    """Run until interrupted. With ``state_dir``, state and offsets are checkpointed every epoch.

    A restart with the same ``state_dir`` resumes from the last epoch: the inputs after it are read again
    and give the same output ids (delivery is at least once, outputs idempotent). The defaults are ``[runtime]``'s
    (``streams.runtime.BYTEWAX_DEFAULTS``), so a flow started here is laid out as ``eddyline run`` lays it out.

    Parameters
    ----------
    spec
        The flow.
    settings
        Kafka settings.
    state_dir
        Bytewax's recovery store (created when missing); None runs without checkpoints.
    epoch_interval
        How often state and offsets are snapshotted.
    workers
        Worker threads in this process.
    batch_size
        Most messages read from a partition at a time.
    lag_interval_s
        How often a lag monitor reports the flow's consumer lag (None: no monitor).
    idle_after
        With ``state_dir``, keys silent this long leave memory for ``idle_path(state_dir)`` (None: never).
    idle_retention_s
        How long an evicted key's state is kept there (None: for ever).
    buckets, linger, keep_decoded, decoded_bytes
        As for ``build_dataflow``.
    """
    from bytewax.recovery import RecoveryConfig, init_db_dir

    ensure_topics(spec, settings)
    recovery = None
    idle = None
    if state_dir is not None:
        state_dir.mkdir(parents=True, exist_ok=True)
        if not any(state_dir.glob("part-*.sqlite3")):
            init_db_dir(state_dir, 1)
        recovery = RecoveryConfig(state_dir)
        move_legacy_idle_store(state_dir)
        idle = idle_store(state_dir, retention_s=idle_retention_s)
    run_dataflow(spec, settings, batch_size=batch_size, lag_interval_s=lag_interval_s, idle=idle,
                 idle_after=idle_after, buckets=buckets, linger=linger, keep_decoded=keep_decoded,
                 decoded_bytes=decoded_bytes, workers_per_process=workers,
                 epoch_interval=epoch_interval, recovery_config=recovery)


def run_dataflow(
    spec: FlowSpec, settings: KafkaSettings, *, batch_size: int, lag_interval_s: float | None,
    idle: IdleStore | None = None, idle_after: timedelta | None = BYTEWAX_DEFAULTS["idle_after"],
    buckets: int = BYTEWAX_DEFAULTS["buckets"], linger: timedelta = BYTEWAX_DEFAULTS["linger"],
    keep_decoded: timedelta = BYTEWAX_DEFAULTS["keep_decoded"], decoded_bytes: int = BYTEWAX_DEFAULTS["decoded_bytes"],
    **cli_options: Any
) -> None:
    """Run the flow's dataflow in this process beside a lag monitor that commits the positions this process
    consumed, so the flow's group shows how far it got, and a ``streams.memory.HeapReleaser``.

    Parameters
    ----------
    spec, settings, batch_size
        As for ``build_dataflow``.
    lag_interval_s
        How often the lag monitor reports (None: no monitor).
    idle, idle_after, buckets, linger, keep_decoded, decoded_bytes
        As for ``build_dataflow``.
    cli_options
        Passed to Bytewax's ``cli_main`` (workers, epoch interval, recovery).
    """
    from bytewax.run import cli_main

    output = FlowOutput(spec, settings)
    workers = cli_options.get("workers_per_process", 1) * len(cli_options.get("addresses") or [None])
    recovery = cli_options.get("recovery_config")
    epochs = None if recovery is None else RecoveryEpochs(
        Path(recovery.db_dir), cli_options.get("epoch_interval") or BYTEWAX_EPOCH_INTERVAL)
    staged = StagedStates(idle, epochs, background=True) if buckets and idle is not None else None
    flow = build_dataflow(spec, settings, batch_size=batch_size, output=output, idle=idle, idle_after=idle_after,
                          workers=workers, buckets=buckets, epochs=epochs, linger=linger, staged=staged,
                          keep_decoded=keep_decoded, decoded_bytes=decoded_bytes)
    monitor = start_monitor(spec, settings, "bytewax", lag_interval_s, positions=lambda: output.positions)
    releaser = HeapReleaser().start()  # what a backlog's fetched messages held goes back once they are scored
    try:
        with flow_collector():
            cli_main(flow, **cli_options)
    finally:
        if staged is not None:
            staged.close()
        if epochs is not None:
            epochs.close()
        releaser.stop()
        if monitor is not None:
            monitor.stop()
