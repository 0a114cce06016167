"""Fleet scale: the sensor flow at growing fleet sizes, through the real broker, checkpointing on, both engines.

For each fleet size and engine, over one broker (a namespace per run):

- ``readings_per_s``: ``eddyline run anomaly`` over a pre-filled topic holding the same work at every fleet size
  (``READINGS``: ``batches_for``; ``--batches`` sets the batches per device instead, ``MIN_MESSAGES`` messages at
  least): the readings scored after the watcher's first fetch that
  brought scores, over the time from it to the last (a 10 ms fetch wait; the flow produces a poll's scores
  together, so they arrive in bunches); ``cpu_s_per_m_readings``, the flow process's CPU seconds per million
  of those readings over the same span: on shared cores, the figure other jobs' load leaves mostly alone;
- ``rss_mb``: the flow process's peak resident memory (``VmHWM``) after the pre-filled topic is scored;
- ``state_bytes_per_device``: the encoded state of one device (``streams.state``), the mean over the fleet, read
  back from where the engine keeps it (Bytewax's recovery files, Faust's changelog);
- ``resumed_mb`` (Bytewax): the latest snapshot of every Bytewax state key, which a restart loads, and
  ``state_keys``, how many keys that is (devices, or buckets of devices with ``--buckets``); with buckets, the
  device states written to the flow's state store (``versions_mb``) are read only when a device speaks;
- ``checkpoint_mb``: the recovery folder (Bytewax) or the changelog topic's bytes (Faust) after the run;
- ``checkpoint_mb_per_epoch``: what checkpointing wrote while the pre-filled topic was scored, per 2 s epoch
  (Bytewax: the process's disk writes, ``/proc/PID/io``; Faust: the changelog bytes produced);
- ``live_max_readings_per_s`` (``--live-max``, the default unless ``--live-rate`` is given): the highest offered
  rate the flow sustains with the load generator running, by probes of ``--probe-s`` seconds run as the latency
  phase runs, bisecting a quarter to all of the pre-filled maximum, each judged on whether the flow's lag keeps
  growing (``benchmarks.live_capacity`` states the criterion; ``live_max_probes`` lists each probe). Why it is
  the default: the goal is p99 at half of the maximum load, and the pre-filled maximum is measured with the
  generator idle and the flow reading full polls; live, the flow, the broker and the generator share the cores,
  and at half the pre-filled maximum they took about 1.8-1.9 of the 2 cores, so the queue grew through 150 s
  runs (BENCHMARKS.md, "Session 13: long-run tail latency"): half of that maximum is not half of what the
  machine serves live. ``readings_per_s`` stays the pre-filled maximum (the readings/s goal is about it);
- ``latency_p50_ms``/``latency_p99_ms`` (unless ``--live-s 0``): a live fleet (event times on the wall clock,
  devices' batch ends spread evenly over a batch span) offered half the live maximum (``--no-live-max``: half the
  pre-filled maximum; or ``--live-rate``; ``offered_as`` says which) for ``live_s`` seconds, on the flow that
  measured the maximum, after the probes and before the SIGKILL below: from a batch's event
  time (its last reading) to the arrival of its score event at a watcher; batches still unscored ``DRAIN_S``
  after the load stops are left out and counted (``latency_batches_sent`` against ``latency_batches_scored``).
  The same delay split in three: ``latency_send_*`` (event time to the generator producing the batch),
  ``latency_flow_*`` (that to the score's Kafka timestamp, stamped when the flow produced it) and
  ``latency_watch_*`` (that to the watcher receiving it); ``latency_cpu_ms_per_batch``, the flow process's CPU
  time while the clock runs (drain included) per batch sent: what a live batch costs, whatever else loads the
  machine. The generator's ``linger.ms`` is ``send_linger_ms`` (``--send-linger-ms``; default ``[kafka]
  linger_ms``): the embedded broker's fetches slow with every produce request it stores, so a generator sending
  small requests grows the broker's cost through a long run (BENCHMARKS.md, "Session 15: the embedded broker
  slows as it fills"). The generator and the watcher are threads of this process and share the flow's cores, so they are
  kept light: every live batch is built and Avro-encoded before the clock starts (``_schedule``; its CPU per
  batch is ``harness_build_cpu_ms_per_batch``), the generator only hands bytes to its producer when each is
  due, and the watcher keeps the scores' bytes and decodes them after the load (or in bulk once as many have
  arrived as were sent); ``harness_cpu_ms_per_batch`` is this process's CPU while the clock runs, per batch
  sent. Until session 7 both ran on the clock: building and encoding each batch at its due time and decoding
  every score as it came took about as much CPU as the flow's own (BENCHMARKS.md, Fleet scale, "Latency at
  half load, fifth pass");
- ``recovery_s``: after SIGKILL, from starting the flow again to the score of a batch published meanwhile;

A fleet whose projected memory (from the first run's RSS per device) would not fit in the machine's available
memory is recorded as skipped, with the projection, rather than run.
"""

from __future__ import annotations

import bisect
import json
import os
import platform
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import typer
from confluent_kafka import OFFSET_BEGINNING, Consumer, Message, TopicPartition

from benchmarks.live_capacity import bisect_maximum, judge
from benchmarks.timing import FETCH_WAIT_MS, fetch_rate, watch_fetches
from connectors.broker import EmbeddedBroker
from connectors.kafka import EventProducer, KafkaSettings, consumer_config, create_topics, scan_to_end
from edge_agent.health import process_cpu_seconds
from schemas import ANOMALY_SCORE, SENSOR_BATCH, AvroSerde
from streams.producers.simulator import SensorSimulator

