"""The embedded broker alone as its partitions fill: end-to-end latency and the broker's CPU per span of a steady
load, with no flow in the way, so that a long run of a flow can be read against what the broker itself costs.

Why: in ``bench scale``'s 150 s live runs the tail grew through the run while the flow's CPU per batch stayed
flat, and the broker's CPU per live batch was 2-4x that of shorter runs (BENCHMARKS.md, "Session 14: latency at
half of the live maximum"). This measures the broker on its own: a producer offers ``--rate`` messages a second
(sensor batches as the simulator encodes them) with a given ``linger.ms``; one consumer tails the topic with a
given ``fetch.wait.max.ms``; each message's latency runs from its produce call (its Kafka timestamp) to its
arrival. Per span of ``--span`` seconds: p50/p99 latency, the broker's CPU seconds per second, the produce
requests sent so far (the broker keeps each request's batches as they came: nothing merges them) and the fetch
requests it served in the span (both from librdkafka's statistics), and the broker's CPU per fetch served. Each
variant (a linger and a fetch wait) runs on a fresh broker.
"""

from __future__ import annotations

import itertools
import json
import os
import threading
import time
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import typer
from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition

from benchmarks.report import machine, write_json
from benchmarks.timing import FETCH_WAIT_MS
from connectors.broker import EmbeddedBroker
from connectors.kafka import KafkaSettings, consumer_config, create_topics, producer_config
from edge_agent.health import process_cpu_seconds
from schemas import SENSOR_BATCH, AvroSerde
from streams.engines.bytewax import FETCH_WAIT_MS as FLOW_FETCH_WAIT_MS
from streams.producers.simulator import SensorSimulator

TOPIC = "broker.growth"
STATS_MS = 1000
LINGERS_MS = (10, 200)  # the [kafka] default, and a batching gateway's
FETCH_WAITS_MS = (FETCH_WAIT_MS, FLOW_FETCH_WAIT_MS)  # the benchmarks' watchers', and the flows'


