"""Edge agent benchmark: what the agent costs a device, how fast it drains a backlog, what an outage loses.

Everything runs the real agent (``python -m edge_agent run``) as its own process against the embedded
broker, and measures that process from outside through /proc:

- ``rss_mb``: resident memory of the agent after a minute-like stretch at 1,000 readings/s (the largest RSS
  seen across both load phases, sensors only; health events published every 5 s);
- ``rss_mb_onnx`` / ``cpu_percent_onnx_1k``: the same at 1,000 readings/s with on-device scoring by the
  shipped int8 ONNX model (``[edge.inference] enabled``): what ONNX Runtime and numpy add;
- ``cpu_percent_1k`` / ``cpu_percent_10k``: CPU time over wall time, in percent of one core, while the
  simulated source produces 1,000 and 10,000 readings/s (the simulation's own cost included);
- ``drain_per_s``: readings per second sent from a backlog of ``backlog`` readings left on disk by an outage,
  from the first acknowledgement to an empty buffer, while the agent keeps sampling at 1,000/s;
  ``raw_produce_per_s`` is the baseline in the same run: the same payloads produced from memory by a bare
  confluent-kafka producer;
- ``lost`` / ``duplicates``: across a real broker outage (stopped, restarted empty on the same port), readings
  missing after dedup by sequence number, and readings that arrived more than once before dedup (what the
  platform's dedup removes);
- ``model_swap_gap_ms``: the longest pause in sampling while signed models are swapped in (``swaps`` rollouts
  to the running agent, each verified, loaded and swapped), seen as the longest gap between consecutive
  readings of a source read every 10 ms (``model_swap_gaps_ms``: each swap's); ``model_swap_gap_baseline_ms``
  is the same gap outside the swaps, in the same run.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Annotated, Any

import typer

from connectors.broker import EmbeddedBroker, free_port
from connectors.kafka import KafkaSettings, create_topics, read_topic
from edge_agent.health import process_cpu_seconds, process_rss_bytes
from edge_agent.sources.simulated import simulated_value
from schemas import SENSOR_BATCH, AvroSerde

REPO = Path(__file__).resolve().parents[1]
DEVICE = "bench-pi"


def _config(tmp: Path, bootstrap: str, namespace: str, rate: int, sensors: int = 10, onnx: bool = False) -> Path:
    path = tmp / f"edge-{rate}.toml"
    path.write_text(
        f"""[kafka]
bootstrap_servers = "{bootstrap}"
namespace = "{namespace}"
extra = {{ "reconnect.backoff.max.ms" = "500" }}
[edge]
device_id = "{DEVICE}"
buffer_path = "{tmp / "buffer.sqlite"}"
send_timeout_s = 3.0
heartbeat_interval_s = 5.0
[[edge.sources]]
kind = "simulated"
rate = {rate}
sensors = {sensors}
interval_s = 0.1
"""
        + ("[edge.inference]\nenabled = true\n" if onnx else "")
    )
    return path


def start_agent(config: Path, log: Path, flush_timeout_s: int = 30) -> subprocess.Popen[bytes]:
    """``python -m edge_agent run`` from this checkout as a process of its own, its log appended to ``log``."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.Popen(
        [sys.executable, "-m", "edge_agent", "run", "--config", str(config), "--flush-timeout", str(flush_timeout_s)],
        stdout=subprocess.DEVNULL,
        stderr=log.open("ab"),
        env=env,
        cwd=REPO,
    )


def _stop(agent: subprocess.Popen[bytes]) -> None:
    agent.send_signal(signal.SIGTERM)
    try:
        agent.wait(60)
    except subprocess.TimeoutExpired:
        agent.kill()
        agent.wait()


def buffer_state(path: Path) -> tuple[int, int, int]:
    """(batches, readings, next seq) in the agent's buffer, read alongside it; zeros until the agent made it."""
    if not path.exists():
        return 0, 0, 0
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)
    try:
        depth, readings = db.execute("SELECT COUNT(*), COALESCE(SUM(readings), 0) FROM batches").fetchone()
        row = db.execute("SELECT value FROM meta WHERE key='next_seq'").fetchone()
        return depth, readings, int(row[0]) if row else 0
    except sqlite3.OperationalError:
        return 0, 0, 0
    finally:
        db.close()


def _wait(cond: Any, timeout: float, what: str, agent: subprocess.Popen[bytes], log: Path, every: float = 0.05) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if agent.poll() is not None:
            raise RuntimeError(f"agent exited {agent.returncode} waiting for {what}:\n{log.read_text()[-2000:]}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}:\n{log.read_text()[-2000:]}")
        time.sleep(every)


