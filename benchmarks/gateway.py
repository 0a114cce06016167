"""Throughput and latency of the producer gateway on loopback, against the direct Kafka producer, in one run.

The gateway runs as ``python -m connectors.gateway`` (uvicorn, one process) in front of an embedded broker;
a light asyncio client keeps ``connections`` HTTP/1.1 keep-alive connections busy posting sensor batches
(one request waits for its answer before the next on the same connection). Then the same over WebSocket
frames, each awaiting its acknowledgement. Every accepted event is read back from the topic.

- ``requests_per_s``: HTTP POSTs answered 202 per second of the load run; ``p99_ms`` their 99th percentile
  latency; ``errors``: requests answered anything but 202, or that failed on the wire;
- ``ws_messages_per_s`` / ``ws_p99_ms`` / ``ws_errors``: the same over WebSocket;
- ``direct_produce_per_s``: the baseline: the same events produced with ``EventProducer`` (Avro-encoded,
  flushed), no HTTP.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Annotated, Any

import httpx
import numpy as np
import typer

from benchmarks.report import machine, write_json
from connectors.broker import EmbeddedBroker, free_port
from connectors.kafka import EventProducer, KafkaSettings, create_topics, read_topic
from schemas import SENSOR_BATCH

TOPIC = "sensor.readings"
TOKEN = "benchmark-token-" + "0123456789abcdef"
SENSORS = ("temperature", "vibration")


def _event(device: int, seq: int, readings: int, rng: random.Random) -> dict[str, Any]:
    per = readings // len(SENSORS)
    t0 = 1_700_000_000_000 + seq * 1000
    return {
        "device_id": f"bench-{device}",
        "seq": seq,
        "event_time": t0,
        "series": [
            {
                "sensor": s,
                "unit": None,
                "timestamps": [t0 + i * 10 for i in range(per)],
                "values": [round(rng.gauss(20, 2), 3) for _ in range(per)],
            }
            for s in SENSORS
        ],
    }


async def _http_worker(
    port: int, bodies: list[bytes], latencies: list[float], statuses: list[int], deadline: float
) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    head = (
        f"POST /v1/sensors HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {TOKEN}\r\n"
        "Content-Type: application/json\r\n"
    ).encode()
    try:
        for body in bodies:
            if time.monotonic() > deadline:
                break
            start = time.perf_counter()
            try:
                writer.write(head + b"Content-Length: %d\r\n\r\n" % len(body) + body)
                status = int((await reader.readline()).split()[1])
                length = 0
                while (line := await reader.readline()) not in (b"\r\n", b""):
                    name, _, value = line.partition(b":")
                    if name.strip().lower() == b"content-length":
                        length = int(value)
                await reader.readexactly(length)
            except (OSError, IndexError, ValueError, asyncio.IncompleteReadError):
                statuses.append(-1)
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
                continue
            latencies.append(time.perf_counter() - start)
            statuses.append(status)
    finally:
        writer.close()


async def _ws_worker(
    port: int, events: list[dict], latencies: list[float], statuses: list[int], deadline: float
) -> None:
    from websockets.asyncio.client import connect

    async with connect(
        f"ws://127.0.0.1:{port}/v1/ws",
        additional_headers={"Authorization": f"Bearer {TOKEN}"},
        compression=None,
        max_size=None,
    ) as ws:
        for event in events:
            if time.monotonic() > deadline:
                break
            frame = json.dumps({"type": SENSOR_BATCH, "event": event})
            start = time.perf_counter()
            await ws.send(frame)
            answer = json.loads(await ws.recv())
            latencies.append(time.perf_counter() - start)
            statuses.append(answer["status"])


def _load(kind: str, port: int, per_connection: list[list[Any]], duration: float) -> dict[str, Any]:
    latencies: list[float] = []
    statuses: list[int] = []

    async def main() -> float:
        deadline = time.monotonic() + duration
        worker = _http_worker if kind == "http" else _ws_worker
        start = time.perf_counter()
        await asyncio.gather(*(worker(port, items, latencies, statuses, deadline) for items in per_connection))
        return time.perf_counter() - start

    try:
        import uvloop

        elapsed = uvloop.run(main())
    except ImportError:
        elapsed = asyncio.run(main())
    ok = sum(1 for s in statuses if s == 202)
    return {
        "per_s": ok / elapsed,
        "p50_ms": float(np.percentile(latencies, 50) * 1000) if latencies else None,
        "p99_ms": float(np.percentile(latencies, 99) * 1000) if latencies else None,
        "accepted": ok,
        "errors": len(statuses) - ok,
        "statuses": {str(s): statuses.count(s) for s in sorted(set(statuses))},
    }


def _direct(settings: KafkaSettings, events: list[dict]) -> float:
    start = time.perf_counter()
    with EventProducer(settings) as producer:
        for e in events:
            producer.produce(
                "direct." + TOPIC,
                SENSOR_BATCH,
                {**e, "event_id": f"d{e['device_id']}-{e['seq']}", "producer": "bench"},
                key=e["device_id"],
            )
    return len(events) / (time.perf_counter() - start)


def _start_gateway(settings: KafkaSettings, work: Path) -> tuple[subprocess.Popen, int]:
    port = free_port()
    env = {
        **os.environ,
        "EDDYLINE_KAFKA_BOOTSTRAP_SERVERS": settings.bootstrap_servers,
        "EDDYLINE_KAFKA_NAMESPACE": settings.namespace,
        "EDDYLINE_GATEWAY_TOKENS": json.dumps({"bench": TOKEN}),
        "EDDYLINE_GATEWAY_MAX_QUEUE": "100000",
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "connectors.gateway", "--port", str(port)],
        env=env,
        stdout=(work / "gateway.log").open("wb"),
        stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + 60
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"the gateway exited with {proc.returncode}; see {work / 'gateway.log'}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                return proc, port
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError(f"the gateway did not answer /health in 60 s; see {work / 'gateway.log'}")
        time.sleep(0.1)


def _load_gateway(settings: KafkaSettings, work: Path, plan: list[list[dict[str, Any]]],
                  duration: float) -> tuple[dict[str, Any], dict[str, Any]]:
    """(HTTP, WebSocket) load results through one gateway process: ``plan``'s events per connection as POST
    bodies, then again over WebSocket with sequence numbers moved past them, so that none is a replay."""
    per_conn = len(plan[0])
    bodies = [[json.dumps(e).encode() for e in conn] for conn in plan]
    ws_plan = [[{**e, "seq": e["seq"] + per_conn} for e in conn] for conn in plan]
    proc, port = _start_gateway(settings, work)
    try:
        return _load("http", port, bodies, duration), _load("ws", port, ws_plan, duration)
    finally:
        proc.terminate()
        proc.wait(60)


def run(
    json_path: Path | None = None,
    requests: int = 20_000,
    connections: int = 32,
    readings: int = 50,
    duration: float = 30.0,
) -> dict[str, Any]:
    """A bounded load run: at most ``requests`` per transport and ``duration`` seconds each."""
    rng = random.Random(7)
    per_conn = max(1, requests // connections)
    plan = [[_event(c, seq, readings, rng) for seq in range(per_conn)] for c in range(connections)]
    work = Path(tempfile.mkdtemp(prefix="eddyline-bench-gateway-"))
    with EmbeddedBroker(log_path=work / "broker.log") as broker:
        settings = KafkaSettings(bootstrap_servers=broker.bootstrap, namespace="bench.")
        create_topics(settings, [TOPIC, "direct." + TOPIC])
        direct = _direct(settings, [e for conn in plan for e in conn])
        http, ws = _load_gateway(settings, work, plan, duration)
        landed = len(read_topic(settings, TOPIC, expected=http["accepted"] + ws["accepted"], timeout=60))
    result = {
        "requests_per_s": round(http["per_s"], 1),
        "p99_ms": round(http["p99_ms"], 2) if http["p99_ms"] is not None else None,
        "errors": http["errors"],
        "p50_ms": round(http["p50_ms"], 2) if http["p50_ms"] is not None else None,
        "readings_per_s": round(http["per_s"] * readings),
        "http_statuses": http["statuses"],
        "ws_messages_per_s": round(ws["per_s"], 1),
        "ws_p50_ms": round(ws["p50_ms"], 2) if ws["p50_ms"] is not None else None,
        "ws_p99_ms": round(ws["p99_ms"], 2) if ws["p99_ms"] is not None else None,
        "ws_errors": ws["errors"],
        "direct_produce_per_s": round(direct, 1),
        "accepted": http["accepted"] + ws["accepted"],
        "landed_on_topic": landed,
        "connections": connections,
        "readings_per_request": readings,
        "body_bytes": len(json.dumps(plan[0][0]).encode()),
        "machine": machine(),
    }
    write_json(json_path, result)
    return result


def command(
    json_path: Annotated[Path | None, typer.Option("--json", help="Write the results here.")] = None,
    requests: Annotated[int, typer.Option(help="Requests per transport (HTTP, then WebSocket).")] = 20_000,
    connections: Annotated[int, typer.Option(help="Concurrent client connections.")] = 32,
    readings: Annotated[int, typer.Option(help="Readings per sensor batch.")] = 50,
    duration: Annotated[float, typer.Option(help="Longest load run per transport, seconds.")] = 30.0,
) -> None:
    """Gateway throughput and p99 latency on loopback against the real broker, with the direct producer."""
    result = run(json_path, requests, connections, readings, duration)
    typer.echo(json.dumps(result, indent=2))
    if result["landed_on_topic"] != result["accepted"]:
        typer.secho(
            f"error: {result['accepted']} accepted but {result['landed_on_topic']} on the topic", fg="red", err=True
        )
        raise typer.Exit(1)


if __name__ == "__main__":
    typer.run(command)
