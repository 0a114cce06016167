"""The sensor flow's path without Kafka or Bytewax, with fastavro and with the compiled Avro codec, in one run.

Each round decodes the same pre-encoded ``sensor_batch`` messages through ``FlowOutput`` (as both engines
do), scores them with fresh ``SensorAnomalyProcessor``s, encodes every Kafka-bound emit and feeds the metrics
sink, timing each stage by this process's CPU time. Rounds alternate the two codecs (``AvroSerde(compiled=
False)`` and ``compiled=True``), so load from other work falls on both; the output bytes of the two must be
identical, or the run is an error. The digest it prints covers every Kafka message (topic, key, value) and
every metrics-sink record, so the same digest from two versions of the code means the same outputs.
"""

from __future__ import annotations

import hashlib
import itertools
import time
from pathlib import Path
from typing import Annotated, Any

import typer

from benchmarks.report import machine, write_json
from connectors.kafka import KafkaSettings
from schemas import SENSOR_BATCH, AvroSerde
from streams.engines.output import FlowOutput
from streams.flows.sensor_anomaly import SOURCE_TOPIC, sensor_anomaly_flow
from streams.producers.simulator import SensorSimulator
from streams.sinks.sensor import SensorMetricsSink

STAGES = ("decode", "process", "encode", "sink")


def one_round(messages: list[tuple[str, bytes]], detector: str, compiled: bool) -> tuple[dict[str, float], str]:
    """CPU seconds per stage over ``messages`` (key, value), and a digest of every message written and every
    side-sink record."""
    spec = sensor_anomaly_flow(detector=detector)
    settings = KafkaSettings(namespace="bench.")
    out = FlowOutput(spec, settings, AvroSerde(compiled=compiled))
    sink = SensorMetricsSink(None)
    processors: dict[str, Any] = {}
    spent = dict.fromkeys(STAGES, 0.0)
    digest = hashlib.sha256()
    topic = settings.topic(SOURCE_TOPIC)
    for offset, (key, value) in enumerate(messages):
        t0 = time.process_time()
        event = out.decode(topic, key.encode(), value, 0, offset)
        t1 = time.process_time()
        processor = processors.get(event.key)
        if processor is None:
            processor = processors[event.key] = spec.make_processor(event.key)
        emits = processor.process([event])
        t2 = time.process_time()
        for e in emits:
            if out.kafka_bound(e):
                m = out.encode(e)
                digest.update(m.topic.encode() + m.key + m.value)
        t3 = time.process_time()
        sunk = [e for e in emits if not out.kafka_bound(e)]
        sink.write(sunk)
        t4 = time.process_time()
        for e in sunk:
            digest.update(repr((e.topic, e.key, e.record)).encode())
        for stage, dt in zip(STAGES, (t1 - t0, t2 - t1, t3 - t2, t4 - t3), strict=True):
            spent[stage] += dt
    return spent, digest.hexdigest()


def run(messages: int = 2000, rounds: int = 3, detector: str = "seasonal", json_path: Path | None = None) -> dict:
    """Alternate fastavro and the compiled codec ``rounds`` times each over the same messages.

    Parameters
    ----------
    messages
        Sensor batches (30 devices, 150 readings each).
    rounds
        Rounds per codec.
    detector
        The flow's detector.
    json_path
        Where to write the results, if anywhere.
    """
    sim = SensorSimulator(devices=30, readings_per_message=50)
    records = list(itertools.islice(sim, messages))
    serde = AvroSerde()
    encoded = [(r["device_id"], serde.encode(SENSOR_BATCH, r)) for r in records]
    one_round(encoded[:300], detector, True)  # compile the kernels (numba) outside the timing
    per_m = 1e6 / (messages * sim.readings_per_batch)
    runs: dict[str, list[dict[str, float]]] = {"fastavro": [], "compiled": []}
    digests = set()
    for _ in range(rounds):
        for name in runs:
            spent, digest = one_round(encoded, detector, name == "compiled")
            digests.add(digest)
            runs[name].append({k: round(v * per_m, 3) for k, v in spent.items()} | {
                "total": round(sum(spent.values()) * per_m, 3)})
    if len(digests) != 1:
        raise RuntimeError("the two codecs wrote different bytes: a bug in schemas.avro_compiled")
    mean = {name: {k: round(sum(r[k] for r in rs) / len(rs), 3) for k in (*STAGES, "total")}
            for name, rs in runs.items()}
    result = {"cpu_s_per_m_readings": mean, "runs": runs, "messages": messages, "rounds": rounds,
              "detector": detector, "same_bytes": True, "digest": digests.pop(), "machine": machine()}
    typer.echo(f"outputs digest (Kafka messages and sink records): {result['digest']}")
    for name, m in mean.items():
        typer.echo(f"{name:9s} " + "  ".join(f"{k} {v:.3f}" for k, v in m.items()) + "  (CPU s per 1M readings)")
    typer.echo(f"compiled / fastavro, whole path: {mean['compiled']['total'] / mean['fastavro']['total']:.2f}")
    write_json(json_path, result)
    return result


def command(
    json_path: Annotated[Path | None, typer.Option("--json", help="Write the results here.")] = None,
    messages: Annotated[int, typer.Option(help="Sensor batches (150 readings each).")] = 2000,
    rounds: Annotated[int, typer.Option(help="Rounds per codec, alternating.")] = 3,
    detector: Annotated[str, typer.Option(help="The flow's anomaly detector.")] = "seasonal",
) -> None:
    """CPU per reading of the sensor flow's decode, score, encode and sink path: fastavro vs the compiled codec."""
    if messages < 30 or rounds < 1:
        raise typer.BadParameter("use --messages 30 or more and --rounds 1 or more")
    run(messages, rounds, detector, json_path)


if __name__ == "__main__":
    typer.run(command)
