"""The sensor anomaly flow on each engine, in one run: Bytewax (1 process), Bytewax (2 processes), Faust.

Each engine runs the production flow (``anomaly``) in its own process(es) over its own copy of the same
pre-filled topic (4 partitions, so two processes get two each), and is timed as ``benchmarks/sensor_flow.py``
times it, by its score events counted per watcher fetch (``benchmarks.timing``): the readings scored after the
first fetch that brought any, over the time from that fetch to the last, so start-up, group joins, JIT
compilation and the first burst are left out; every reading is consumed, decoded, scored and its score written
back to Kafka. Beside each rate, the engine's CPU seconds per million readings over the same fetches (the
flow's process group: a cluster's worker processes included), as the other throughput benches report them: on
cores shared with other work the wall-clock rate follows the load, the CPU cost per reading much less.
"""

from __future__ import annotations

import itertools
import tempfile
from pathlib import Path
from typing import Annotated, Any

import typer

from benchmarks.report import machine, write_json
from benchmarks.sensor_flow import ratio, rounded, time_flow
from benchmarks.timing import MeasurementError
from connectors.broker import EmbeddedBroker
from connectors.kafka import EventProducer, KafkaSettings, create_topics
from schemas import SENSOR_BATCH
from streams.producers.simulator import SensorSimulator

TOPIC = "sensor.readings"
PARTITIONS = 4
ENGINES = {
    "bytewax_readings_per_s": ["streams.cli", "run", "anomaly"],
    "bytewax_2proc_readings_per_s": ["streams.engines.bytewax_cluster", "anomaly", "--processes", "2"],
    "faust_readings_per_s": ["streams.engines.faust", "anomaly"],
}


def run(json_path: Path | None = None, messages: int = 10_000) -> dict[str, Any]:
    from rich.console import Console
    from rich.table import Table

    console = Console(stderr=True)
    sim = SensorSimulator(devices=30, readings_per_message=50)
    records = list(itertools.islice(sim, messages))
    per_message = sim.readings_per_batch
    work = Path(tempfile.mkdtemp(prefix="eddyline-bench-engines-"))
    result: dict[str, Any] = {}
    cpu: dict[str, float | None] = {}
    with EmbeddedBroker(log_path=work / "broker.log") as broker:
        for key, argv in ENGINES.items():
            name = key.removesuffix("_readings_per_s")
            settings = KafkaSettings(bootstrap_servers=broker.bootstrap, namespace=f"bench-{name}.",
                                     partitions=PARTITIONS, session_timeout_ms=6000)
            create_topics(settings, [TOPIC])
            status = f"{name}: pre-filling {messages} messages ({messages * per_message:,} readings)"
            with console.status(status), EventProducer(settings) as producer:
                for rec in records:
                    producer.produce(TOPIC, SENSOR_BATCH, rec, key=rec["device_id"])
            (work / name).mkdir()
            with console.status(f"{name}: the whole flow"):
                rate = time_flow(settings, argv, messages, per_message, work / name, PARTITIONS)
                result[key] = round(rate.readings_per_s)
                cpu[name] = rounded(rate.cpu_s_per_m_readings)
    one = result["bytewax_readings_per_s"]
    result |= {
        "bytewax_2proc_vs_1proc": round(result["bytewax_2proc_readings_per_s"] / one, 3),
        "faust_vs_bytewax": round(result["faust_readings_per_s"] / one, 3),
        "cpu_s_per_m_readings": cpu,
        # by CPU, read as the wall ratios: the second-named engine's CPU per reading over the first-named's
        "bytewax_2proc_vs_1proc_by_cpu": ratio(cpu["bytewax"], cpu["bytewax_2proc"]),
        "faust_vs_bytewax_by_cpu": ratio(cpu["bytewax"], cpu["faust"]),
        "messages": messages,
        "readings_per_message": per_message,
        "partitions": PARTITIONS,
        "machine": machine(),
    }
    table = Table(title="sensor flow throughput by engine (readings/s)")
    table.add_column("engine")
    table.add_column("readings/s", justify="right")
    table.add_column("CPU s per 1M readings", justify="right")
    for key in ENGINES:
        name = key.removesuffix("_readings_per_s")
        table.add_row(name, f"{result[key]:,}", "n/a" if cpu[name] is None else f"{cpu[name]:.2f}")
    console.print(table)
    console.print(f"bytewax 2 processes / 1 = {result['bytewax_2proc_vs_1proc']:.2f} wall, "
                  f"{result['bytewax_2proc_vs_1proc_by_cpu']} by CPU; faust / bytewax = "
                  f"{result['faust_vs_bytewax']:.2f} wall, {result['faust_vs_bytewax_by_cpu']} by CPU")
    write_json(json_path, result)
    return result


def command(
    json_path: Annotated[Path | None, typer.Option("--json", help="Write the results here.")] = None,
    messages: Annotated[int, typer.Option(help="Messages to pre-fill per engine (150 readings each).")] = 10_000,
) -> None:
    """Throughput of the sensor flow on Bytewax (1 and 2 processes) and on Faust, measured in one run."""
    try:
        run(json_path, messages=messages)
    except MeasurementError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None


if __name__ == "__main__":
    typer.run(command)
