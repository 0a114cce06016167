"""The gateway outlives a broker restart: a producer that fails for good is replaced, nothing accepted is lost."""

from __future__ import annotations

import time
import uuid

import httpx
import pytest

from connectors.broker import BrokerError, EmbeddedBroker
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


def _drained(client: httpx.Client, timeout: float = 60.0) -> dict:
    """The gateway's health once its producer holds nothing (every accepted event acknowledged or failed)."""
    deadline = time.monotonic() + timeout
    while (health := client.get("/health").json())["queue"] and time.monotonic() < deadline:
        time.sleep(0.2)
    return health


def _restart(broker: EmbeddedBroker) -> None:
    """Start the broker again; Tansu on S3 killed while writing its metadata object cannot read it back (the start
    fails on "EOF while parsing"; seen once in about 30 runs): that is the broker's defect, so the test is xfailed
    with it rather than failed or passed."""
    try:
        broker.start()
    except BrokerError as exc:
        if "EOF while parsing" in str(exc):
            pytest.xfail("Tansu on S3 could not read its own metadata after a SIGKILL (empty object written mid-kill)")
        raise


def test_sends_succeed_again_after_the_broker_restarts_under_the_gateway(durable_broker: EmbeddedBroker) -> None:
    """Every accepted event is acknowledged by the broker, and the events sent after its last restart are read back.

    Events acknowledged before a restart are not asserted on the topic: Tansu on S3 reuses offsets after a restart
    and so can lose acknowledged records (``tests/chaos/test_broker_restart.py``, a strict xfail), which no client
    can undo; this test failed about one run in five for that reason alone (a partition's records of the first
    rounds gone, the other partitions' kept, the gateway's own count saying all were acknowledged).
    """
    kafka = KafkaSettings(bootstrap_servers=durable_broker.bootstrap, namespace=f"t{uuid.uuid4().hex[:8]}.",
                          session_timeout_ms=6000, linger_ms=20, extra={"fetch.wait.max.ms": 100})
    settings = GatewaySettings(tokens={"itest": TOKEN}, shutdown_flush_s=30)
    with serve_gateway(settings, kafka) as live, httpx.Client(base_url=live.url, headers=AUTH, timeout=10) as client:
        rounds = [[_send(client, seq) for seq in range(20)]]
        for round_ in range(2):  # the producer keeps its id and sequence numbers across the broker's restart
            durable_broker.kill()
            _restart(durable_broker)
            rounds.append([_send(client, seq) for seq in range(20 * (round_ + 1), 20 * (round_ + 2))])
        health = _drained(client)
    accepted = {event_id for sent in rounds for event_id in sent}
    assert len(accepted) == 60
    assert health["queue"] == 0 and health["failed"] == 0, health
    assert health["delivered"] == len(accepted), health
    serde = AvroSerde()
    landed = {serde.decode(m.value(), SENSOR_BATCH)["event_id"] for m in read_topic(kafka, "sensor.readings",
                                                                                   timeout=120, idle=10)}
    last = set(rounds[-1])
    assert last <= landed, f"{len(last - landed)} events sent after the last restart never reached the topic; {health}"
