"""Every topic a flow writes exists before it writes, and an invalid output is dead-lettered while the flow goes on.

The clients run with ``allow.auto.create.topics=false`` (through ``[kafka] extra``, so this also shows that the
setting reaches them): a write to a topic the flow did not create up front would fail, the epoch would not
commit and the flow would crash-loop. Tansu creates topics on demand otherwise and has no switch for it. Every
topic also has the partition count the flow asked for, which a topic created on demand would not be bound to.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from confluent_kafka.admin import AdminClient

from connectors.dlq import dlq_info
from connectors.kafka import KafkaSettings, create_topics, read_topic
from schemas import ANOMALY_SCORE, AvroSerde
from streams.engines.faust import changelog_topic, repartition_topic
from streams.engines.output import flow_topics
from tests.integration.invalid_output_flow import OUTPUT, spec
from tests.integration.test_sensor_flow import publish, simulated

pytestmark = pytest.mark.integration
NO_AUTO_CREATE = {"allow.auto.create.topics": "false"}


def start(engine: str, settings: KafkaSettings, state: Path, log: Path) -> subprocess.Popen:
    env = {**os.environ, "EDDYLINE_KAFKA_BOOTSTRAP_SERVERS": settings.bootstrap_servers,
           "EDDYLINE_KAFKA_NAMESPACE": settings.namespace, "EDDYLINE_KAFKA_PARTITIONS": str(settings.partitions),
           "EDDYLINE_KAFKA_SESSION_TIMEOUT_MS": str(settings.session_timeout_ms),
           "EDDYLINE_KAFKA_EXTRA": json.dumps(settings.extra)}
    return subprocess.Popen([sys.executable, "-m", "tests.integration.invalid_output_flow", engine, str(state)],
                            env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT, start_new_session=True)


def valid_scores(settings: KafkaSettings, expected: int) -> set[str]:
    deadline, ids = time.monotonic() + 90, set()
    while time.monotonic() < deadline and len(ids) < expected:
        ids = {AvroSerde().decode(m.value(), ANOMALY_SCORE)["event_id"]
               for m in read_topic(settings, OUTPUT, timeout=5, idle=0.5)}
    return ids


@pytest.mark.parametrize("engine", ["bytewax", "faust"])
def test_an_invalid_output_is_dead_lettered_and_the_flow_goes_on_writing_only_topics_it_created(
        engine, kafka_settings, tmp_path):
    settings = kafka_settings.model_copy(update={"partitions": 2, "extra": NO_AUTO_CREATE})
    records, _ = simulated(devices=3, messages=60)
    create_topics(settings, ["sensor.readings"])
    publish(settings, records[:30])
    log = tmp_path / "flow.log"
    proc = start(engine, settings, tmp_path / "state", log)
    try:
        invalid = {r["event_id"] for r in records if r["seq"] % 3 == 0}
        assert len(valid_scores(settings, 30 - len(invalid & {r["event_id"] for r in records[:30]}))) > 0
        publish(settings, records[30:])  # the flow is still running: it goes on past the invalid outputs
        want = {f"score-{r['event_id']}" for r in records if r["event_id"] not in invalid}
        assert valid_scores(settings, len(want)) == want, log.read_text()[-3000:]
        letters = read_topic(settings, f"dlq.{OUTPUT}", expected=len(invalid), timeout=60)
        assert proc.poll() is None, log.read_text()[-3000:]
    finally:
        proc.kill()
        proc.wait(30)
    assert {json.loads(m.value())["source_event_id"] for m in letters} == invalid
    assert {dlq_info(m.headers())["reason"] for m in letters} == {"invalid_output"}
    meta = AdminClient({"bootstrap.servers": settings.bootstrap_servers}).list_topics(timeout=10).topics
    ours = {name: len(t.partitions) for name, t in meta.items() if name.startswith(settings.namespace)}
    planned = {settings.topic(t) for t in flow_topics(spec())}
    if engine == "faust":
        planned |= {changelog_topic(spec(), settings), repartition_topic(spec(), settings)}
    assert set(ours) <= planned, f"written without being created up front: {set(ours) - planned}"
    assert set(ours.values()) == {2}