def _load(tmp: Path, ks: KafkaSettings, rate: int, warmup: float, window: float,
          onnx: bool = False) -> tuple[float, float]:
    """(cpu percent of one core, peak RSS in MB) of the agent at ``rate`` readings per second (scoring each
    reading with the shipped int8 ONNX model on the device with ``onnx``)."""
    (tmp / "buffer.sqlite").unlink(missing_ok=True)
    log = tmp / f"agent-{rate}{'-onnx' if onnx else ''}.log"
    agent = start_agent(_config(tmp, ks.bootstrap_servers, ks.namespace, rate, onnx=onnx), log)
    try:
        _wait(lambda: buffer_state(tmp / "buffer.sqlite")[2] > 0, 30, "the first batch", agent, log)
        time.sleep(warmup)
        cpu0, t0, rss = process_cpu_seconds(agent.pid), time.monotonic(), 0
        while time.monotonic() - t0 < window:
            time.sleep(0.5)
            rss = max(rss, process_rss_bytes(agent.pid))
        cpu = 100.0 * (process_cpu_seconds(agent.pid) - cpu0) / (time.monotonic() - t0)
        depth = buffer_state(tmp / "buffer.sqlite")[0]
        if depth > 20:
            raise RuntimeError(f"the agent fell behind at {rate} readings/s: {depth} batches waiting")
    finally:
        _stop(agent)
    return cpu, rss / 2**20


