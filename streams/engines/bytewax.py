"""Run a ``FlowSpec`` on Bytewax: Kafka in, processors keyed by state key, Kafka and side sinks out.

The adapter owns no logic: it decodes (dead-lettering what fails), hands each key's batch to that
key's processor, encodes what comes back and writes it. Processors are checkpointed by Bytewax's
recovery (as versioned plain bytes, ``streams.state``, at each epoch with the Kafka offsets), so a restart
resumes from the last epoch and replays at most one epoch of input; outputs repeat with the same ids and
sinks drop the repeats. Keys silent for a while move to an ``IdleStore`` next to the recovery files.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import bytewax.operators as op
from bytewax.connectors.kafka import KafkaError, KafkaSource, KafkaSourceMessage
from bytewax.dataflow import Dataflow
from bytewax.operators import StatefulBatchLogic
from bytewax.outputs import DynamicSink, FixedPartitionedSink, StatefulSinkPartition, StatelessSinkPartition
from confluent_kafka import OFFSET_BEGINNING

from connectors.kafka import EventProducer, KafkaSettings, admin_config, create_topics
from connectors.prometheus import PROCESSING_SECONDS
from streams.engines.lag import start_monitor
from streams.engines.output import FlowOutput, Message, flow_topics
from streams.processor import Emit, Event, FlowSpec, Processor, Sink
from streams.state import IdleStore, StateError, decode_checkpoint, encode_processor, restore_or_fresh

log = logging.getLogger(__name__)

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


def idle_store(state_dir: Path, process: int = 0) -> IdleStore:
    """The idle store of one process (``idle_path``), which also reads the other processes' files.

    Parameters
    ----------
    state_dir, process
        As for ``idle_path``.
    """
    return IdleStore(idle_path(state_dir, process), peers=IDLE_FILES)


FETCH_WAIT_MS = 50  # librdkafka's 500 ms default, on a broker that waits it out, was most of a live batch's latency


def source_config(settings: KafkaSettings) -> dict[str, Any]:
    """What the Bytewax Kafka source's clients get on top of Bytewax's own keys: every client setting of
    ``[kafka]``, ``extra`` included (TLS, SASL/OAuth, fetch tuning). Bytewax assigns partitions and keeps
    offsets in its recovery store, so group and commit settings are its own. A fetch waits at most
    ``FETCH_WAIT_MS`` for data unless ``extra`` says otherwise (``fetch.wait.max.ms``): a scoring flow wants its
    input as it arrives, and an idle partition's fetches cost little.

    Parameters
    ----------
    settings
        Kafka settings.
    """
    return {"fetch.wait.max.ms": FETCH_WAIT_MS, **admin_config(settings)}


class _ProcessorLogic(StatefulBatchLogic):
    """One key's processor inside Bytewax; its snapshot is the processor as versioned plain bytes.

    A resumed key stays bytes until its next event. With an ``IdleStore``, a key silent for ``idle_after`` is
    written there and discarded, so memory follows active keys; it is reloaded when it speaks again.
    """

    def __init__(self, spec: FlowSpec, output: FlowOutput, resume: bytes | None, idle: IdleStore | None,
                 idle_after: timedelta) -> None:
        self.spec = spec
        self.output = output
        self.timer = PROCESSING_SECONDS.labels(spec.name)
        self.saved = resume
        self.idle = idle
        self.idle_after = idle_after
        self.key: str | None = None
        self.processor: Processor | None = None
        self.due = datetime.now(UTC) + idle_after if idle is not None else None

    def on_batch(self, values: list[Event]) -> tuple[list[list[Emit]], bool]:
        if self.processor is None:
            self.key = self.spec.key(values[0])
            saved = self.saved if self.saved is not None or self.idle is None else self.idle.get(self.key)
            self.processor, _ = restore_or_fresh(self.spec, self.key, saved)
            self.saved = None
        with self.timer.time():
            emits = self.processor.process(values)
        self.output.processed(values)
        if self.idle is not None:
            self.due = datetime.now(UTC) + self.idle_after
        return _as_one(emits), StatefulBatchLogic.RETAIN

    def notify_at(self) -> datetime | None:
        return self.due

    def on_notify(self) -> tuple[list[list[Emit]], bool]:
        if self.idle is None:
            return [], StatefulBatchLogic.RETAIN
        emits = _as_one(self.processor.flush()) if self.processor is not None else []
        blob = self.snapshot()
        if blob is None:
            return emits, StatefulBatchLogic.RETAIN
        try:
            key = self.key if self.key is not None else decode_checkpoint(blob)["key"]
        except StateError:  # a resumed state that would be refused anyway: keep it where recovery has it
            self.due = None
            return emits, StatefulBatchLogic.RETAIN
        self.idle.put(key, blob)  # committed before the discard can reach a checkpoint
        return emits, StatefulBatchLogic.DISCARD

    def snapshot(self) -> bytes | None:
        if self.processor is None:
            return self.saved
        return encode_processor(self.processor, self.key or "")


def _as_one(emits: list[Emit]) -> list[list[Emit]]:
    """A key's emits as one item downstream: the steps after the processors then run once per batch, not per emit."""
    return [emits] if emits else []