TOPIC = "sensor.readings"
SCORES = "scores.anomaly"
EPOCH_S = 2.0
READINGS_PER_MESSAGE = 50
MIN_MESSAGES = 6000  # pre-filled messages at least (4 poll rounds of 3 partitions x 500), whatever the fleet
READINGS = 30_000_000  # pre-filled readings at every fleet size: 100,000 devices x 2 batches (each device's first
# batch builds its state, the second restores it), so that sizes are compared over the same work; 0.9 M readings at
# 1,000 devices (1-5 s of work) gave 397k-738k readings/s minutes apart on a quiet machine (BENCHMARKS.md)
DRAIN_S = 60.0  # after the live load stops, how long batches still in flight may take to be scored


def batches_for(devices: int, batches: int | None = None, readings: int = READINGS) -> int:
    """Pre-filled batches per device: ``batches`` if given, else enough for ``readings`` readings over the fleet;
    at least enough for ``MIN_MESSAGES`` messages, so that ``_throughput`` has poll rounds to time.

    Parameters
    ----------
    devices
        The fleet size.
    batches
        Batches per device (``--batches``); None: from ``readings``.
    readings
        Readings to pre-fill, whatever the fleet size.
    """
    per_device = batches if batches is not None else -(-readings // (devices * 3 * READINGS_PER_MESSAGE))
    return max(per_device, -(-MIN_MESSAGES // devices))


def _consumer(settings: KafkaSettings, topic: str) -> Consumer:
    config = consumer_config(settings, "eddyline-bench-scale") | {"fetch.wait.max.ms": FETCH_WAIT_MS}
    consumer = Consumer(config)
    meta = consumer.list_topics(topic, timeout=10).topics[topic]
    consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in meta.partitions])
    return consumer


class Flow:
    """``eddyline run anomaly`` as its own process, and what the kernel says about it."""

    def __init__(self, settings: KafkaSettings, engine: str, state: Path, log: Path, env: dict[str, str],
                 cwd: Path | None = None) -> None:
        self.cwd = cwd  # ``python -m`` imports from its working folder first: a source tree to measure
        self.env = {**os.environ, **env, "EDDYLINE_KAFKA_BOOTSTRAP_SERVERS": settings.bootstrap_servers,
                    "EDDYLINE_KAFKA_NAMESPACE": settings.namespace,
                    "EDDYLINE_KAFKA_SESSION_TIMEOUT_MS": str(settings.session_timeout_ms),
                    "EDDYLINE_RUNTIME_EPOCH_INTERVAL_S": str(EPOCH_S)}
        self.argv = [sys.executable, "-m", "streams.cli", "run", "anomaly", "--engine", engine,
                     "--state-dir", str(state)]
        self.log = log
        self.proc: subprocess.Popen | None = None

    def start(self) -> float:
        self.proc = subprocess.Popen(self.argv, env=self.env, stdout=self.log.open("ab"), stderr=subprocess.STDOUT,
                                     start_new_session=True, cwd=self.cwd)
        return time.monotonic()

    def _status(self, field: str) -> int:
        assert self.proc is not None
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
        return 0

    def rss(self) -> int:
        return self._status("VmRSS")

    def peak_rss(self) -> int:
        return self._status("VmHWM")

    def cpu_s(self) -> float:
        """CPU seconds the flow process has used (user and system, every thread)."""
        assert self.proc is not None
        return process_cpu_seconds(self.proc.pid)

    def disk_writes(self) -> int:
        assert self.proc is not None
        for line in Path(f"/proc/{self.proc.pid}/io").read_text().splitlines():
            if line.startswith("write_bytes:"):
                return int(line.split()[1])
        return 0

    def alive(self) -> None:
        if self.proc is not None and self.proc.poll() is not None:
            raise RuntimeError(f"the flow exited with {self.proc.returncode}; see {self.log}")

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(30)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.kill()


def _prefill(settings: KafkaSettings, sim: SensorSimulator, messages: int) -> None:
    create_topics(settings, [TOPIC])
    with EventProducer(settings) as producer:
        for _, rec in zip(range(messages), sim):
            producer.produce(TOPIC, SENSOR_BATCH, rec, key=rec["device_id"])


def _throughput(flow: Flow, watcher: Consumer, messages: int, per_message: int) -> tuple[float, float, float]:
    """(readings/s, seconds from first to last score, the flow's CPU seconds per million readings) once
    ``messages`` score events arrived, counted per watcher fetch (``benchmarks.timing``). The flow scores a
    poll's messages (up to ``batch_size`` per partition) and produces their scores together, so they arrive in
    bunches; a slope fitted through a few bunches measured nothing (207 million readings/s at 1,000 devices on
    a quiet machine), while the first bunch's work is simply done before the clock starts."""
    fetches = watch_fetches(watcher, messages, flow.alive, flow.cpu_s, 3600, flow.log)
    rate = fetch_rate(fetches, per_message, hint="pre-fill more batches per device (--batches)")
    assert rate.span_s is not None and rate.cpu_s_per_m_readings is not None  # the flow runs here, where /proc is
    return rate.readings_per_s, rate.span_s, rate.cpu_s_per_m_readings


def _versions_bytes(state: Path) -> int:
    """Bytes of the latest version of each device's state in the flow's state stores (bucket layout)."""
    total = 0
    for path in (state / "idle").glob("idle-*.sqlite3"):
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            total += db.execute("SELECT COALESCE(SUM(LENGTH(v.state)), 0) FROM versions v JOIN (SELECT key, "
                                "MAX(version) AS m FROM versions GROUP BY key) l ON v.key = l.key AND "
                                "v.version = l.m").fetchone()[0]
        except sqlite3.OperationalError:  # no versions table: one key per device
            pass
        finally:
            db.close()
    return total


def _bytewax_state(state: Path) -> tuple[int, int]:
    """(bytes, keys) of the latest snapshot of each key in Bytewax's recovery partitions."""
    total = keys = 0
    for part in state.glob("part-*.sqlite3"):
        db = sqlite3.connect(f"file:{part}?mode=ro", uri=True)
        try:
            rows = db.execute(
                "SELECT s.ser_change FROM snaps s JOIN (SELECT step_id, state_key, MAX(snap_epoch) AS e FROM snaps "
                "GROUP BY step_id, state_key) m ON s.step_id = m.step_id AND s.state_key = m.state_key "
                "AND s.snap_epoch = m.e WHERE s.step_id LIKE '%process%' AND s.ser_change IS NOT NULL").fetchall()
        finally:
            db.close()
        for (blob,) in rows:
            total += len(blob)
            keys += 1
    return total, keys


CHANGELOG_READ_S = 600.0  # the most the changelog read may take (100,000 devices: about 100,000 small batches)


def _changelog(settings: KafkaSettings) -> tuple[int, int, int, dict[str, int]]:
    """(all bytes ever written, bytes of the latest value per key, keys, records) of the Faust flow's changelog.

    ``records`` counts what was written (``records``, ``bytes``, closing ``markers``) and what one record per
    changed key per commit interval (Faust's, 1 s) would have written instead (``coalesced_records``,
    ``coalesced_bytes``: the last record of each key in each second, by the records' timestamps); ``complete``
    is 1 once every partition was read to the end the broker reported at the start, ``read_ms`` what that took.

    Read to the end offsets (``connectors.kafka.scan_to_end``: bulk fetches and a 500 ms fetch wait, not the
    watcher's 10 ms: the embedded broker answers a fetch with what it gathered within the wait, and gathering
    from the start of a partition of some 33,000 small batches (the flow's at 100,000 devices) took longer, so
    every fetch came back empty and a reader with a 10 ms wait read nothing for as long as it tried (session 10;
    BENCHMARKS.md, "Session 11: Faust prefetch and revoked keys"))."""
    from streams.engines.faust import MARKER, TABLE

    topic = f"{settings.topic('eddyline-sensor-anomaly')}-{TABLE}-changelog"
    latest: dict[bytes, int] = {}
    per_second: dict[tuple[bytes, int], int] = {}
    counts = {"records": 0, "bytes": 0, "markers": 0}

    def count(msg: Message) -> None:
        if msg.key() == MARKER:
            counts["markers"] += 1
            return
        size = len(msg.value() or b"")
        counts["bytes"] += size
        counts["records"] += 1
        latest[msg.key()] = size
        per_second[(msg.key(), msg.timestamp()[1] // 1000)] = size

    began = time.monotonic()
    pending = scan_to_end(settings, topic, count, timeout=CHANGELOG_READ_S)
    counts |= {"coalesced_records": len(per_second), "coalesced_bytes": sum(per_second.values()),
               "complete": int(not pending), "read_ms": round(1000 * (time.monotonic() - began))}
    return counts["bytes"], sum(latest.values()), len(latest), counts


def _folder_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def _recovery(flow: Flow, settings: KafkaSettings, sim: SensorSimulator, watcher: Consumer) -> float:
    """SIGKILL, publish one more batch, restart: seconds from the restart to that batch's score."""
    flow.kill()
    record = next(iter(sim))
    with EventProducer(settings) as producer:
        producer.produce(TOPIC, SENSOR_BATCH, record, key=record["device_id"])
    serde = AvroSerde()
    started = flow.start()
    while time.monotonic() - started < 600:
        flow.alive()
        for msg in watcher.consume(5000, 0.2):
            if msg.error() is None and serde.decode(msg.value(), ANOMALY_SCORE)["source_event_id"] == record["event_id"]:
                return time.monotonic() - started
    raise RuntimeError(f"no score for the batch published during the outage within 600 s; see {flow.log}")


def _percentiles(values: list[float]) -> tuple[float, float]:
    if not values:
        return float("nan"), float("nan")
    return float(np.percentile(values, 50)), float(np.percentile(values, 99))


GC_TRACE = Path(__file__).resolve().parent / "gc_trace"  # its sitecustomize times each collection of the flow
SLOW_GC_MS = 50.0  # a collection at least this long counts as a pause in ``_gc_summary``
LATENCY_SPAN_S = 30.0  # ``latency_p99_by_span_ms``: p99 of the batches sent in each span of this many seconds


def _gc_summary(path: Path, live: tuple[float, float], windows: list[tuple[float, float, float]], devices: int,
                pid: int | None = None) -> dict[str, Any]:
    """What ``--gc-trace`` recorded in the flow (``benchmarks/gc_trace``): collections before the live load (the
    pre-filled phase, and the live maximum's probes when they ran) and during it (count, total and longest ms per
    generation), the objects a full collection left per device before the live load (what the next one scans
    again), and whether the slowest live batches (above p99) met a pause: the share of them, and of all live
    batches, whose time in the flow (sent to the score's timestamp) overlaps a collection of ``SLOW_GC_MS`` or more. Only the flow process's lines (``pid``), not its helpers'."""
    lines = [json.loads(x) for x in path.read_text().splitlines()] if path.exists() else []
    lines = [x for x in lines if pid is None or x.get("pid", pid) == pid]
    out: dict[str, Any] = {}
    leak = [x for x in lines if "leak" in x]
    if leak:
        out["gc_leak_check"] = {"collected": leak[0]["leak"], "ms": leak[0]["leak_ms"]}
    lines = [x for x in lines if "gen" in x]
    for phase, keep in (("before_live", lambda t: t < live[0]), ("live", lambda t: live[0] <= t <= live[1])):
        for gen in (0, 1, 2):
            ms = [x["ms"] for x in lines if x["gen"] == gen and keep(x["t"])]
            out[f"gc_{phase}_gen{gen}"] = {"count": len(ms), "total_ms": round(sum(ms)), "max_ms": round(max(ms, default=0))}
    full = [x for x in lines if x["gen"] == 2 and x["t"] < live[0]]
    if full:
        out["gc_objects_per_device_before_live"] = round((full[-1]["gen2"] + full[-1]["frozen"]) / devices, 1)
        out["gc_unfrozen_per_device_before_live"] = round(full[-1]["gen2"] / devices, 1)
    # full collections and any of 20 ms or more, t in seconds from the first live batch's send
    out["gc_long_or_full"] = [{**x, "t": round(x["t"] - live[0], 2)} for x in lines if x["gen"] == 2 or x["ms"] >= 20]
    pauses = [(x["t"] - x["ms"] / 1000, x["t"]) for x in lines if x["ms"] >= SLOW_GC_MS]
    out["gc_live_pauses_ms"] = [round(x["ms"]) for x in lines if x["ms"] >= SLOW_GC_MS and live[0] <= x["t"] <= live[1]]

    def met(sent: float, stamp: float) -> bool:
        return any(a <= stamp and b >= sent for a, b in pauses)

    if windows:
        p99 = float(np.percentile([w[2] for w in windows], 99))
        slow = [w for w in windows if w[2] > p99]
        out["gc_slow_batches_met_pause"] = round(sum(met(a, b) for a, b, _ in slow) / max(1, len(slow)), 3)
        out["gc_all_batches_met_pause"] = round(sum(met(a, b) for a, b, _ in windows) / len(windows), 3)
    return out


def _leak_check(trace: Path, flow: Flow, timeout_s: float = 60.0) -> None:
    """Ask the flow's trace for its leak check (``benchmarks/gc_trace``) and wait for its line."""
    Path(f"{trace}.leak").touch()
    until = time.monotonic() + timeout_s
    while time.monotonic() < until:
        flow.alive()
        lines = [json.loads(x) for x in trace.read_text().splitlines()] if trace.exists() else []
        if any("leak" in x and x.get("pid") == (flow.proc.pid if flow.proc else None) for x in lines):
            return
        time.sleep(0.5)


def _by_span(spans: list[tuple[float, float, float, float]], windows: list[tuple[float, float, float]]
             ) -> dict[str, Any]:
    """The flow's and the broker's CPU ms per live batch sent, and the load average, in each span the watcher
    sampled: whether a tail that grows over a run comes with the flow's or the broker's cost per batch (something
    in it growing) or with the machine's load (other work taking the cores)."""
    sent = sorted(w[0] for w in windows)
    cpu, broker, load = [], [], []
    for (t0, c0, l0, b0), (t1, c1, _, b1) in zip(spans, spans[1:]):
        n = bisect.bisect_left(sent, t1) - bisect.bisect_left(sent, t0)
        if n:
            cpu.append(round(1000 * (c1 - c0) / n, 3))
            broker.append(round(1000 * (b1 - b0) / n, 3))
            load.append(round(l0, 1))
    return {"latency_cpu_ms_per_batch_by_span": cpu, "broker_cpu_ms_per_batch_by_span": broker,
            "load_average_by_span": load}


def _p99_by_span(windows: list[tuple[float, float, float]], part: Callable[[tuple[float, float, float]], float]
                 = lambda w: w[2]) -> list[int]:
    """p99 (ms) of the live batches sent in each ``LATENCY_SPAN_S`` seconds, in order: where in the run the tail is;
    of the whole delay, or of ``part`` of it."""
    if not windows:
        return []
    first = windows[0][0]
    spans: dict[int, list[float]] = {}
    for w in windows:
        spans.setdefault(int((w[0] - first) // LATENCY_SPAN_S), []).append(part(w))
    return [round(float(np.percentile(v, 99))) for _, v in sorted(spans.items())]


def _schedule(settings: KafkaSettings, fleet: SensorSimulator, rate: float, live_s: float
              ) -> tuple[list[tuple[float, bytes, bytes]], list[str], SensorSimulator]:
    """Every batch ``fleet``'s devices send in ``live_s`` seconds at ``rate`` readings/s, built and Avro-encoded
    before the clock starts (the schedule is deterministic): (when it is due, key, value) in due order, the event
    ids in the same order, and the simulator (its devices' sequence numbers where the schedule leaves them).

    The first batch falls due after the build, whose time is projected from setting up the fleet and encoding a
    sample first; the others over one batch span, so that none is late before it could be sent."""
    devices = len(fleet.devices)
    interval_ms = 1000.0 * devices * 3 / rate
    first_ms = (READINGS_PER_MESSAGE - 1) * interval_ms  # a batch's first to last reading
    count = int(rate * live_s / (3 * READINGS_PER_MESSAGE)) + 1
    serde = AvroSerde()
    full = settings.topic(TOPIC)
    began = time.perf_counter()
    sample = SensorSimulator(devices=devices, readings_per_message=READINGS_PER_MESSAGE, interval_ms=interval_ms,
                             seed=11, stagger=True)
    made = time.perf_counter()  # a fleet of 100,000 devices takes seconds to set up: counted in the projection
    for _, rec in zip(range(min(count, 300)), sample):
        serde.encode(SENSOR_BATCH, rec, topic=full)
    build_s = 2 * (made - began) + (time.perf_counter() - made) / min(count, 300) * count
    sim = SensorSimulator(devices=devices, readings_per_message=READINGS_PER_MESSAGE, interval_ms=interval_ms,
                          start_ms=int(time.time() * 1000 - first_ms + 1000 * (1.5 * build_s + 1)), seed=11,
                          stagger=True)
    for d, before in zip(sim.devices, fleet.devices, strict=True):
        d.seq = before.seq
    end_ms = sim.start_ms + first_ms + 1000 * live_s
    schedule: list[tuple[float, bytes, bytes]] = []
    ids: list[str] = []
    for rec in sim:
        if rec["event_time"] >= end_ms:  # not sent: its device's sequence goes on from the one before
            sim.devices[len(schedule) % devices].seq -= 1
            break
        schedule.append((sim.due_s(rec), rec["device_id"].encode(), serde.encode(SENSOR_BATCH, rec, topic=full)))
        ids.append(rec["event_id"])
    return schedule, ids, sim


def _latency(settings: KafkaSettings, fleet: SensorSimulator, rate: float, live_s: float,
             watcher: Consumer, flow_cpu: Callable[[], float] | None = None,
             broker_cpu: Callable[[], float] = lambda: float("nan"), send_linger_ms: int | None = None
             ) -> dict[str, Any]:
    """Event time to score arrival for ``fleet``'s devices offered ``rate`` readings/s live (their readings now on
    the wall clock, their sequence numbers going on), and where the time went: ``send`` (event time to the
    generator producing the batch: a generator falling behind shows here), ``flow`` (the batch's produce time to
    its score's Kafka timestamp, set when the flow produced it: fetch, queueing, scoring) and ``watch`` (that
    timestamp to the watcher receiving it). p50/p99 in ms of each, batches scored and sent; with ``flow_cpu``
    (the flow's CPU seconds so far), what the flow spent while the clock ran (``flow_cpu_s``).

    What the harness costs while the clock runs: the generator only hands pre-encoded bytes to its producer at
    each batch's due time (``_schedule`` builds them before), and the watcher only keeps each score's bytes,
    arrival time and Kafka timestamp; scores are decoded after the load, or in bulk once as many have arrived
    as batches were sent, to know when to stop. ``send_linger_ms`` is the generator's ``linger.ms`` (default:
    ``KafkaSettings``'), how many batches share a produce request, as a gateway in front of the fleet batches them."""
    began = time.process_time()
    schedule, ids, sim = _schedule(settings, fleet, rate, live_s)
    build_cpu = time.process_time() - began
    index = {event_id: i for i, event_id in enumerate(ids)}
    sent = [float("nan")] * len(schedule)  # when the generator produced each batch (ms)
    produced = 0

    def produce() -> None:
        nonlocal produced
        with EventProducer(settings, **({} if send_linger_ms is None else {"linger.ms": send_linger_ms})) as producer:
            warm = next(iter(SensorSimulator(devices=1, readings_per_message=READINGS_PER_MESSAGE, seed=3)))
            warm.update(device_id="warm-up", event_id=f"warm-up-{time.time_ns()}")  # connects before the clock runs
            producer.produce(TOPIC, SENSOR_BATCH, warm, key=warm["device_id"])
            producer.flush()
            for i, (due, key, value) in enumerate(schedule):
                wait = due - time.time()
                if wait > 0:
                    producer.poll()
                    time.sleep(wait)
                producer.produce_raw(TOPIC, value, key, serve=False)
                sent[i] = time.time() * 1000
                produced = i + 1

    serde = AvroSerde()
    arrivals: list[tuple[float, bytes, int]] = []  # (arrival ms, score bytes, its Kafka timestamp)
    found: dict[int, tuple[float, int, float]] = {}  # batch index -> (arrival ms, Kafka timestamp, event time)
    decoded = 0

    def decode_arrived() -> None:
        nonlocal decoded
        for now_ms, value, stamp in arrivals[decoded:]:
            rec = serde.decode(value, ANOMALY_SCORE, check=False)
            i = index.get(rec["source_event_id"])
            if i is not None and i not in found:
                found[i] = (now_ms, stamp, rec["event_time"])
        decoded = len(arrivals)

    thread = threading.Thread(target=produce, daemon=True)
    on_clock = time.process_time()
    flow_began = flow_cpu() if flow_cpu is not None else 0.0
    thread.start()
    last_due = schedule[-1][0] if schedule else time.time()
    spans: list[tuple[float, float, float, float]] = []  # (wall s, flow's CPU s, load average, broker's CPU s)
    try:
        while time.time() < last_due + DRAIN_S:
            if flow_cpu is not None and (not spans or time.time() >= spans[-1][0] + LATENCY_SPAN_S):
                spans.append((time.time(), flow_cpu(), os.getloadavg()[0], broker_cpu()))
            for msg in watcher.consume(5000, 0.05):
                if msg.error() is None:
                    arrivals.append((time.time() * 1000, msg.value(), msg.timestamp()[1]))
            if produced == len(schedule) and len(arrivals) - decoded >= len(schedule) - len(found):
                decode_arrived()
                if len(found) == len(schedule):
                    break
    finally:
        thread.join(30)
    on_clock = time.process_time() - on_clock
    flow_spent = flow_cpu() - flow_began if flow_cpu is not None else float("nan")
    decode_arrived()
    for d, after in zip(fleet.devices, sim.devices, strict=True):
        d.seq = after.seq
    total, send_ms, flow_ms, watch_ms, arrived_s = [], [], [], [], []
    for i, (now_ms, stamp, event_ms) in sorted(found.items()):
        total.append(now_ms - event_ms)
        send_ms.append(sent[i] - event_ms)
        flow_ms.append(stamp - sent[i])
        watch_ms.append(now_ms - stamp)
        arrived_s.append(now_ms / 1000)
    out: dict[str, Any] = {"scored": len(found), "sent": produced, "build_cpu_s": build_cpu, "clock_cpu_s": on_clock,
                           "sent_s": [x / 1000 for x in sent[:produced]],
                           "flow_cpu_s": flow_spent, "max": max(total, default=float("nan")),
                           "spans": spans,
                           "samples": list(zip(arrived_s, total, send_ms, flow_ms, strict=True)),
                           "windows": [(sent[i] / 1000, stamp / 1000, now_ms - event_ms)
                                       for i, (now_ms, stamp, event_ms) in sorted(found.items())]}
    for name, values in (("", total), ("send_", send_ms), ("flow_", flow_ms), ("watch_", watch_ms)):
        p50, p99 = _percentiles(values)
        out[f"{name}p50"], out[f"{name}p99"] = p50, p99
    return out


LIVE_MAX_RANGE = (0.25, 1.0)  # the live maximum is sought between these shares of the pre-filled one
LIVE_MAX_PROBES = 4  # bisection steps: the answer within 0.75 / 16 (4.7 %) of the pre-filled maximum below the limit
PROBE_S = 20.0  # seconds of live load per probe (``--probe-s``)
PROBE_WARM_S = 5.0  # a probe's first seconds, left out of its lag fit (``benchmarks.live_capacity``)


def _live_maximum(settings: KafkaSettings, sim: SensorSimulator, prefilled: float, watcher: Consumer,
                  flow_cpu: Callable[[], float], probe_s: float, send_linger_ms: int | None = None
                  ) -> tuple[float, list[dict[str, Any]]]:
    """The highest offered rate the flow sustains live, by ``LIVE_MAX_PROBES`` probes of ``probe_s`` seconds
    bisecting ``LIVE_MAX_RANGE`` of the pre-filled maximum, each run as the latency phase runs (``_latency``)
    and judged on the flow's lag (``benchmarks.live_capacity``); each probe drains before the next. Returns the
    maximum and each probe: offered readings/s, whether it was sustained, the lag's fitted rise and what the
    criterion allowed (batches), its p99 and its flow CPU per batch."""
    done: list[dict[str, Any]] = []

    def sustains(rate: float) -> bool:
        lat = _latency(settings, sim, rate, probe_s, watcher, flow_cpu, send_linger_ms=send_linger_ms)
        verdict = judge(lat["sent_s"], [w[1] for w in lat["windows"]], PROBE_WARM_S)
        done.append({"offered": round(rate), "sustained": verdict.sustained, "lag_rise": round(verdict.rise),
                     "allowed": round(verdict.allowed), "p99_ms": None if lat["p99"] != lat["p99"] else round(lat["p99"]),
                     "scored": lat["scored"], "sent": lat["sent"],
                     "flow_cpu_ms_per_batch": round(1000 * lat["flow_cpu_s"] / max(1, lat["sent"]), 3),
                     "load_average": round(os.getloadavg()[0], 2)})
        return verdict.sustained

    best, _ = bisect_maximum(sustains, LIVE_MAX_RANGE[0] * prefilled, LIVE_MAX_RANGE[1] * prefilled, LIVE_MAX_PROBES)
    return best, done


def _bound(probes: list[dict[str, Any]]) -> str | None:
    """What the live maximum is when the probes did not bracket it: no probe sustained, so it lies below the
    range's low end (reported as that end); every probe sustained, so it may lie above the range's top."""
    if not probes:
        return None
    kept = [p["sustained"] for p in probes]
    return "below the range" if not any(kept) else "at or above the top" if all(kept) else "bracketed"


def measure(broker: EmbeddedBroker, devices: int, engine: str, batches: int | None, live_s: float, work: Path,
            env: dict[str, str], buckets: int = 0, live_rate: float | None = None, gc_trace: bool = False,
            tree: Path | None = None, probe_s: float = 0.0, send_linger_ms: int | None = None) -> dict[str, Any]:
    name = f"{engine}-{devices}" + (f"-b{buckets}" if buckets else "")
    load_before = os.getloadavg()[0]
    trace = work / f"{name}-gc.jsonl"
    paths = [str(GC_TRACE)] if gc_trace else []
    paths += [str(tree)] if tree is not None else []
    if paths:
        env = {**env, "PYTHONPATH": os.pathsep.join([*paths, *filter(None, [os.environ.get("PYTHONPATH")])])}
    if gc_trace:
        env["EDDYLINE_BENCH_GC_TRACE"] = str(trace)
    settings = KafkaSettings(bootstrap_servers=broker.bootstrap, namespace=f"scale-{name}.",
                             session_timeout_ms=6000)
    env = {**env, "EDDYLINE_RUNTIME_STATE_BUCKETS": str(buckets)}
    sim = SensorSimulator(devices=devices, readings_per_message=READINGS_PER_MESSAGE, seed=5)
    batches = batches_for(devices, batches)
    messages = devices * batches
    _prefill(settings, sim, messages)
    create_topics(settings, [SCORES])
    state = work / name
    flow = Flow(settings, engine, state, work / f"{name}.log", env, cwd=tree)
    watcher = _consumer(settings, settings.topic(SCORES))
    try:
        flow.start()
        rate, busy_s, cpu_per_m = _throughput(flow, watcher, messages, sim.readings_per_batch)
        rss = flow.peak_rss()
        writes = flow.disk_writes()
        time.sleep(2 * EPOCH_S + 1)  # the last epoch's checkpoint lands
        resumed = versions = 0
        changelog: dict[str, int] = {}
        if engine == "bytewax":
            resumed, keys = _bytewax_state(state)
            versions = _versions_bytes(state)
            state_bytes = resumed + versions
            checkpoint = _folder_bytes(state)
            per_epoch = writes / max(1.0, busy_s / EPOCH_S)
        else:
            written, state_bytes, keys, changelog = _changelog(settings)
            checkpoint = written
            per_epoch = written / max(1.0, busy_s / EPOCH_S)
        # on the process that measured the maximum, before the restart: after one, each device's first batch
        # restores its state (BENCHMARKS.md, third pass on latency), which the pre-filled maximum did not pay
        live_max, probes = (_live_maximum(settings, sim, rate, watcher, flow.cpu_s, probe_s, send_linger_ms)
                            if probe_s > 0 else (None, []))
        offered = live_rate or (live_max or rate) / 2
        lat = _latency(settings, sim, offered, live_s, watcher, flow.cpu_s,
                       lambda: process_cpu_seconds(broker.pid) if broker.pid else float("nan"),
                       send_linger_ms) if live_s > 0 else {}
        load_live = os.getloadavg()[0]
        if gc_trace:
            _leak_check(trace, flow)
        windows = lat.get("windows", [])
        collections = _gc_summary(trace, (windows[0][0], max(w[1] for w in windows)), windows, devices,
                                  flow.proc.pid if flow.proc else None) if gc_trace and windows else {}
        recovery = _recovery(flow, settings, sim, watcher)
    finally:
        watcher.close()
        flow.stop()
    return {
        "engine": engine, "devices": devices, "buckets": buckets, "readings_per_s": round(rate),
        "cpu_s_per_m_readings": round(cpu_per_m, 3),
        "rss_mb": round(rss / 2**20, 1),
        "state_bytes_per_device": round(state_bytes / (devices if buckets else max(1, keys))),
        "state_keys": keys, "resumed_mb": round(resumed / 2**20, 2), "versions_mb": round(versions / 2**20, 2),
        "checkpoint_mb": round(checkpoint / 2**20, 2), "checkpoint_mb_per_epoch": round(per_epoch / 2**20, 2),
        "recovery_s": round(recovery, 2),
        **{f"latency_{k}_ms": None if v != v else round(v) for k, v in lat.items()
           if k not in ("scored", "sent", "sent_s", "samples", "windows", "spans", "build_cpu_s", "clock_cpu_s",
                        "flow_cpu_s")},
        "latency_p99_by_span_ms": _p99_by_span(lat.get("windows", [])),
        "latency_flow_p99_by_span_ms": _p99_by_span(lat.get("windows", []), lambda w: 1000 * (w[1] - w[0])),
        **_by_span(lat.get("spans", []), lat.get("windows", [])),
        "latency_batches_scored": lat.get("scored"), "latency_batches_sent": lat.get("sent"),
        **{name: round(1000 * spent / lat["sent"], 3) if lat.get("sent") else None for name, spent in (
            ("latency_cpu_ms_per_batch", lat.get("flow_cpu_s")), ("harness_cpu_ms_per_batch", lat.get("clock_cpu_s")),
            ("harness_build_cpu_ms_per_batch", lat.get("build_cpu_s")))},
        "live_max_readings_per_s": None if live_max is None else round(live_max), "live_max_probes": probes,
        "live_max_bound": _bound(probes),
        "offered_readings_per_s": round(offered), "send_linger_ms": send_linger_ms,
        "offered_as": "--live-rate" if live_rate else "half the live maximum" if live_max else "half the pre-filled maximum",
        "readings": messages * sim.readings_per_batch,
        "batches_per_device": batches,
        **{f"changelog_{k}": v for k, v in changelog.items()},
        "load_average": [round(load_before, 2), round(load_live, 2)], "tree": str(tree or Path.cwd()),
        **collections,
    }


def _available_bytes() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) * 1024
    return 0


def plot(runs: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    for engine, buckets in sorted({(r["engine"], r.get("buckets", 0)) for r in runs}):
        done = [r for r in runs if (r["engine"], r.get("buckets", 0)) == (engine, buckets) and "skipped" not in r]
        if not done:
            continue
        x = [r["devices"] for r in done]
        label = f"{engine}, {buckets} buckets" if buckets else engine
        left.plot(x, [r["readings_per_s"] for r in done], marker="o", label=label)
        right.plot(x, [r["rss_mb"] for r in done], marker="o", label=label)
    for ax, title in ((left, "readings/s"), (right, "peak RSS (MB)")):
        ax.set_xscale("log")
        ax.set_xlabel("devices (3 sensors each)")
        ax.set_title(title)
        ax.grid(True, alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def run(devices: list[int], engines: list[str], json_path: Path | None = None, batches: int | None = None,
        live_s: float = 20.0, detector: str | None = None, packed: bool = False,
        plot_path: Path | None = None, buckets: list[int] | None = None,
        live_rate: float | None = None, gc_trace: bool = False, tree: Path | None = None,
        probe_s: float = 0.0, send_linger_ms: int | None = None) -> dict[str, Any]:
    from rich.console import Console

    console = Console(stderr=True)
    env = {"EDDYLINE_RUNTIME_IDLE_EVICT_S": "0", "EDDYLINE_RUNTIME_PACKED_SCORES": str(packed).lower()}
    if detector:
        env["EDDYLINE_RUNTIME_DETECTOR"] = detector
    work = Path(tempfile.mkdtemp(prefix="eddyline-scale-"))
    runs: list[dict[str, Any]] = []
    rss_per_device: dict[str, float] = {}
    try:
        with EmbeddedBroker(log_path=work / "broker.log") as broker:
            layouts = [(e, b) for e in engines for b in (buckets or [0] if e == "bytewax" else [0])]
            for n in devices:
                for engine, bucket_count in layouts:
                    projected = rss_per_device.get(engine, 0.0) * n
                    if projected > 0.8 * _available_bytes():
                        runs.append({"engine": engine, "devices": n, "skipped": (
                            f"projected RSS {projected / 2**30:.1f} GiB exceeds 80% of the "
                            f"{_available_bytes() / 2**30:.1f} GiB available")})
                        console.print(f"{engine} {n}: skipped, {runs[-1]['skipped']}")
                        continue
                    with console.status(f"{engine}, {n:,} devices, {bucket_count} buckets"):
                        result = measure(broker, n, engine, batches, live_s, work, env, bucket_count, live_rate,
                                         gc_trace, tree, probe_s, send_linger_ms)
                    rss_per_device.setdefault(engine, result["rss_mb"] * 2**20 / n)
                    runs.append(result)
                    console.print(result)
                    if json_path is not None:  # what is done survives a later run that fails
                        json_path.write_text(json.dumps({"runs": runs, "partial": True}, indent=2) + "\n")
    except BaseException:
        console.print(f"the run's logs and state are kept in {work}")
        raise
    shutil.rmtree(work, ignore_errors=True)  # a 100,000-device run leaves gigabytes of checkpoints
    out = {
        "runs": runs,
        "detector": detector or "default", "packed_scores": packed, "batches_per_device": batches,
        "prefilled_readings": None if batches is not None else READINGS,
        "readings_per_message": 3 * READINGS_PER_MESSAGE, "epoch_s": EPOCH_S,
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, "
                   f"{os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2**30:.0f} GiB, "
                   f"{platform.python_implementation()} {platform.python_version()}",
    }
    if json_path is not None:
        json_path.write_text(json.dumps(out, indent=2) + "\n")
    if plot_path is not None:
        plot(runs, plot_path)
    return out


def command(
    devices: Annotated[str, typer.Option(help="Fleet sizes, comma-separated.")] = "1000,10000,100000",
    json_path: Annotated[Path | None, typer.Option("--json", help="Write the results here.")] = None,
    engines: Annotated[str, typer.Option(help="Engines, comma-separated.")] = "bytewax,faust",
    batches: Annotated[int | None, typer.Option(help=(
        f"Pre-filled batches per device (150 readings each). Default: {READINGS // 1_000_000} M readings at every "
        "fleet size (200 batches per device at 1,000 devices, 2 at 100,000), so sizes compare over equal work."),
        min=1)] = None,
    live_s: Annotated[float, typer.Option(help="Seconds of live load for the latency measurement.")] = 20.0,
    detector: Annotated[str | None, typer.Option(help="Anomaly detector (default: the flow's).")] = None,
    packed: Annotated[bool, typer.Option(help="Write scores packed (anomaly_score v2).")] = False,
    plot_path: Annotated[Path | None, typer.Option("--plot", help="Write a PNG: readings/s and RSS vs devices.")] = None,
    buckets: Annotated[str, typer.Option(help="Bytewax state layouts to compare, comma-separated: 0 is one key "
                                         "per device, N is N buckets ([runtime] state_buckets).")] = "1024",
    live_rate: Annotated[float | None, typer.Option(
        help="Offer this many readings/s in the latency phase instead of half the measured maximum (to compare "
             "builds at one load).")] = None,
    live_max: Annotated[bool | None, typer.Option(
        "--live-max/--no-live-max",
        help="Measure the live maximum (probes with the load generator running) and offer the latency phase half "
             "of it; --no-live-max offers half the pre-filled maximum, as before session 14. Default: on, unless "
             "--live-rate is given.")] = None,
    probe_s: Annotated[float, typer.Option(help="Seconds of live load per probe of the live maximum.",
                                           min=10.0)] = PROBE_S,
    gc_trace: Annotated[bool, typer.Option(help="Time every cyclic collection in the flow process and report them "
                                           "against the live latency (benchmarks/gc_trace; adds a full scan's "
                                           "object count after each full collection).")] = False,
    tree: Annotated[Path | None, typer.Option(help="Run the flow from this source tree (its folder and PYTHONPATH), "
                                              "to compare builds under one harness. Default: this process's.")] = None,
    send_linger_ms: Annotated[int | None, typer.Option(
        help="The live load generator's linger.ms: how many batches share a produce request, as a gateway in "
             "front of the fleet batches them (default: [kafka] linger_ms). The embedded broker's fetches slow as "
             "produce requests pile up (`eddyline bench broker`).", min=0)] = None,
) -> None:
    """Readings/s, peak RSS, state and checkpoint bytes, recovery and latency of the sensor flow per fleet size."""
    sizes = [int(x) for x in devices.split(",") if x.strip()]
    chosen = [e.strip() for e in engines.split(",") if e.strip()]
    unknown = set(chosen) - {"bytewax", "faust"}
    if unknown or not sizes or min(sizes) < 1:
        raise typer.BadParameter("use --devices N[,N...] (positive) and --engines bytewax,faust")
    layouts = [int(x) for x in buckets.split(",") if x.strip()]
    if not layouts or min(layouts) < 0:
        raise typer.BadParameter("use --buckets N[,N...] (0: one key per device)")
    if live_rate is not None and live_rate <= 0:
        raise typer.BadParameter("use --live-rate R with R > 0 readings/s, or leave it out for half the maximum")
    if tree is not None and not (tree / "streams" / "cli").is_dir():
        raise typer.BadParameter(f"--tree {tree}: not a source tree of eddyline (no streams/cli there)")
    if live_max and live_s <= 0:
        raise typer.BadParameter("--live-max needs a latency phase: give --live-s above 0, or --no-live-max")
    probing = live_max if live_max is not None else live_rate is None and live_s > 0
    run(sizes, chosen, json_path, batches, live_s, detector, packed, plot_path, layouts, live_rate, gc_trace,
        tree.resolve() if tree else None, probe_s if probing else 0.0, send_linger_ms)


if __name__ == "__main__":
    typer.run(command)