class _Requests:
    """Requests of one kind a client has sent, from librdkafka's statistics (summed over brokers)."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.count = 0

    def __call__(self, stats: str) -> None:
        brokers = json.loads(stats).get("brokers", {}).values()
        self.count = sum(b.get("req", {}).get(self.kind, 0) for b in brokers)


def variant(rate: float, seconds: float, linger_ms: int, fetch_wait_ms: int, span_s: float = 30.0,
            partitions: int = 3, devices: int = 1000) -> dict[str, Any]:
    """One run on a fresh broker: what a steady ``rate`` costs as the partitions fill.

    Parameters
    ----------
    rate
        Messages a second offered, each one sensor batch of 150 readings, keyed by device.
    seconds
        How long the load runs.
    linger_ms
        The producer's ``linger.ms``: how many messages share a produce request.
    fetch_wait_ms
        The consumer's ``fetch.wait.max.ms``.
    span_s
        Seconds per reported span.
    partitions
        Partitions of the topic.
    devices
        Distinct keys the messages cycle through.
    """
    sim = SensorSimulator(devices=devices, readings_per_message=50, seed=7)
    serde = AvroSerde()
    with EmbeddedBroker(stop_timeout=1) as broker:
        settings = KafkaSettings(bootstrap_servers=broker.bootstrap, namespace="bench-broker.", partitions=partitions)
        create_topics(settings, [TOPIC])
        topic = settings.topic(TOPIC)
        records = [(r["device_id"].encode(), serde.encode(SENSOR_BATCH, r, topic=topic))
                   for r in itertools.islice(sim, devices)]
        produced = _Requests("Produce")
        fetched = _Requests("Fetch")
        producer = Producer(producer_config(settings, **{"linger.ms": linger_ms, "statistics.interval.ms": STATS_MS,
                                                         "stats_cb": produced}))
        consumer = Consumer(consumer_config(settings, "bench-broker", **{
            "fetch.wait.max.ms": fetch_wait_ms, "statistics.interval.ms": STATS_MS, "stats_cb": fetched}))
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(partitions)])
        stop = threading.Event()
        sent = 0

        def produce() -> None:
            nonlocal sent
            began = time.time()
            for i, (key, value) in enumerate(itertools.cycle(records)):
                due = began + i / rate
                if due >= began + seconds:
                    sent = i
                    break
                wait = due - time.time()
                if wait > 0:
                    producer.poll(0)
                    time.sleep(wait)
                producer.produce(topic, value, key)
            producer.flush(30)
            stop.set()

        thread = threading.Thread(target=produce, daemon=True)
        latencies: list[float] = []
        spans: list[dict[str, Any]] = []
        began = mark = time.time()
        cpu = process_cpu_seconds(broker.pid)
        fetches = received = 0
        thread.start()
        while not (stop.is_set() and time.time() > began + seconds + 2):
            for msg in consumer.consume(1000, 0.05):
                if msg.error() is None:
                    latencies.append(time.time() * 1000 - msg.timestamp()[1])
                    received += 1
            now = time.time()
            if now >= mark + span_s:
                spent = process_cpu_seconds(broker.pid) - cpu
                served = fetched.count - fetches
                spans.append({
                    "from_s": round(mark - began), "messages": len(latencies),
                    "p50_ms": _percentile(latencies, 50), "p99_ms": _percentile(latencies, 99),
                    "broker_cpu_per_s": round(spent / (now - mark), 3),
                    "produce_requests_stored": produced.count, "fetch_requests": served,
                    "broker_cpu_us_per_fetch": round(1e6 * spent / served) if served else None})
                typer.echo(f"  {spans[-1]}", err=True)
                latencies, mark, cpu, fetches = [], now, cpu + spent, fetched.count
        thread.join(30)
        consumer.close()
    return {"rate": rate, "seconds": seconds, "linger_ms": linger_ms, "fetch_wait_ms": fetch_wait_ms,
            "partitions": partitions, "message_bytes": len(records[0][1]), "sent": sent, "received": received,
            "spans": spans}


def _percentile(values: list[float], q: float) -> float | None:
    return round(float(np.percentile(values, q)), 1) if values else None


def run(rate: float = 400.0, seconds: float = 240.0, lingers: tuple[int, ...] = LINGERS_MS,
        fetch_waits: tuple[int, ...] = FETCH_WAITS_MS, span_s: float = 30.0,
        json_path: Path | None = None) -> dict[str, Any]:
    """Every combination of ``lingers`` and ``fetch_waits``, one after another, each on a fresh broker."""
    runs = []
    for linger, wait in itertools.product(lingers, fetch_waits):
        typer.echo(f"linger.ms {linger}, fetch.wait.max.ms {wait}: {rate:.0f} messages/s for {seconds:.0f} s", err=True)
        runs.append(variant(rate, seconds, linger, wait, span_s))
    result = {"runs": runs, "machine": machine(), "load_average_1m_at_end": round(os.getloadavg()[0], 2)}
    for r in runs:  # the first span holds the clients' connecting (a p99 of about 750 ms): read from the second
        first, last = r["spans"][min(1, len(r["spans"]) - 1)], r["spans"][-1]
        typer.echo(f"linger {r['linger_ms']} ms, fetch wait {r['fetch_wait_ms']} ms: p99 {first['p99_ms']} -> "
                   f"{last['p99_ms']} ms, broker CPU {first['broker_cpu_per_s']} -> {last['broker_cpu_per_s']} cores, "
                   f"per fetch {first['broker_cpu_us_per_fetch']} -> {last['broker_cpu_us_per_fetch']} us with "
                   f"{last['produce_requests_stored']:,} produce requests stored")
    write_json(json_path, result)
    return result


def command(
    json_path: Annotated[Path | None, typer.Option("--json", help="Write the results here.")] = None,
    rate: Annotated[float, typer.Option(help="Messages a second offered (150-reading sensor batches).")] = 400.0,
    seconds: Annotated[float, typer.Option(help="Seconds of load per variant.")] = 240.0,
    linger: Annotated[list[int] | None, typer.Option("--linger-ms", help="Producer linger.ms; repeat for more "
                                                      "variants (default 10 and 200).")] = None,
    fetch_wait: Annotated[list[int] | None, typer.Option(
        "--fetch-wait-ms", help="Consumer fetch.wait.max.ms; repeat (default: the harness's 10 and the flows' 50).")
    ] = None,
    span: Annotated[float, typer.Option(help="Seconds per reported span.")] = 30.0,
) -> None:
    """The embedded broker alone under a steady load: latency and its CPU as the partitions fill."""
    if rate <= 0 or seconds <= 0 or span <= 0 or span > seconds:
        typer.echo("error: --rate and --seconds must be positive and --span at most --seconds; "
                   "try the defaults (--rate 400 --seconds 240 --span 30)", err=True)
        raise typer.Exit(2)
    run(rate, seconds, tuple(linger or LINGERS_MS), tuple(fetch_wait or FETCH_WAITS_MS), span, json_path)


if __name__ == "__main__":
    typer.run(command)