class _ProducerPartition(StatefulSinkPartition):
    """Produces as batches come and waits for the broker's acknowledgements once per epoch, in ``snapshot``: Bytewax
    commits an epoch only after its snapshots, so an output not acknowledged stops the commit and its input is
    read again (at least once). Waiting after every batch instead held each live message for a round trip."""

    def __init__(self, settings: KafkaSettings) -> None:
        self.producer = EventProducer(settings)

    def write_batch(self, items: list[Message]) -> None:
        for topic, key, value, headers in items:
            self.producer.produce_raw(topic, value, key, headers)

    def snapshot(self) -> None:
        self.producer.flush(30.0)  # raises if any delivery failed: the epoch is not committed, input replays

    def close(self) -> None:
        self.producer.flush(30.0)


class _ProducerSink(FixedPartitionedSink):
    """Writes (full topic, key, value, headers) tuples; failed deliveries fail the epoch, never vanish.

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

    def write_batch(self, items: list[tuple[str, list[Emit]]]) -> None:
        self.sink.write([e for _, emits in items for e in emits])

    def close(self) -> None:
        self.sink.close()


class _SideSink(DynamicSink):
    def __init__(self, factory: Any) -> None:
        self.factory = factory

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _SidePartition:
        return _SidePartition(self.factory())


def build_dataflow(
    spec: FlowSpec, settings: KafkaSettings, *, batch_size: int = 500, output: FlowOutput | None = None,
    idle: IdleStore | None = None, idle_after: timedelta = timedelta(minutes=10), workers: int = 1,
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
    output
        The decode/encode path to use (its ``positions`` feed the lag monitor); a new one by default.
    idle, idle_after
        Where keys silent for ``idle_after`` go to leave memory (None: they stay); they come back when they speak.
    workers
        Workers in the whole cluster: the Kafka output has one partition per worker.
    """
    output = output or FlowOutput(spec, settings)
    flow = Dataflow(spec.name)
    source = KafkaSource(
        [settings.bootstrap_servers],
        [settings.topic(t) for t in spec.inputs],
        tail=True,
        starting_offset=OFFSET_BEGINNING,
        add_config=source_config(settings),
        batch_size=batch_size,
        raise_on_errors=False,
    )
    messages = op.input("kafka-in", flow, source)

    def decode(batch: list[KafkaSourceMessage | KafkaError]) -> list[tuple[str, Event | Message]]:
        out: list[tuple[str, Event | Message]] = []
        for msg in batch:
            if isinstance(msg, KafkaError):
                if msg.err.fatal():
                    raise RuntimeError(f"fatal Kafka error in {spec.name}: {msg.err}")
                log.warning("kafka consumer error", extra={"flow": spec.name, "error": str(msg.err)})
                continue
            broker_ms = msg.timestamp[1] if msg.timestamp and msg.timestamp[0] else -1
            item = output.decode(msg.topic, msg.key, msg.value, msg.partition, msg.offset, broker_ms)
            out.append((spec.key(item), item) if isinstance(item, Event) else ("", output.dead_letter(item)))
        return out

    def encode(batch: list[tuple[str, list[Emit]]]) -> list[tuple[str, Message]]:
        return [(key, output.encode(e)) for key, emits in batch for e in emits if output.kafka_bound(e)]

    # Steps work on whole batches (a poll's messages, a key's emits): one Python call per batch, not per item.
    decoded = op.flat_map_batch("decode", messages, decode)
    split = op.branch("valid", decoded, lambda kv: isinstance(kv[1], Event))
    processed = op.stateful_batch(
        "process", split.trues, lambda resume: _ProcessorLogic(spec, output, resume, idle, idle_after))
    out = op.merge("to-kafka", op.flat_map_batch("encode", processed, encode), split.falses)
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
    epoch_interval: timedelta = timedelta(seconds=2),
    workers: int = 1,
    batch_size: int = 500,
    lag_interval_s: float | None = 5.0,
    idle_after: timedelta | None = timedelta(minutes=10),
) -> None:
    """Run until interrupted. With ``state_dir``, state and offsets are checkpointed every epoch.

    A restart with the same ``state_dir`` resumes from the last epoch: the inputs after it are read again
    and give the same output ids (delivery is at least once, outputs idempotent).

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
        if idle_after is not None:
            move_legacy_idle_store(state_dir)
            idle = idle_store(state_dir)
    run_dataflow(spec, settings, batch_size=batch_size, lag_interval_s=lag_interval_s, idle=idle,
                 idle_after=idle_after or timedelta(minutes=10), workers_per_process=workers,
                 epoch_interval=epoch_interval, recovery_config=recovery)


def run_dataflow(
    spec: FlowSpec, settings: KafkaSettings, *, batch_size: int, lag_interval_s: float | None,
    idle: IdleStore | None = None, idle_after: timedelta = timedelta(minutes=10), **cli_options: Any
) -> None:
    """Run the flow's dataflow in this process beside a lag monitor that commits the positions this process
    consumed, so the flow's group shows how far it got.

    Parameters
    ----------
    spec, settings, batch_size
        As for ``build_dataflow``.
    lag_interval_s
        How often the lag monitor reports (None: no monitor).
    idle, idle_after
        As for ``build_dataflow``.
    cli_options
        Passed to Bytewax's ``cli_main`` (workers, epoch interval, recovery).
    """
    from bytewax.run import cli_main

    output = FlowOutput(spec, settings)
    workers = cli_options.get("workers_per_process", 1) * len(cli_options.get("addresses") or [None])
    flow = build_dataflow(spec, settings, batch_size=batch_size, output=output, idle=idle, idle_after=idle_after,
                          workers=workers)
    monitor = start_monitor(spec, settings, "bytewax", lag_interval_s, positions=lambda: output.positions)
    try:
        cli_main(flow, **cli_options)
    finally:
        if monitor is not None:
            monitor.stop()
