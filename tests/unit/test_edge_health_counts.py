"""What an operator must see in a device's health: batches given up to the dead letters, rollout records refused."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from connectors.broker import free_port
from connectors.kafka import KafkaSettings
from edge_agent.agent import Agent
from edge_agent.health import Heartbeat, health_record
from edge_agent.settings import EdgeSettings
from edge_agent.sources import Chunk
from schemas import AvroSerde
from schemas.catalog import DEVICE_HEALTH


def _agent(tmp_path: Path, **edge: object) -> Agent:
    """An agent with no broker to reach, whose producer takes messages of at most 1000 bytes."""
    kafka = KafkaSettings(bootstrap_servers=f"127.0.0.1:{free_port()}", extra={"message.max.bytes": "1000"})
    settings = EdgeSettings(device_id="pi-7", device_class="rpi4", buffer_path=str(tmp_path / "buf.sqlite"),
                            sources=[{"kind": "proc"}], **edge)
    return Agent.from_settings(settings, kafka, sources=[])


def _published(agent: Agent, hb: Heartbeat) -> dict:
    """The heartbeat's ``device.health`` event as the fleet flow decodes it."""
    rec = health_record(hb, seq=0, device_class="rpi4", agent_version="1", interval_s=10.0, event_time_ms=1,
                        model=agent._model_info())
    serde = AvroSerde()
    return serde.decode(serde.encode(DEVICE_HEALTH, rec, topic="device.health"), DEVICE_HEALTH)


def test_batches_given_up_to_the_dead_letters_are_counted_in_the_health_event(tmp_path: Path) -> None:
    agent = _agent(tmp_path)
    try:
        big = [Chunk("vib", "g", list(range(1000, 1200)), [1.5] * 200)]
        agent.buffer.append(0, agent.encoder.encode(0, big), 200, 1199)  # stored before message.max.bytes was lowered
        agent.sender.pump()  # the producer refuses it for good
        agent._store([Chunk("x" * 2000, "g", [1], [1.0])], None)  # one reading, too large for a message whole
        assert len(agent.dead_letters.read()) == 2
        hb = agent.heartbeat()
        assert hb.dead_letters == 2 and "dead_letters=2" in hb.line()
        assert _published(agent, hb)["dead_letters"] == 2
    finally:
        agent.sender.close()
        agent.buffer.close()


def test_a_refused_rollout_is_counted_in_the_health_event(tmp_path: Path) -> None:
    pytest.importorskip("onnxruntime")
    pytest.importorskip("cryptography")
    from schemas.signing import generate_keypair

    generate_keypair(tmp_path / "k.pem", tmp_path / "k.pub.pem")
    agent = _agent(tmp_path, inference={"enabled": True},
                   models={"enabled": True, "public_key": str(tmp_path / "k.pub.pem")})
    try:
        unsigned = {"event_id": "r-9", "event_time": 0, "producer": "someone", "rollout_id": "r",
                    "device_class": "rpi4", "version": "9", "previous_version": None, "state": "promoted",
                    "canary_percent": 100.0, "canary_devices": [], "started_ms": 0, "reason": None,
                    "sequence": int(time.time() * 1000), "key_id": None, "signature": None}
        agent.updates.on_rollout(unsigned)  # what the models feed hands over from edge.rollouts
        hb = agent.heartbeat()
        health = _published(agent, hb)
        assert hb.rollouts_refused == 1 and health["rollouts_refused"] == 1
        assert health["model_state"] == "running" and hb.errors == 0  # nothing else says it happened
    finally:
        agent._feed.close()
        agent.sender.close()
        agent.buffer.close()
