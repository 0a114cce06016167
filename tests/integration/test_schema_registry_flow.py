"""A flow process on the real broker with a Schema Registry configured (the loopback stand-in).

Producers register through it; the flow resolves ids through it. Started while the registry is down, the
flow pauses with a clear log line and dead-letters nothing; once the registry is back it scores every event.
"""

from __future__ import annotations

import itertools
import subprocess
import sys
import time
from pathlib import Path

import pytest

from connectors.kafka import EventProducer, KafkaSettings, create_topics, read_topic
from connectors.testing.schema_registry import SchemaRegistryStandIn
from schemas import ANOMALY_SCORE, SENSOR_BATCH, AvroSerde, ConfluentRegistry, wire
from streams.producers.simulator import SensorSimulator
from tests.integration.test_sensor_flow import flow_env, stop

pytestmark = pytest.mark.integration


def test_a_flow_pauses_while_the_registry_is_down_and_dead_letters_nothing(
    kafka_settings: KafkaSettings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    records = list(itertools.islice(SensorSimulator(devices=2, readings_per_message=10, seed=4), 6))
    create_topics(kafka_settings, ["sensor.readings", "dlq.sensor.readings", "scores.anomaly", "alerts"])
    with SchemaRegistryStandIn() as registry:
        monkeypatch.setenv("EDDYLINE_SCHEMA_REGISTRY_URL", registry.url)
        with EventProducer(kafka_settings) as producer:  # the configured registry, from the environment
            for rec in records:
                producer.produce("sensor.readings", SENSOR_BATCH, rec, key=rec["device_id"])
        subject = f"{kafka_settings.topic('sensor.readings')}-value"
        assert list(registry.subjects) == [subject]
        sent = [wire.unframe(m.value())[0] for m in read_topic(kafka_settings, "sensor.readings", idle=1.0)]
        assert set(sent) == set(registry.subjects[subject])

        registry.stop()
        env = flow_env(kafka_settings) | {"EDDYLINE_SCHEMA_REGISTRY_URL": registry.url,
                                          "EDDYLINE_SCHEMA_REGISTRY_RETRIES": "1", "EDDYLINE_LOG_LEVEL": "WARNING"}
        proc = start_flow_with(kafka_settings, tmp_path / "state", env)
        try:
            time.sleep(15)  # the group join (half the session timeout) and a few attempts at the registry
            assert proc.poll() is None, stop(proc)
            assert not list(read_topic(kafka_settings, "dlq.sensor.readings", idle=1.0))
            assert not list(read_topic(kafka_settings, "scores.anomaly", idle=1.0))
            registry.start()  # same port, same schemas
            reader = AvroSerde(ConfluentRegistry(registry.url))
            scored: set[str] = set()
            deadline = time.monotonic() + 90
            while len(scored) < len(records) and time.monotonic() < deadline:
                for msg in read_topic(kafka_settings, "scores.anomaly", idle=1.0):
                    scored.add(reader.decode(msg.value(), ANOMALY_SCORE)["source_event_id"])
            assert scored == {r["event_id"] for r in records}
            assert not list(read_topic(kafka_settings, "dlq.sensor.readings", idle=1.0))
        finally:
            log = stop(proc)
        assert "consumption paused" in log and "unreachable" in log, log
        assert "consumption resumes" in log, log


def start_flow_with(settings: KafkaSettings, state_dir: Path, env: dict[str, str]) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "streams.cli", "run", "anomaly", "--state-dir", str(state_dir)],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True,
    )
