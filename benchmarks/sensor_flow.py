"""Throughput of the sensor anomaly flow against its floor and a per-reading baseline, in one run.

- ``readings_per_s``: the whole flow (consume, decode, score, emit scores and alerts to Kafka) running
  as ``eddyline run anomaly`` in its own process over a pre-filled topic, its outputs counted per fetch at
  a watcher that fetches with a 10 ms wait (``benchmarks.timing``): the readings whose outputs arrived after
  the first fetch that brought any, over the time from that fetch to the last (process start-up, JIT
  compilation and the first burst's work come before the clock starts); its CPU seconds over the same span;
- ``raw_consume_per_s``: the floor: the same messages consumed with confluent-kafka and decoded with the
  flow's own decoder (``AvroSerde(compiled=True)``, readings as numpy arrays as the flow asks for them),
  nothing else, the mean of a run before the flow and one after it;
- ``river_hst_per_s``: river's HalfSpaceTrees (``hst-river``, river's own code) scoring and learning one reading
  at a time over the same readings, one model per device and sensor as the flow keeps them, no Kafka.
"""

from __future__ import annotations

import itertools
import os
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

from benchmarks.report import machine, write_json
from benchmarks.timing import (
    FETCH_WAIT_MS,
    MeasurementError,
    Throughput,
    fetch_rate,
    group_cpu_seconds,
    watch_fetches,
)
from connectors.broker import EmbeddedBroker
from connectors.kafka import EventProducer, KafkaSettings, consumer_config, create_topics
from schemas import SENSOR_BATCH, AvroSerde
from streams.producers.simulator import SensorSimulator

TOPIC = "sensor.readings"


def _assigned(settings: KafkaSettings, topic: str, **overrides: Any) -> Consumer:
    consumer = Consumer(consumer_config(settings, "eddyline-bench", **overrides))
    meta = consumer.list_topics(settings.topic(topic), timeout=10).topics[settings.topic(topic)]
    consumer.assign([TopicPartition(settings.topic(topic), p, OFFSET_BEGINNING) for p in meta.partitions])
    return consumer


def _raw_consume(settings: KafkaSettings, messages: int, per_message: int) -> Throughput:
    serde = AvroSerde(compiled=True)  # the flow's own decoder: a slower floor would flatter the ratio
    consumer = _assigned(settings, TOPIC)
    seen = 0
    start = cpu_start = None
    try:
        while seen < messages:
            for msg in consumer.consume(1000, 1.0):
                if msg.error() is None:
                    if start is None:  # load the decoder's compiled kernels (numba) outside the timing, as the
                        serde.decode(msg.value(), SENSOR_BATCH, arrays=True)  # flow does before its first output
                        start, cpu_start = time.perf_counter(), time.process_time()
                    serde.decode(msg.value(), SENSOR_BATCH, arrays=True)  # as the flow decodes: numpy arrays
                    seen += 1
        readings = seen * per_message
        return Throughput(readings / (time.perf_counter() - start),
                          (time.process_time() - cpu_start) / readings * 1e6)
    finally:
        consumer.close()


def time_process(settings: KafkaSettings, cmd: list[str], env: dict[str, str], messages: int, per_message: int,
                 log: Path, output_topic: str = "scores.anomaly") -> Throughput:
    """How fast ``cmd`` (a flow over a pre-filled topic) goes, from its outputs counted per watcher fetch.

    Readings whose outputs arrived after the first fetch that brought any, over the time from that fetch
    to the last (``benchmarks.timing``): start-up, group joins, JIT compilation and the first burst's work
    fall before the clock starts, and a flow that writes the whole topic in three bursts is still timed.

    Parameters
    ----------
    cmd, env
        The process to measure and its whole environment; it runs in its own session and is stopped after.
    messages
        Outputs to wait for: one per pre-filled input message.
    per_message
        Readings per message, to turn messages into readings.
    log
        Where the process's stdout and stderr go; errors name it.
    output_topic
        Where the process writes one output per input message.
    """
    create_topics(settings, [output_topic])
    proc = subprocess.Popen(cmd, env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT, start_new_session=True)
    try:
        return _fetch_timed(settings, proc, output_topic, messages, per_message, log)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)


def _alive(proc: subprocess.Popen, log: Path) -> None:
    if proc.poll() is not None:
        raise MeasurementError(f"the measured process exited with {proc.returncode}; see {log}")