def _drain(tmp: Path, ks: KafkaSettings, backlog: int) -> tuple[float, float]:
    """Readings per second drained from a backlog left by an outage, and the raw client's rate for the same bytes.

    The baseline produces the same payloads from memory with the platform's producer settings and one
    flush: the floor cost of moving these bytes through confluent-kafka to this broker, no disk, no
    per-batch bookkeeping.
    """
    from edge_agent.batching import BatchEncoder
    from edge_agent.buffer import DiskBuffer
    from edge_agent.sources import Chunk

    path = tmp / "buffer.sqlite"
    path.unlink(missing_ok=True)
    # What 10 sensors at 1,000 readings/s leave behind: batches of 1,000 readings (100 per sensor).
    buf = DiskBuffer(path, DEVICE, min_free_bytes=0, sync="normal")
    enc = BatchEncoder(DEVICE, "bench", ks.topic("sensor.readings"))
    t = time.time_ns() // 1_000_000 - backlog
    payloads = []
    for _ in range(backlog // 1000):
        series = [
            Chunk(
                f"sim.s{s}", "celsius", list(range(t, t + 100)), [simulated_value(0, s, k) for k in range(t, t + 100)]
            )
            for s in range(10)
        ]
        seq = buf.next_seq
        payloads.append(enc.encode(seq, series))
        buf.append(seq, payloads[-1], 1000, t + 99)
        t += 100
    buf.close()
    raw = _raw_produce(ks, payloads)
    log = tmp / "agent-drain.log"
    agent = start_agent(_config(tmp, ks.bootstrap_servers, ks.namespace, 1000), log)
    try:
        start_depth = buffer_state(path)[0]
        _wait(lambda: buffer_state(path)[0] < start_depth, 60, "the drain to start", agent, log, every=0.005)
        t0, left0 = time.monotonic(), buffer_state(path)[1]
        _wait(lambda: buffer_state(path)[0] <= 1, 300, "the backlog to drain", agent, log, every=0.005)
        elapsed = time.monotonic() - t0
    finally:
        _stop(agent)
    return left0 / elapsed, raw


def _raw_produce(ks: KafkaSettings, payloads: list[bytes]) -> float:
    from confluent_kafka import Producer

    from connectors.kafka import producer_config

    conf = {k: v for k, v in producer_config(ks).items() if k != "logger"}
    producer = Producer(conf)
    topic, key = ks.topic("sensor.raw-baseline"), DEVICE.encode()
    first_ack: list[float] = []

    def acked(err: object, msg: object) -> None:
        if err is None and not first_ack:
            first_ack.append(time.monotonic())

    # Measured like the drain: from the first acknowledgement to the last, connection set-up left out.
    for p in payloads:
        while True:
            try:
                producer.produce(topic, p, key, on_delivery=acked)
                break
            except BufferError:
                producer.poll(0.05)
    if producer.flush(120):
        raise RuntimeError("the raw baseline did not finish")
    return 1000 * (len(payloads) - 1) / (time.monotonic() - first_ack[0])


def _outage(tmp: Path, ks: KafkaSettings, broker: EmbeddedBroker, seconds: float) -> tuple[int, int]:
    """Readings lost (after dedup) and duplicated (before dedup) across a broker outage at 1,000 readings/s.

    ``broker`` must have a fixed port: it is stopped and started again on it, empty, like a restarted Tansu.
    """
    path = tmp / "buffer.sqlite"
    path.unlink(missing_ok=True)
    log = tmp / "agent-outage.log"
    ns = KafkaSettings(bootstrap_servers=ks.bootstrap_servers, namespace="outage.")
    create_topics(ns, ["sensor.readings"])
    agent = start_agent(_config(tmp, ns.bootstrap_servers, ns.namespace, 1000), log)
    try:
        _wait(lambda: buffer_state(path)[2] - buffer_state(path)[0] >= 5, 30, "first deliveries", agent, log)
        agent.send_signal(signal.SIGSTOP)  # freeze: what the broker holds now is exactly what we read
        before = read_topic(ns, "sensor.readings", idle=2.0)
        broker.stop()
        agent.send_signal(signal.SIGCONT)
        time.sleep(seconds)
        broker.start()
        create_topics(ns, ["sensor.readings"])
        _wait(lambda: buffer_state(path)[0] == 0, 120, "the backlog to drain", agent, log)
    finally:
        _stop(agent)
    after = read_topic(ns, "sensor.readings", idle=2.0)
    serde = AvroSerde()
    batches = [serde.decode(m.value(), SENSOR_BATCH) for m in before + after]
    seen: dict[int, dict[str, Any]] = {}
    duplicates = 0
    for b in batches:
        if b["seq"] in seen:
            duplicates += sum(len(s["values"]) for s in b["series"])
        seen[b["seq"]] = b
    lost = 0
    # Within what arrived, each sensor's readings must follow at its sampling period (10 ms at 100/s).
    per_sensor: dict[str, list[int]] = {}
    for seq in sorted(seen):
        for s in seen[seq]["series"]:
            per_sensor.setdefault(s["sensor"], []).extend(s["timestamps"])
    for ts in per_sensor.values():
        steps = Counter(b - a for a, b in zip(ts, ts[1:]))
        lost += sum(n * (step // 10 - 1) for step, n in steps.items() if step > 10)
    gaps = max(seen) + 1 - len(seen)
    if gaps and not lost:
        raise RuntimeError(f"{gaps} sequence numbers missing but no reading gap found: the check is broken")
    return lost, duplicates


def _swap_config(tmp: Path, ks: KafkaSettings, public_key: Path) -> Path:
    path = tmp / "edge-swap.toml"
    base = _config(tmp, ks.bootstrap_servers, ks.namespace, 1_000).read_text()
    path.write_text(
        base.replace("heartbeat_interval_s = 5.0", "heartbeat_interval_s = 0.5\ndevice_class = \"bench\"")
        + f"""[[edge.sources]]
kind = "proc"
interval_s = 0.01
[edge.inference]
enabled = true
[edge.models]
enabled = true
public_key = "{public_key}"
"""
    )
    return path


def _model_swaps(tmp: Path, ks: KafkaSettings, swaps: int) -> tuple[list[float], float]:
    """(longest sampling gap during each swap, longest outside them), in ms, over ``swaps`` signed-model rollouts."""
    from connectors.kafka import EventProducer
    from edge_agent.inference.model import build_model
    from schemas.catalog import DEVICE_HEALTH, EDGE_MODEL, EDGE_ROLLOUT
    from schemas.signing import generate_keypair, sign_model, sign_rollout
    from streams.flows.rollout import RolloutController, RolloutPolicy

    (tmp / "buffer.sqlite").unlink(missing_ok=True)
    ns = KafkaSettings(bootstrap_servers=ks.bootstrap_servers, namespace="bench-swap.")
    create_topics(ns, ["sensor.readings", "device.health", "edge.models", "edge.rollouts"])
    generate_keypair(tmp / "k.pem", tmp / "k.pub.pem")
    models = [build_model(tmp / f"m{w}.onnx", window=w).read_bytes() for w in (12, 16)]
    log = tmp / "agent-swap.log"
    agent = start_agent(_swap_config(tmp, ns, tmp / "k.pub.pem"), log)
    serde = AvroSerde()
    windows: list[tuple[int, int]] = []
    previous = None
    try:
        _wait(lambda: buffer_state(tmp / "buffer.sqlite")[2] > 0, 30, "the first batch", agent, log)
        time.sleep(2.0)
        with EventProducer(ns) as out:
            for i in range(swaps):
                version = f"v{i + 1}"
                record = sign_model(
                    {"event_id": version, "event_time": int(time.time() * 1000), "producer": "bench", "name": "anomaly",
                     "version": version, "device_class": "bench", "format": "onnx", "model": models[i % 2]},
                    (tmp / "k.pem").read_bytes(),
                )
                out.produce("edge.models", EDGE_MODEL, record, key=f"bench/{version}")
                start_ms = int(time.time() * 1000)
                rollout = sign_rollout(RolloutController.start(RolloutPolicy(), "bench", version, previous, [DEVICE],
                                                               start_ms, "bench", 100), (tmp / "k.pem").read_bytes())
                out.produce("edge.rollouts", EDGE_ROLLOUT, rollout, key="bench")
                out.flush()
                previous = version

                def running(v: str = version) -> bool:
                    msgs = read_topic(ns, "device.health", idle=0.3, timeout=10)
                    return any(serde.decode(m.value(), DEVICE_HEALTH)["model_version"] == v for m in msgs)

                _wait(running, 60, f"the agent to run {version}", agent, log, every=0.2)
                windows.append((start_ms, int(time.time() * 1000)))
                time.sleep(1.0)
    finally:
        _stop(agent)
    stamps = sorted(
        ts
        for m in read_topic(ns, "sensor.readings", idle=2.0)
        for s in serde.decode(m.value(), SENSOR_BATCH)["series"]
        if s["sensor"] == "proc.load1"
        for ts in s["timestamps"]
    )
    during, outside = [0] * len(windows), 0
    for a, b in zip(stamps, stamps[1:]):
        hit = [i for i, (lo, hi) in enumerate(windows) if lo <= b and a <= hi]
        for i in hit:
            during[i] = max(during[i], b - a)
        if not hit and stamps[0] + 3000 < a < windows[-1][1]:  # steady sampling, before and between swaps
            outside = max(outside, b - a)
    return [float(g) for g in during], float(outside)


def run(
    json_path: Path | None = None, window: float = 10.0, backlog: int = 5_000_000, outage_s: float = 5.0, swaps: int = 6
) -> dict:
    port = free_port()
    broker = EmbeddedBroker(port=port).start()
    try:
        with tempfile.TemporaryDirectory(prefix="eddyline-bench-edge-") as d:
            tmp = Path(d)
            ks = KafkaSettings(bootstrap_servers=broker.bootstrap, namespace="bench.")
            create_topics(ks, ["sensor.readings", "device.health"])
            cpu_1k, rss_1k = _load(tmp, ks, 1_000, warmup=3.0, window=window)
            cpu_10k, rss_10k = _load(tmp, ks, 10_000, warmup=3.0, window=window)
            cpu_onnx, rss_onnx = _load(tmp, ks, 1_000, warmup=3.0, window=window, onnx=True)
            create_topics(ks, ["sensor.raw-baseline"])
            drain, raw = _drain(tmp, ks, backlog)
            lost, dups = _outage(tmp, ks, broker, outage_s)
            swap_gaps, swap_baseline = _model_swaps(tmp, ks, swaps)
    finally:
        broker.stop()
    result = {
        "rss_mb": round(max(rss_1k, rss_10k), 1),
        "rss_mb_1k": round(rss_1k, 1),
        "cpu_percent_1k": round(cpu_1k, 2),
        "cpu_percent_10k": round(cpu_10k, 2),
        "rss_mb_onnx": round(rss_onnx, 1),
        "cpu_percent_onnx_1k": round(cpu_onnx, 2),
        "drain_per_s": round(drain),
        "raw_produce_per_s": round(raw),
        "lost": lost,
        "duplicates": dups,
        "backlog_readings": backlog,
        "outage_s": outage_s,
        "window_s": window,
        "model_swap_gap_ms": max(swap_gaps),
        "model_swap_gap_median_ms": sorted(swap_gaps)[len(swap_gaps) // 2],
        "model_swap_gaps_ms": swap_gaps,
        "model_swap_gap_baseline_ms": swap_baseline,
        "model_swaps": swaps,
    }
    if json_path:
        Path(json_path).write_text(json.dumps(result, indent=2) + "\n")
    return result


def command(
    json_path: Annotated[Path | None, typer.Option("--json", help="write the results as JSON")] = None,
    window: Annotated[float, typer.Option("--window", min=2.0, help="seconds measured at each load")] = 10.0,
    backlog: Annotated[
        int, typer.Option("--backlog", min=10_000, help="readings on disk before the drain")
    ] = 5_000_000,
    outage: Annotated[float, typer.Option("--outage", min=1.0, help="seconds the broker is down")] = 5.0,
    swaps: Annotated[int, typer.Option("--swaps", min=1, help="signed models swapped into the running agent")] = 6,
) -> None:
    """The edge agent's memory and CPU at 1k and 10k readings/s, its drain rate, loss and duplicates, model swap gap."""
    res = run(json_path, window, backlog, outage, swaps)
    for k, v in res.items():
        print(f"{k:>16}  {v}")
    if res["lost"]:
        raise typer.Exit(1)


if __name__ == "__main__":
    typer.run(command)
