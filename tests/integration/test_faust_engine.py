"""The sensor anomaly flow on Faust, as its own process against the real broker: outputs, dead letters, SIGKILL."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from connectors.testing.alert_receiver import AlertReceiver
from connectors.dlq import dlq_info
from connectors.kafka import EventProducer, KafkaSettings, create_topics, read_topic
from schemas import ALERT, SENSOR_BATCH, AvroSerde
from streams.producers.simulator import malformed_messages
from tests.integration.test_sensor_flow import (
    ROUTING_KEY,
    flow_env,
    kill_mid_stream,
    publish,
    reference,
    simulated,
    start_notify,
    unique_scores,
)

pytestmark = pytest.mark.integration
serde = AvroSerde()


def start(module: str, args: list[str], settings: KafkaSettings, log: Path,
          receiver: AlertReceiver | None = None, env: dict[str, str] | None = None) -> subprocess.Popen:
    """A flow in its own process group (so SIGKILL takes its children too), logging to ``log``."""
    env = flow_env(settings, receiver) | {"EDDYLINE_LOG_LEVEL": "INFO"} | (env or {})  # the tests read the log
    return subprocess.Popen([sys.executable, "-m", module, *args], env=env,
                            stdout=log.open("ab"), stderr=subprocess.STDOUT, start_new_session=True)


def start_faust(settings: KafkaSettings, state: Path, log: Path, receiver: AlertReceiver | None = None,
                workers: int = 1, env: dict[str, str] | None = None) -> subprocess.Popen:
    return start("streams.engines.faust", ["anomaly", "--state-dir", str(state), "--workers", str(workers)],
                 settings, log, receiver, env)


def stop(proc: subprocess.Popen, sig: int = signal.SIGKILL) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, sig)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)


def tail(log: Path, chars: int = 3000) -> str:
    return log.read_text(errors="replace")[-chars:] if log.exists() else ""


def log_records(log: Path) -> list[dict]:
    out = []
    for line in log.read_text(errors="replace").splitlines():
        if line.startswith("{"):
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return out


def alert_ids(settings: KafkaSettings) -> set[str]:
    return {serde.decode(m.value(), ALERT)["event_id"] for m in read_topic(settings, "alerts", timeout=10)}


def score_once(settings: KafkaSettings, tmp_path: Path, devices: int, messages: int) -> tuple[list, dict, Path]:
    """Publish simulated readings, run one Faust worker until each is scored (or 90 s), stop it: the records,
    the scores by event id and the worker's log."""
    records, _ = simulated(devices=devices, messages=messages)
    publish(settings, records)
    log = tmp_path / "faust.log"
    proc = start_faust(settings, tmp_path / "state", log)
    try:
        scores = unique_scores(settings, len(records), timeout=90)
    finally:
        stop(proc, signal.SIGTERM)
    return records, scores, log


def test_faust_scores_every_reading_and_matches_the_engine_free_reference(kafka_settings, tmp_path):
    records, scores, log = score_once(kafka_settings, tmp_path, devices=4, messages=120)
    assert len(scores) == len(records), tail(log)
    expected = reference(records)
    assert scores == {e.record["event_id"]: e.record for e in expected if e.topic == "scores.anomaly"}
    want_alerts = {e.record["event_id"] for e in expected if e.topic == "alerts"}
    assert want_alerts, "the simulated anomalies should raise alerts"
    assert alert_ids(kafka_settings) == want_alerts


def test_faust_scores_what_a_silent_device_held_behind_a_lost_batch_once_it_is_idle(kafka_settings, tmp_path):
    """A device lost a batch and fell silent; the batches after the gap waited for it. Bytewax scores them once the
    key is idle; the Faust worker dropped its processor with them inside, and only when some batch arrived."""
    records, _ = simulated(devices=2, messages=12)
    quiet = records[0]["device_id"]
    lost = [r for r in records if r["device_id"] == quiet][2]
    records.remove(lost)
    publish(kafka_settings, records)
    log = tmp_path / "faust.log"
    proc = start_faust(kafka_settings, tmp_path / "state", log, env={"EDDYLINE_RUNTIME_IDLE_EVICT_S": "2"})
    try:
        scores = unique_scores(kafka_settings, len(records), timeout=90)
    finally:
        stop(proc, signal.SIGTERM)
    assert {s["source_event_id"] for s in scores.values()} == {r["event_id"] for r in records}, tail(log)


