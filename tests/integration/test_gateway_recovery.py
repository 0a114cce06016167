"""The gateway outlives a broker restart: a producer that fails for good is replaced, nothing accepted is lost."""

from __future__ import annotations

import time
import uuid

import httpx
import pytest

from connectors.broker import EmbeddedBroker
from connectors.gateway import GatewaySettings
from connectors.kafka import KafkaSettings, read_topic
from schemas import SENSOR_BATCH, AvroSerde
from tests.fixtures.gateway import serve_gateway

pytestmark = pytest.mark.integration
TOKEN = "integration-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def _event(seq: int) -> dict:
    return {"device_id": f"dev-{seq % 3}", "seq": seq,
            "series": [{"sensor": "temp", "unit": "C", "timestamps": [1000 * seq], "values": [20.0 + seq]}]}


def _send(client: httpx.Client, seq: int, timeout: float = 90.0) -> str:
    """Post until accepted, as a client does (the same body again: the gateway derives the same event id)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            r = client.post("/v1/sensors", json=_event(seq))
            if r.status_code == 202:
                return r.json()["event_ids"][0]
        except httpx.HTTPError:
            pass
        assert time.monotonic() < deadline, f"event {seq} not accepted within {timeout:.0f} s after a broker restart"
        time.sleep(0.5)


def test_sends_succeed_again_after_the_broker_restarts_under_the_gateway(durable_broker: EmbeddedBroker) -> None:
    kafka = KafkaSettings(bootstrap_servers=durable_broker.bootstrap, namespace=f"t{uuid.uuid4().hex[:8]}.",
                          session_timeout_ms=6000, linger_ms=20, extra={"fetch.wait.max.ms": 100})
    settings = GatewaySettings(tokens={"itest": TOKEN}, shutdown_flush_s=30)
    accepted: set[str] = set()
    with serve_gateway(settings, kafka) as live, httpx.Client(base_url=live.url, headers=AUTH, timeout=10) as client:
        for seq in range(20):
            accepted.add(_send(client, seq))
        for round_ in range(2):  # the producer keeps its id and sequence numbers across the broker's restart
            durable_broker.kill()
            durable_broker.start()
            for seq in range(20 * (round_ + 1), 20 * (round_ + 2)):
                accepted.add(_send(client, seq))
        health = client.get("/health").json()
    serde = AvroSerde()
    landed = {serde.decode(m.value(), SENSOR_BATCH)["event_id"] for m in read_topic(kafka, "sensor.readings",
                                                                                   timeout=120, idle=10)}
    assert accepted <= landed, f"{len(accepted - landed)} accepted events never reached the topic; {health}"
    assert health["failed"] == 0, health