def _fetch_timed(settings: KafkaSettings, proc: subprocess.Popen, topic: str, messages: int, per_message: int,
                 log: Path) -> Throughput:
    watcher = _assigned(settings, topic, **{"fetch.wait.max.ms": FETCH_WAIT_MS})
    try:
        fetches = watch_fetches(watcher, messages, lambda: _alive(proc, log), lambda: group_cpu_seconds(proc.pid),
                                600, log)
    finally:
        watcher.close()
    return fetch_rate(fetches, per_message)


def time_flow(settings: KafkaSettings, argv: list[str], messages: int, per_message: int, work: Path,
              partitions: int | None = None, env: dict[str, str] | None = None) -> Throughput:
    """How fast ``python -m *argv`` (an eddyline flow, epoch 2 s) goes over a pre-filled topic.

    Parameters
    ----------
    env
        Extra environment for the flow, e.g. ``{"EDDYLINE_RUNTIME_DETECTOR": "gauss"}``.
    """
    flow_env = {**os.environ, "EDDYLINE_KAFKA_BOOTSTRAP_SERVERS": settings.bootstrap_servers,
                "EDDYLINE_KAFKA_NAMESPACE": settings.namespace,
                "EDDYLINE_KAFKA_SESSION_TIMEOUT_MS": str(settings.session_timeout_ms),
                "EDDYLINE_RUNTIME_EPOCH_INTERVAL_S": "2", **(env or {})}
    if partitions is not None:
        flow_env["EDDYLINE_KAFKA_PARTITIONS"] = str(partitions)
    cmd = [sys.executable, "-m", *argv, "--state-dir", str(work / "state")]
    return time_process(settings, cmd, flow_env, messages, per_message, work / "flow.log")


def river_per_series(records: list[dict]) -> Throughput:
    """river's HalfSpaceTrees (``hst-river``, river's own code) over every reading of ``records``, one model per device and sensor."""
    from models.anomaly import make_detector

    detectors: dict[tuple[str, str], Any] = {}
    series = [(r["device_id"], s["sensor"], np.asarray(s["values"]), np.asarray(s["timestamps"]))
              for r in records for s in r["series"]]
    done = 0
    start, cpu_start = time.perf_counter(), time.process_time()
    for device, sensor, values, stamps in series:
        det = detectors.get((device, sensor))
        if det is None:
            det = detectors[(device, sensor)] = make_detector("hst-river")
        det.score_learn(values, stamps)
        done += len(values)
    return Throughput(done / (time.perf_counter() - start), (time.process_time() - cpu_start) / done * 1e6)


def _mean(values: list[float | None]) -> float | None:
    return None if None in values else sum(values) / len(values)  # type: ignore[arg-type]


def rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


def ratio(num: float | None, den: float | None) -> float | None:
    """``num / den`` to 3 places; None when either is unknown."""
    return None if num is None or den is None else round(num / den, 3)


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}"


def prefilled(broker: EmbeddedBroker, namespace: str, records: list[dict], console: Any,
              partitions: int | None = None) -> KafkaSettings:
    """Settings for ``namespace`` on ``broker`` whose ``sensor.readings`` holds ``records``, produced by device key."""
    settings = KafkaSettings(bootstrap_servers=broker.bootstrap, namespace=namespace, session_timeout_ms=6000,
                             **({"partitions": partitions} if partitions else {}))
    create_topics(settings, [TOPIC])
    readings = sum(len(s["values"]) for r in records for s in r["series"])
    with console.status(f"{namespace} pre-filling {len(records)} messages ({readings:,} readings)"), \
            EventProducer(settings) as producer:
        for rec in records:
            producer.produce(TOPIC, SENSOR_BATCH, rec, key=rec["device_id"])
    return settings