def test_faust_scores_what_a_device_silent_since_a_restart_held_behind_a_lost_batch(kafka_settings, tmp_path):
    """As above, but the worker stopped first with the waiting batches in the device's state: the restarted worker
    loads it from the changelog as bytes, and the device says nothing more. Its idle sweep flushed only processors
    that had worked, so the batches were never scored, and the retention then deleted the state with them."""
    from streams.engines.faust import changelog_topic
    from streams.flows.sensor_anomaly import sensor_anomaly_flow
    from streams.state import decode_checkpoint

    records, _ = simulated(devices=2, messages=12)
    quiet = records[0]["device_id"].encode()
    lost = [r for r in records if r["device_id"] == quiet.decode()][2]
    records.remove(lost)
    publish(kafka_settings, records)
    last = max(m.offset() for m in read_topic(kafka_settings, "sensor.readings", expected=len(records))
               if m.key() == quiet)
    raw = kafka_settings.model_copy(update={"namespace": ""})
    changelog = changelog_topic(sensor_anomaly_flow(), kafka_settings)

    def states() -> list[bytes | None]:
        return [m.value() for m in read_topic(raw, changelog, timeout=5, idle=0.5) if m.key() == quiet]

    def absorbed() -> int:
        held = states()
        return max(decode_checkpoint(held[-1])["offsets"].values()) if held and held[-1] else -1

    log = tmp_path / "faust.log"
    proc = start_faust(kafka_settings, tmp_path / "state", log)  # idle after 600 s: nothing flushed in this run
    try:
        wait_until("the quiet device's state absorbed its last batch", lambda: absorbed() == last, 90, log)
    finally:
        stop(proc, signal.SIGTERM)
    assert len(unique_scores(kafka_settings, len(records), timeout=3)) < len(records), "batches wait in the state"
    proc = start_faust(kafka_settings, tmp_path / "state", log, env={"EDDYLINE_RUNTIME_IDLE_EVICT_S": "2",
                                                                     "EDDYLINE_RUNTIME_IDLE_RETENTION_S": "3"})
    try:
        scores = unique_scores(kafka_settings, len(records), timeout=60)
        wait_until("the state's tombstone, after its flush", lambda: states()[-1] is None, 60, log)
    finally:
        stop(proc, signal.SIGTERM)
    assert {s["source_event_id"] for s in scores.values()} == {r["event_id"] for r in records}, tail(log)


def wait_until(what: str, done: Callable[[], bool], timeout: float, log: Path) -> None:
    deadline = time.monotonic() + timeout
    while not done():
        assert time.monotonic() < deadline, f"{what} did not happen within {timeout:.0f} s\n{tail(log)}"
        time.sleep(0.5)


def test_faust_dead_letters_malformed_messages_with_reason_and_goes_on(kafka_settings, tmp_path):
    records, _ = simulated(devices=2, messages=20)
    create_topics(kafka_settings, ["sensor.readings"])
    bad = malformed_messages(4)
    with EventProducer(kafka_settings) as producer:
        for i, rec in enumerate(records):
            producer.produce("sensor.readings", SENSOR_BATCH, rec, key=rec["device_id"])
            if i % 5 == 0 and bad:
                producer.produce_raw("sensor.readings", bad.pop()[1], key=rec["device_id"])
    log = tmp_path / "faust.log"
    proc = start_faust(kafka_settings, tmp_path / "state", log)
    try:
        scores = unique_scores(kafka_settings, len(records), timeout=90)
        letters = read_topic(kafka_settings, "dlq.sensor.readings", expected=4, timeout=30)
    finally:
        stop(proc, signal.SIGTERM)
    assert len(scores) == len(records), tail(log)
    assert len(letters) == 4
    for msg in letters:
        info = dlq_info(msg.headers())
        assert info["reason"] in {"undecodable", "unknown_schema"}
        assert info["error"]
        assert info["topic"] == kafka_settings.topic("sensor.readings")
        assert int(info["offset"]) >= 0


