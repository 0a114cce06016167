"""The agent against a real broker that refuses some batches for good: Tansu checking records against a schema.

Tansu with a schema registry refuses a record that breaks its topic's schema with INVALID_RECORD, and it refuses
the whole produce request: every batch sent with the bad one gets the same answer, with no per-record errors to
tell them apart. librdkafka then bumps its producer's epoch, which Tansu fences. Sending the bad batch again can
never succeed; the good ones that shared its request must still arrive.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from connectors.broker import EmbeddedBroker
from connectors.kafka import KafkaSettings, create_topics, read_topic
from edge_agent.agent import Agent
from edge_agent.settings import EdgeSettings
from edge_agent.sources import Chunk

pytestmark = pytest.mark.integration


@pytest.fixture
def strict_kafka(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[KafkaSettings]:
    """A broker of its own whose ``sensor.readings`` takes only JSON objects (a batch of Avro is refused)."""
    kafka = KafkaSettings(namespace=f"t{uuid.uuid4().hex[:12]}.", session_timeout_ms=6000)
    registry = tmp_path / "registry"
    registry.mkdir()
    schema = {"type": "object", "properties": {"value": {"type": "object"}}}  # Tansu's form: the record's parts
    (registry / f"{kafka.topic('sensor.readings')}.json").write_text(json.dumps(schema))
    monkeypatch.chdir(tmp_path)  # Tansu reads a file:// registry relative to its working directory
    env = dict(os.environ, SCHEMA_REGISTRY="file://./registry")
    with EmbeddedBroker(stop_timeout=1.0, env=env) as broker:
        kafka = kafka.model_copy(update={"bootstrap_servers": broker.bootstrap})
        create_topics(kafka, ["sensor.readings", "device.health"], partitions=1)
        yield kafka


def test_a_batch_the_broker_refuses_goes_to_the_dead_letters_and_the_rest_arrive(
    strict_kafka: KafkaSettings, tmp_path: Path
) -> None:
    agent = Agent.from_settings(EdgeSettings(device_id="pi-strict", buffer_path=str(tmp_path / "buf.sqlite")),
                                strict_kafka, sources=[])
    buf = agent.buffer
    good = {seq: json.dumps({"seq": seq}).encode() for seq in (1, 2, 4, 5)}
    for seq in range(6):
        if seq in good:
            buf.append(seq, good[seq], 1, seq)
        else:  # Avro: not the JSON the topic takes
            buf.append(seq, agent.encoder.encode(seq, [Chunk("vib", "g", [seq, seq + 1], [1.5, 2.5])]), 2, seq)
    deadline = time.monotonic() + 30  # a guard only: without dead letters the refused batches never leave
    try:
        while buf.depth and time.monotonic() < deadline:
            agent.sender.pump()
            agent.sender.poll(0.1)
        assert buf.depth == 0, f"{buf.depth} batches still waiting; sender {agent.sender.counters}"
        letters = agent.dead_letters.read()
        assert [lt["seq"] for lt in letters] == [0, 3]  # the good batches that shared their request went again
        assert all("INVALID_RECORD" in lt["reason"] for lt in letters)
        assert letters[1]["series"][0]["values"] == [1.5, 2.5]
        st = buf.stats()
        assert (st.dropped_batches, st.dropped_readings) == (2, 4)
        hb = agent.heartbeat()
        assert hb.errors >= 2 and hb.dropped_readings == 4
    finally:
        agent.sender.close()
        buf.close()
    values = [m.value() for m in read_topic(strict_kafka, "sensor.readings", idle=1.0, timeout=30)]
    assert sorted(values) == sorted(good.values())
