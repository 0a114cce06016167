"""Throughput of the sensor anomaly flow against its floor and a per-reading baseline, in one run.

- ``readings_per_s``: the whole flow (consume, decode, score, emit scores and alerts to Kafka) running
  as ``eddyline run anomaly`` in its own process over a pre-filled topic, counted from its first output
  to its last (process start-up and JIT compilation excluded);
- ``raw_consume_per_s``: the floor: the same messages consumed with confluent-kafka and decoded, nothing else;
- ``river_hst_per_s``: river's HalfSpaceTrees scoring and learning one reading at a time, no Kafka.
"""

from __future__ import annotations

import itertools
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import typer
from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

from connectors.broker import EmbeddedBroker
from connectors.kafka import EventProducer, KafkaSettings, consumer_config, create_topics
from schemas import SENSOR_BATCH, AvroSerde
from streams.producers.simulator import SensorSimulator

TOPIC = "sensor.readings"


def _assigned(settings: KafkaSettings, topic: str) -> Consumer:
    consumer = Consumer(consumer_config(settings, "eddyline-bench"))
    meta = consumer.list_topics(settings.topic(topic), timeout=10).topics[settings.topic(topic)]
    consumer.assign([TopicPartition(settings.topic(topic), p, OFFSET_BEGINNING) for p in meta.partitions])
    return consumer


def _raw_consume(settings: KafkaSettings, messages: int, per_message: int) -> float:
    serde = AvroSerde()
    consumer = _assigned(settings, TOPIC)
    seen = 0
    start = None
    try:
        while seen < messages:
            for msg in consumer.consume(1000, 1.0):
                if msg.error() is None:
                    start = start or time.perf_counter()
                    serde.decode(msg.value(), SENSOR_BATCH)
                    seen += 1
        return seen * per_message / (time.perf_counter() - start)
    finally:
        consumer.close()


def time_flow(settings: KafkaSettings, argv: list[str], messages: int, per_message: int, work: Path,
              partitions: int | None = None) -> float:
    """Readings per second between the first and last score event of ``python -m *argv`` over a pre-filled topic.

    The first output's batch was processed before the clock starts, so it is not counted.
    """
    env = {**os.environ, "EDDYLINE_KAFKA_BOOTSTRAP_SERVERS": settings.bootstrap_servers,
           "EDDYLINE_KAFKA_NAMESPACE": settings.namespace,
           "EDDYLINE_KAFKA_SESSION_TIMEOUT_MS": str(settings.session_timeout_ms),
           "EDDYLINE_RUNTIME_EPOCH_INTERVAL_S": "2"}
    if partitions is not None:
        env["EDDYLINE_KAFKA_PARTITIONS"] = str(partitions)
    log = work / "flow.log"
    proc = subprocess.Popen([sys.executable, "-m", *argv, "--state-dir", str(work / "state")], env=env,
                            stdout=log.open("wb"), stderr=subprocess.STDOUT, start_new_session=True)
    try:
        create_topics(settings, ["scores.anomaly"], partitions=partitions)
        consumer = _assigned(settings, "scores.anomaly")
        seen, first, last = 0, None, None
        deadline = time.monotonic() + 600
        while seen < messages and time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"{argv[0]} exited with {proc.returncode}; see {log}")
            for msg in consumer.consume(1000, 0.5):  # counted, not decoded: the watcher must stay cheap
                if msg.error() is None:
                    first = first or time.perf_counter()
                    last = time.perf_counter()
                    seen += 1
        consumer.close()
        if seen < messages or first is None or last is None or last <= first:
            raise RuntimeError(f"{argv[0]} scored {seen} of {messages} messages in time; see {log}")
        return (seen - 1) * per_message / (last - first)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)


def _river(records: list[dict], limit: int) -> float:
    from models.anomaly import make_detector

    series = [np.asarray(s["values"]) for r in records for s in r["series"]]
    stamps = [np.asarray(s["timestamps"]) for r in records for s in r["series"]]
    detectors: dict[int, Any] = {}
    done = 0
    start = time.perf_counter()
    for i, (v, t) in enumerate(zip(series, stamps)):
        det = detectors.setdefault(i % 30, make_detector("hst"))
        det.score_learn(v, t)
        done += len(v)
        if done >= limit:
            break
    return done / (time.perf_counter() - start)


def run(messages: int = 4000, json_path: Path | None = None, river_readings: int = 60_000) -> dict[str, Any]:
    from rich.console import Console
    from rich.table import Table

    console = Console(stderr=True)
    sim = SensorSimulator(devices=30, readings_per_message=50)
    records = list(itertools.islice(sim, messages))
    per_message = sim.readings_per_batch
    work = Path(tempfile.mkdtemp(prefix="eddyline-bench-"))
    with EmbeddedBroker(log_path=work / "broker.log") as broker:
        settings = KafkaSettings(bootstrap_servers=broker.bootstrap, namespace="bench.")
        create_topics(settings, [TOPIC])
        status = f"pre-filling {messages} messages ({messages * per_message:,} readings)"
        with console.status(status), EventProducer(settings) as producer:
            for rec in records:
                producer.produce(TOPIC, SENSOR_BATCH, rec, key=rec["device_id"])
        with console.status("raw consume + decode"):
            raw = _raw_consume(settings, messages, per_message)
        with console.status("the whole flow (eddyline run anomaly)"):
            flow = time_flow(settings, ["streams.cli", "run", "anomaly"], messages, per_message, work)
    with console.status(f"river HalfSpaceTrees, {river_readings:,} readings one at a time"):
        river = _river(records, river_readings)
    result = {
        "readings_per_s": round(flow),
        "raw_consume_per_s": round(raw),
        "river_hst_per_s": round(river),
        "flow_vs_raw": round(flow / raw, 3),
        "flow_vs_river": round(flow / river, 1),
        "messages": messages,
        "readings_per_message": per_message,
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.python_implementation()} {platform.python_version()}",
    }
    table = Table(title="sensor flow throughput (readings/s)")
    for col in ("measure", "readings/s"):
        table.add_column(col)
    table.add_row("whole flow (bytewax, 1 worker)", f"{flow:,.0f}")
    table.add_row("raw consume + decode", f"{raw:,.0f}")
    table.add_row("river HalfSpaceTrees loop", f"{river:,.0f}")
    console.print(table)
    console.print(f"flow/raw = {flow / raw:.2f} (target ≥ 0.5), flow/river = {flow / river:.0f}x (target ≥ 10x)")
    if json_path is not None:
        json_path.write_text(json.dumps(result, indent=2) + "\n")
    return result


def command(
    json_path: Annotated[Path | None, typer.Option("--json", help="Write the results here.")] = None,
    messages: Annotated[int, typer.Option(help="Messages to pre-fill (150 readings each).")] = 4000,
) -> None:
    """Throughput of the whole sensor flow vs. raw consume+decode vs. a per-reading river loop."""
    run(messages=messages, json_path=json_path)