def test_faust_sigkill_restores_state_from_the_changelog_and_opens_no_duplicate_incident(
    kafka_settings, tmp_path, alert_receiver
):
    records, _ = simulated(devices=6, messages=900, seed=5)
    publish(kafka_settings, records[:300])
    state, log = tmp_path / "state", tmp_path / "faust.log"
    alert_receiver.routing_keys = frozenset({ROUTING_KEY})
    notify = start_notify(kafka_settings, alert_receiver)
    partial = kill_mid_stream(kafka_settings, records, start_faust(kafka_settings, state, log), stop)
    assert len(partial) < len(records), "the kill should land mid-stream"
    restarted = len(log_records(log))
    proc = start_faust(kafka_settings, state, log)
    expected = reference(records)
    opened = {e.record["alert_key"] for e in expected if e.topic == "alerts" and e.record["status"] == "OPENED"}
    try:
        scores = unique_scores(kafka_settings, len(records), timeout=120)
        alert_receiver.wait_for(lambda r: set(r.incidents) >= opened, timeout=60)
    finally:
        stop(proc, signal.SIGTERM)
        stop(notify)
    assert {s["source_event_id"] for s in scores.values()} == {r["event_id"] for r in records}, tail(log)
    # restored state, not a fresh detector: every score equals the uninterrupted reference
    assert scores == {e.record["event_id"]: e.record for e in expected if e.topic == "scores.anomaly"}
    restored = [r["keys"] for r in log_records(log)[restarted:] if r["msg"] == "state restored from the changelog"]
    assert restored and restored[0] == 6, tail(log)  # every device's processor came back from the changelog
    bulk = [r["keys"] for r in log_records(log)[restarted:] if r["msg"] == "changelog loaded in bulk"]
    assert bulk == [6], tail(log)  # read by the store in one pass, not replayed record by record by Faust
    written = len(read_topic(kafka_settings, "scores.anomaly", timeout=10))
    assert written < len(records) + len(partial), "the restart resumed from committed offsets, not from scratch"
    assert len(opened) >= 5
    assert set(alert_receiver.incidents) == opened  # one PagerDuty incident per anomaly, none twice
    assert alert_ids(kafka_settings) == {e.record["event_id"] for e in expected if e.topic == "alerts"}


def test_faust_starts_on_a_changelog_whose_last_batch_holds_several_records(kafka_settings, tmp_path):
    """A worker killed after its states were acknowledged and before its end markers leaves a changelog partition
    whose last batch holds several records. The embedded broker reports such a partition's end as the start of
    that batch, the store has read to the true end, and Faust's consistency check took the store for ahead of the
    topic: the next worker crashed in recovery (seen in the rebalance-window test under load)."""
    from confluent_kafka import Producer

    from connectors.kafka import logged_config, producer_config
    from streams.engines.faust import changelog_topic, ensure_topics
    from streams.flows import flow_spec

    spec = flow_spec("anomaly")
    ensure_topics(spec, kafka_settings)
    producer = Producer(logged_config(producer_config(kafka_settings, **{"linger.ms": 200})))
    topic = changelog_topic(spec, kafka_settings)
    for key in (b"gone-1", b"gone-2"):  # two batches of one record: the last batch starts past offset 1
        producer.produce(topic, key=key, value=None, partition=0)
        producer.flush()
    for i in range(4):  # then one batch of four
        producer.produce(topic, key=f"gone-{3 + i}".encode(), value=None, partition=0)
    producer.flush()
    records, scores, log = score_once(kafka_settings, tmp_path, devices=3, messages=30)
    assert "ConsistencyError" not in tail(log, 100_000)
    assert {s["source_event_id"] for s in scores.values()} == {r["event_id"] for r in records}, tail(log)
