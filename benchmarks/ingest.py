"""Readings per second into ``sensor.readings`` by each way in, beside the raw Kafka producer, in one run.

- ``raw_kafka``: the baseline: ``sensor_batch`` events of ``readings`` readings produced straight with
  ``EventProducer`` (Avro-encoded, flushed); no validation of JSON, no network hop before Kafka;
- ``gateway_http`` / ``gateway_ws``: the same events posted as JSON to the gateway (its own process) by
  ``connections`` keep-alive connections, each waiting for its answer (``benchmarks.gateway``'s client);
- ``mqtt_arrays`` / ``mqtt_single``: the MQTT bridge (``eddyline bridge mqtt``, its own process) draining
  QoS 1 messages that ``mosquitto_pub`` queued in its persistent session on a real Mosquitto: arrays of
  ``readings`` values per message, then one value per message. Timed from the bridge's subscription to the
  last reading on the topic, every reading counted there (so nothing lost is counted as throughput).
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from confluent_kafka import OFFSET_BEGINNING, TopicPartition

from benchmarks.report import machine, write_json
from benchmarks.gateway import _direct, _event, _load_gateway
from connectors.broker import EmbeddedBroker
from connectors.kafka import KafkaSettings, create_topics, make_consumer
from connectors.mqtt.mosquitto import Mosquitto
from schemas import SENSOR_BATCH, AvroSerde

TOPIC = "sensor.readings"
T0 = 1_767_225_600_000


def _count_readings(settings: KafkaSettings, expected: int, started: threading.Event, out: dict[str, float],
                    timeout: float) -> None:
    """Consume the topic, counting readings, and note when the last expected one arrived."""
    serde = AvroSerde()
    consumer = make_consumer(settings, f"bench-ingest-{time.time_ns()}", **{"fetch.wait.max.ms": 10})
    name = settings.topic(TOPIC)
    partitions = consumer.list_topics(name, timeout=10).topics[name].partitions
    consumer.assign([TopicPartition(name, p, OFFSET_BEGINNING) for p in partitions])  # no group join to wait for
    seen, deadline = 0, time.monotonic() + timeout
    started.set()
    try:
        while seen < expected and time.monotonic() < deadline:
            for msg in consumer.consume(1000, timeout=0.2):
                if msg.error() is None:
                    rec = serde.decode(msg.value(), SENSOR_BATCH)
                    seen += sum(len(s["values"]) for s in rec["series"])
        out["last"] = time.monotonic()
        out["seen"] = seen
    finally:
        consumer.close()


def _payloads(devices: int, messages: int, per_message: int) -> list[list[str]]:
    """One line per message (``mosquitto_pub -l``), split among ``devices`` publishers."""
    lines: list[list[str]] = [[] for _ in range(devices)]
    for i in range(messages):
        d = i % devices
        k = i // devices
        ts = [T0 + 10 * (k * per_message + j) for j in range(per_message)]
        values = [round(20 + ((k * per_message + j) % 97) / 10, 2) for j in range(per_message)]
        body = {"device": f"mqtt-{d}", "value": values if per_message > 1 else values[0],
                "ts": ts if per_message > 1 else ts[0]}
        lines[d].append(json.dumps(body, separators=(",", ":")))
    return lines


def _bridge_config(work: Path, port: int, name: str) -> Path:
    path = work / f"{name}.toml"
    path.write_text(
        f'[mqtt]\nport = {port}\nclient_id = "bench-{name}"\nmax_unacked = 1000\nmax_wait_ms = 500\n'
        'lateness_ms = 0\n[[mqtt.subscriptions]]\ntopic = "bench/+"\ndevice = "payload:device"\n'
        'sensor = "fixed:temperature"\n'
    )
    return path


def _start_bridge(config: Path, settings: KafkaSettings, log: Path) -> subprocess.Popen:
    env = {**os.environ, "EDDYLINE_KAFKA_BOOTSTRAP_SERVERS": settings.bootstrap_servers,
           "EDDYLINE_KAFKA_NAMESPACE": settings.namespace}
    before = log.read_text().count("subscribed") if log.exists() else 0
    proc = subprocess.Popen([sys.executable, "-c", "from streams.cli import app; app()", "bridge", "mqtt",
                             "--config", str(config)], env=env, stdout=log.open("ab"), stderr=subprocess.STDOUT,
                            start_new_session=True)
    deadline = time.monotonic() + 60
    while log.read_text().count("subscribed") <= before:
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"the bridge did not subscribe; see {log}")
        time.sleep(0.05)
    return proc


def _stop(proc: subprocess.Popen) -> None:
    os.killpg(proc.pid, signal.SIGTERM)
    proc.wait(60)


def _mqtt(broker: EmbeddedBroker, mosquitto: Mosquitto, work: Path, name: str, devices: int, messages: int,
          per_message: int) -> dict[str, Any]:
    settings = KafkaSettings(bootstrap_servers=broker.bootstrap, namespace=f"{name}.")
    create_topics(settings, [TOPIC])
    config, log = _bridge_config(work, mosquitto.port, name), work / f"{name}.log"
    _stop(_start_bridge(config, settings, log))  # the session exists: messages now wait for the bridge
    pubs = [subprocess.Popen(["mosquitto_pub", "-h", "127.0.0.1", "-p", str(mosquitto.port), "-q", "1", "-l",
                              "-t", f"bench/{d}"], stdin=subprocess.PIPE, text=True)
            for d in range(devices)]
    for p, lines in zip(pubs, _payloads(devices, messages, per_message), strict=True):
        p.communicate("\n".join(lines) + "\n", timeout=600)
    expected = messages * per_message
    started, out = threading.Event(), {}
    counter = threading.Thread(target=_count_readings, args=(settings, expected, started, out, 600))
    counter.start()
    started.wait()
    t0 = time.monotonic()
    bridge = _start_bridge(config, settings, log)
    t_sub = time.monotonic()
    counter.join()
    _stop(bridge)
    return {"readings_per_s": round(out["seen"] / (out["last"] - t_sub)), "readings": out["seen"],
            "expected": expected, "messages": messages, "readings_per_message": per_message,
            "bridge_start_s": round(t_sub - t0, 2)}


def run(json_path: Path | None = None, events: int = 8000, readings: int = 50, connections: int = 32,
        mqtt_single: int = 40_000, devices: int = 20, duration: float = 30.0) -> dict[str, Any]:
    rng = random.Random(11)
    per_conn = max(1, events // connections)
    plan = [[_event(c, seq, readings, rng) for seq in range(per_conn)] for c in range(connections)]
    work = Path(tempfile.mkdtemp(prefix="eddyline-bench-ingest-"))
    result: dict[str, Any] = {}
    with EmbeddedBroker(log_path=work / "broker.log") as broker, Mosquitto(folder=work / "mosquitto") as mosq:
        settings = KafkaSettings(bootstrap_servers=broker.bootstrap, namespace="gw.")
        create_topics(settings, [TOPIC, "direct." + TOPIC])
        direct = _direct(settings, [e for conn in plan for e in conn])
        result["raw_kafka"] = {"readings_per_s": round(direct * readings), "events_per_s": round(direct, 1)}
        http, ws = _load_gateway(settings, work, plan, duration)
        for name, r in (("gateway_http", http), ("gateway_ws", ws)):
            result[name] = {"readings_per_s": round(r["per_s"] * readings), "events_per_s": round(r["per_s"], 1),
                            "p99_ms": round(r["p99_ms"], 2) if r["p99_ms"] else None, "errors": r["errors"]}
        result["mqtt_arrays"] = _mqtt(broker, mosq, work, "mqtt-arrays", devices, events, readings)
        result["mqtt_single"] = _mqtt(broker, mosq, work, "mqtt-single", devices, mqtt_single, 1)
    raw = result["raw_kafka"]["readings_per_s"]
    for name in ("gateway_http", "gateway_ws", "mqtt_arrays", "mqtt_single"):
        result[name]["vs_raw_kafka"] = round(result[name]["readings_per_s"] / raw, 3)
    result["readings_per_event"] = readings
    result["machine"] = machine()
    write_json(json_path, result)
    return result


def command(
    json_path: Annotated[Path | None, typer.Option("--json", help="Write the results here.")] = None,
    events: Annotated[int, typer.Option(help="Events (and MQTT array messages) per way in.")] = 8000,
    readings: Annotated[int, typer.Option(help="Readings per event or array message.")] = 50,
    mqtt_single: Annotated[int, typer.Option(help="One-value MQTT messages.")] = 40_000,
    duration: Annotated[float, typer.Option(help="Longest gateway load run per transport, seconds.")] = 30.0,
) -> None:
    """Readings/s through the MQTT bridge and the gateway (HTTP, WebSocket) beside the raw Kafka producer."""
    result = run(json_path, events=events, readings=readings, mqtt_single=mqtt_single, duration=duration)
    typer.echo(json.dumps(result, indent=2))
    lost = [n for n in ("mqtt_arrays", "mqtt_single") if result[n]["readings"] != result[n]["expected"]]
    if lost:
        typer.secho(f"error: readings missing on the topic for {lost}", fg="red", err=True)
        raise typer.Exit(1)


if __name__ == "__main__":
    typer.run(command)