def run(messages: int = 10_000, devices: int = 30, json_path: Path | None = None) -> dict[str, Any]:
    """The flow, its raw floor (before and after it) and river over the same readings, in one run.

    Parameters
    ----------
    messages
        Sensor batches to pre-fill (150 readings each); enough for several output bursts.
    devices
        Simulated devices, 3 sensors each.
    json_path
        Where to write the results, if anywhere.
    """
    from rich.console import Console
    from rich.table import Table

    console = Console(stderr=True)
    sim = SensorSimulator(devices=devices, readings_per_message=50)
    records = list(itertools.islice(sim, messages))
    per_message = sim.readings_per_batch
    work = Path(tempfile.mkdtemp(prefix="eddyline-bench-"))
    with EmbeddedBroker(log_path=work / "broker.log") as broker:
        settings = prefilled(broker, "bench.", records, console)
        with console.status("raw consume + decode"):
            raws = [_raw_consume(settings, messages, per_message)]
        with console.status("the whole flow (eddyline run anomaly)"):
            flow = time_flow(settings, ["streams.cli", "run", "anomaly"], messages, per_message, work)
        with console.status("raw consume + decode, again"):  # before and after: load from other work drifts
            raws.append(_raw_consume(settings, messages, per_message))
    raw = Throughput(sum(r.readings_per_s for r in raws) / 2, _mean([r.cpu_s_per_m_readings for r in raws]))
    with console.status(f"river HalfSpaceTrees, {messages * per_message:,} readings, one model per series"):
        river = river_per_series(records)
    result = {
        "readings_per_s": round(flow.readings_per_s),
        "raw_consume_per_s": round(raw.readings_per_s),
        "raw_consume_runs_per_s": [round(r.readings_per_s) for r in raws],
        "river_hst_per_s": round(river.readings_per_s),
        "flow_timed": {"fetches": flow.fetches, "span_s": rounded(flow.span_s)},
        "flow_vs_raw": round(flow.readings_per_s / raw.readings_per_s, 3),
        "flow_vs_river": round(flow.readings_per_s / river.readings_per_s, 1),
        "cpu_s_per_m_readings": {"flow": rounded(flow.cpu_s_per_m_readings), "raw": rounded(raw.cpu_s_per_m_readings),
                                 "river": rounded(river.cpu_s_per_m_readings)},
        "flow_vs_raw_by_cpu": ratio(raw.cpu_s_per_m_readings, flow.cpu_s_per_m_readings),
        "flow_vs_river_by_cpu": ratio(river.cpu_s_per_m_readings, flow.cpu_s_per_m_readings),
        "messages": messages,
        "devices": devices,
        "readings_per_message": per_message,
        "method": "wall: outputs counted per watcher fetch (fetch wait 10 ms), readings after the first fetch "
                  "over the time from it to the last; cpu: the process's CPU seconds over the same fetches per "
                  "million readings; raw: mean of a run "
                  "before and after the flow; river: every reading, one model per series",
        "machine": machine(),
    }
    table = Table(title="sensor flow throughput")
    for col in ("measure", "readings/s (wall)", "CPU s per 1M readings"):
        table.add_column(col)
    table.add_row("whole flow (bytewax, 1 worker)", f"{flow.readings_per_s:,.0f}", _fmt(flow.cpu_s_per_m_readings))
    table.add_row("raw consume + decode (mean of before, after)",
                  f"{raw.readings_per_s:,.0f} ({raws[0].readings_per_s:,.0f}, {raws[1].readings_per_s:,.0f})",
                  _fmt(raw.cpu_s_per_m_readings))
    table.add_row("river HalfSpaceTrees, one model per series", f"{river.readings_per_s:,.0f}",
                  _fmt(river.cpu_s_per_m_readings))
    console.print(table)
    console.print(f"flow/raw = {result['flow_vs_raw']:.2f} wall, {result['flow_vs_raw_by_cpu']} by CPU "
                  f"(target ≥ 0.5); flow/river = {result['flow_vs_river']:.0f}x wall, "
                  f"{result['flow_vs_river_by_cpu']}x by CPU (target ≥ 10x)")
    write_json(json_path, result)
    return result


def command(
    json_path: Annotated[Path | None, typer.Option("--json", help="Write the results here.")] = None,
    messages: Annotated[int, typer.Option(help="Messages to pre-fill (150 readings each).")] = 10_000,
    devices: Annotated[int, typer.Option(help="Simulated devices (3 sensors each).")] = 30,
) -> None:
    """Throughput of the whole sensor flow vs. raw consume+decode vs. river HalfSpaceTrees per series."""
    if messages < 10 or devices < 1:
        raise typer.BadParameter("use --messages 10 or more and --devices 1 or more")
    try:
        run(messages=messages, devices=devices, json_path=json_path)
    except MeasurementError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None


if __name__ == "__main__":
    typer.run(command)
