"""A producer that librdkafka declares fatal is replaced: every event the gateway accepted reaches its topic once.

The fault is librdkafka's own (``rd_kafka_test_fatal_error``, the path a refused idempotent sequence takes), on
the real broker; ``test_gateway_recovery`` restarts the broker, which this producer survives without going fatal.
Both tests also check that no producer outlives its use: the replaced one is gone, and stopping the gateway ends
the current one's librdkafka threads (a leaked one kept reconnecting to the stopped broker until pytest exited).
"""

from __future__ import annotations

import asyncio
import gc
import time
import uuid
import weakref
from collections import Counter
from pathlib import Path

import httpx
import pytest

from connectors.gateway import GatewaySettings
from connectors.gateway.app import Gateway
from connectors.gateway.producer import GatewayProducer
from connectors.gateway.records import ENDPOINTS
from connectors.kafka import KafkaSettings, create_topics, read_topic
from schemas import SENSOR_BATCH, AvroSerde
from tests.fixtures.gateway import serve_gateway
from tests.fixtures.kafka_faults import make_fatal

pytestmark = pytest.mark.integration
TOKEN = "integration-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
LINGER_MS = 5000  # long enough that events accepted just before the fault are still in the producer's queue


def _event(seq: int) -> dict:
    return {"device_id": f"dev-{seq % 3}", "seq": seq,
            "series": [{"sensor": "temp", "unit": "C", "timestamps": [1000 * seq], "values": [20.0 + seq]}]}


def _kafka(bootstrap: str, client_id: str) -> KafkaSettings:
    return KafkaSettings(bootstrap_servers=bootstrap, namespace=f"t{uuid.uuid4().hex[:12]}.", client_id=client_id,
                         session_timeout_ms=6000, linger_ms=LINGER_MS)


def _landed(kafka: KafkaSettings, expected: int) -> Counter[str]:
    serde = AvroSerde()
    messages = read_topic(kafka, "sensor.readings", timeout=60, idle=3 + LINGER_MS / 1000)
    assert len(messages) >= expected, f"{len(messages)} of {expected} events on the topic"
    return Counter(serde.decode(m.value(), SENSOR_BATCH)["event_id"] for m in messages)


def _kafka_threads() -> int:
    """librdkafka threads alive in this process (it names them ``rdk:...``)."""
    return sum(1 for comm in Path("/proc/self/task").glob("*/comm")
               if _read(comm).startswith("rdk:"))


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except OSError:  # the thread ended while we looked
        return ""


def _wait_health(client: httpx.Client, ready, what: str, timeout: float = 60.0) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        health = client.get("/health").json()
        if ready(health):
            return health
        assert time.monotonic() < deadline, f"{what} within {timeout:.0f} s: {health}"
        time.sleep(0.1)


def test_events_held_by_a_fatal_producer_are_sent_again_once_and_health_counts_it(broker) -> None:
    kafka = _kafka(broker.bootstrap, "gw-fatal")
    threads = _kafka_threads()
    with serve_gateway(GatewaySettings(tokens={"itest": TOKEN}, shutdown_flush_s=30), kafka) as live, \
            httpx.Client(base_url=live.url, headers=AUTH, timeout=10) as client:
        sent = [client.post("/v1/sensors", json=_event(seq)) for seq in range(9)]
        before = {r.json()["event_ids"][0] for r in sent if r.status_code == 202}
        _wait_health(client, lambda h: h["delivered"] == 9, "the first events delivered")
        held = [client.post("/v1/sensors", json=_event(seq)) for seq in range(9, 18)]
        held_ids = {r.json()["event_ids"][0] for r in held if r.status_code == 202}
        assert client.get("/health").json()["queue"] == 9  # accepted, still waiting in the producer
        producer = live.app.state.gateway.producer
        make_fatal(producer.client, "gw-fatal")
        replaced = weakref.ref(producer)
        del producer
        health = _wait_health(client, lambda h: h["producers_replaced"] == 1 and h["delivered"] == 18,
                              "the producer replaced and the held events delivered")
        after = [client.post("/v1/sensors", json=_event(seq)) for seq in range(18, 24)]
        after_ids = {r.json()["event_ids"][0] for r in after if r.status_code == 202}
        health = _wait_health(client, lambda h: h["delivered"] == 24, "the events after the fault delivered")
    gc.collect()
    assert replaced() is None, "the replaced producer is still referenced"
    assert _kafka_threads() <= threads, "a producer's librdkafka threads outlived the gateway"
    assert (len(before), len(held_ids), len(after_ids)) == (9, 9, 6)
    counts = _landed(kafka, 24)
    assert set(counts) == before | held_ids | after_ids
    assert max(counts.values()) == 1, {i: n for i, n in counts.items() if n > 1}  # nothing sent twice
    assert health["producers_replaced"] == 1 and health["failed"] == 0 and health["queue"] == 0, health


def test_a_request_that_meets_a_fatal_producer_is_accepted_on_its_replacement(broker) -> None:
    """The fault is met by a produce before the delivery poller sees it: the request still gets its 202."""
    kafka = _kafka(broker.bootstrap, "gw-fatal-produce")
    create_topics(kafka, ["sensor.readings"])
    threads = _kafka_threads()
    gateway = Gateway(GatewaySettings(tokens={"itest": TOKEN}), kafka, GatewayProducer(kafka))  # no poller
    endpoint = ENDPOINTS[SENSOR_BATCH]
    held = {i for seq in range(5) for i in gateway.publish(endpoint, _event(seq), "itest")}
    first = gateway.producer
    make_fatal(first.client, "gw-fatal-produce")
    after = {i for seq in range(5, 8) for i in gateway.publish(endpoint, _event(seq), "itest")}
    assert gateway.producer is not first and gateway.producers_replaced == 1
    replaced = weakref.ref(first)
    del first
    gc.collect()
    assert replaced() is None, "the replaced producer is still referenced"
    asyncio.run(gateway.stop())  # flushes, then closes the current producer
    status, health = gateway.health()
    assert (health["accepted"], health["delivered"], health["failed"], health["queue"]) == (8, 8, 0, 0), health
    assert _kafka_threads() <= threads, "the gateway's producer kept its librdkafka threads after stop"
    counts = _landed(kafka, 8)
    assert set(counts) == held | after and max(counts.values()) == 1, counts
