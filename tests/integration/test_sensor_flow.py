"""The sensor anomaly flow through the real broker, as its own process, like production runs it."""

from __future__ import annotations

import itertools
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from connectors.testing.alert_receiver import AlertReceiver
from connectors.dlq import dlq_info
from connectors.kafka import EventProducer, KafkaSettings, create_topics, read_topic
from schemas import ALERT, ANOMALY_SCORE, SENSOR_BATCH, AvroSerde
from streams.processor import Event, run_local
from streams.flows.sensor_anomaly import sensor_anomaly_flow
from streams.producers.simulator import SensorSimulator, malformed_messages
from tests.fixtures.emits import plain

pytestmark = pytest.mark.integration
ROUTING_KEY = "0123456789abcdef0123456789abcdef"
serde = AvroSerde()


def flow_env(settings: KafkaSettings, receiver: AlertReceiver | None = None) -> dict[str, str]:
    """The environment a flow process gets: this test's broker and namespace, and the loopback PagerDuty
    (which only the notify flow calls)."""
    env = {
        **os.environ,
        "EDDYLINE_KAFKA_BOOTSTRAP_SERVERS": settings.bootstrap_servers,
        "EDDYLINE_KAFKA_NAMESPACE": settings.namespace,
        "EDDYLINE_KAFKA_SESSION_TIMEOUT_MS": str(settings.session_timeout_ms),
        "EDDYLINE_RUNTIME_EPOCH_INTERVAL_S": "0.5",
    }
    if receiver is not None:
        env |= {"EDDYLINE_PAGERDUTY_ROUTING_KEY": ROUTING_KEY, "EDDYLINE_PAGERDUTY_URL": receiver.pagerduty_url,
                "EDDYLINE_PAGERDUTY_CA_FILE": str(receiver.ca_file), "EDDYLINE_PAGERDUTY_BACKOFF": "0.05"}
    return env


def start_flow(settings: KafkaSettings, state_dir: Path, receiver: AlertReceiver | None = None,
               **env: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "streams.cli", "run", "anomaly", "--state-dir", str(state_dir)],
        env=flow_env(settings, receiver) | env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def start_notify(settings: KafkaSettings, receiver: AlertReceiver) -> subprocess.Popen:
    """The notify flow, which delivers the scoring flows' alerts to the loopback PagerDuty."""
    env = flow_env(settings, receiver) | {"EDDYLINE_NOTIFY_BACKOFF_S": "0.05", "EDDYLINE_NOTIFY_BREAKER_RESET_S": "1"}
    return subprocess.Popen([sys.executable, "-m", "streams.cli", "run", "notify"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)


def stop(proc: subprocess.Popen) -> str:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
    out, _ = proc.communicate(timeout=30)
    return out.decode(errors="replace")[-3000:]


def publish(settings: KafkaSettings, records: list[dict]) -> None:
    create_topics(settings, ["sensor.readings"])
    with EventProducer(settings) as producer:
        for rec in records:
            producer.produce("sensor.readings", SENSOR_BATCH, rec, key=rec["device_id"])


def unique_scores(settings: KafkaSettings, expected: int, timeout: float) -> dict[str, dict]:
    """Score events by event id (sinks may see a replayed epoch twice), once ``expected`` distinct ones came."""
    deadline = time.monotonic() + timeout
    seen: dict[str, dict] = {}
    while time.monotonic() < deadline:
        for msg in read_topic(settings, "scores.anomaly", timeout=5, idle=0.5):
            rec = serde.decode(msg.value(), ANOMALY_SCORE)
            seen[rec["event_id"]] = rec
        if len(seen) >= expected:
            break
        time.sleep(0.5)
    return seen


def kill_mid_stream(settings: KafkaSettings, records: list[dict], proc: subprocess.Popen,
                    kill: Callable[[subprocess.Popen], object], chunk: int = 20) -> dict[str, dict]:
    """With ``records[:300]`` published and the flow running, publish the rest and SIGKILL the flow while
    input is still arriving (no chance to checkpoint, commit or flush); the scores that came out before."""
    rest = threading.Thread(target=lambda: [publish(settings, records[i:i + chunk]) or time.sleep(0.05)
                                            for i in range(300, len(records), chunk)])
    try:
        unique_scores(settings, 200, timeout=90)
        rest.start()
        time.sleep(0.7)
        kill(proc)
        return unique_scores(settings, len(records), timeout=1)
    finally:
        kill(proc)
        if rest.ident is not None:
            rest.join()


def simulated(devices: int, messages: int, seed: int = 3) -> tuple[list[dict], SensorSimulator]:
    sim = SensorSimulator(devices=devices, readings_per_message=40, anomaly_rate=0.004, seed=seed)
    return list(itertools.islice(sim, messages)), sim


def fleet(devices: int, chatty: int, chatty_messages: int, seed: int) -> list[dict]:
    """One batch from each of ``devices``, then ``chatty`` of them go on long enough to pass the alert warm-up."""
    records, sim = simulated(devices, devices, seed)
    for _ in range(chatty_messages - 1):
        records += [sim.batch(d) for d in sim.devices[:chatty]]
    return records


def reference(records: list[dict], detector: str | None = None) -> list:
    """What the flow emits for ``records`` without an engine, arrays as lists (as a consumer decodes them)."""
    spec = sensor_anomaly_flow(detector) if detector else sensor_anomaly_flow()
    return plain(run_local(spec, [Event("sensor.readings", r["device_id"], r) for r in records]))


def test_flow_scores_every_reading_and_matches_the_engine_free_reference(kafka_settings, tmp_path):
    records, _ = simulated(devices=4, messages=120)
    publish(kafka_settings, records)
    proc = start_flow(kafka_settings, tmp_path / "state")
    try:
        scores = unique_scores(kafka_settings, len(records), timeout=90)
    finally:
        log = stop(proc)
    assert len(scores) == len(records), log
    expected = reference(records)
    want_scores = {e.record["event_id"]: e.record for e in expected if e.topic == "scores.anomaly"}
    assert scores == want_scores
    alerts = {serde.decode(m.value(), ALERT)["event_id"] for m in read_topic(kafka_settings, "alerts", timeout=10)}
    want_alerts = {e.record["event_id"] for e in expected if e.topic == "alerts"}
    assert want_alerts, "the simulated anomalies should raise alerts"
    assert alerts == want_alerts


def test_malformed_messages_go_to_the_dlq_with_reason_and_the_flow_goes_on(kafka_settings, tmp_path):
    records, _ = simulated(devices=2, messages=20)
    create_topics(kafka_settings, ["sensor.readings"])
    bad = malformed_messages(4)
    with EventProducer(kafka_settings) as producer:
        for i, rec in enumerate(records):
            producer.produce("sensor.readings", SENSOR_BATCH, rec, key=rec["device_id"])
            if i % 5 == 0 and bad:
                producer.produce_raw("sensor.readings", bad.pop()[1], key=rec["device_id"])
    proc = start_flow(kafka_settings, tmp_path / "state")
    try:
        scores = unique_scores(kafka_settings, len(records), timeout=90)
        letters = read_topic(kafka_settings, "dlq.sensor.readings", expected=4, timeout=30)
    finally:
        log = stop(proc)
    assert len(scores) == len(records), log
    assert len(letters) == 4
    for msg in letters:
        info = dlq_info(msg.headers())
        assert info["reason"] in {"undecodable", "unknown_schema"}
        assert info["error"]
        assert info["topic"] == kafka_settings.topic("sensor.readings")
        assert int(info["offset"]) >= 0


@pytest.mark.parametrize(("records", "detector", "buckets", "linger"), [
    (lambda: simulated(devices=6, messages=900, seed=5)[0], None, "0", "0"),
    (lambda: simulated(devices=6, messages=900, seed=5)[0], None, "4", "0"),
    # the source holding each poll's messages 50 ms: what it holds at a checkpoint is read again after the kill
    (lambda: simulated(devices=6, messages=900, seed=5)[0], None, "4", "50"),
    # a fleet: 5,000 devices' states checkpointed and restored (gauss: the cheapest detector, to stay under 2 min)
    (lambda: fleet(devices=5000, chatty=10, chatty_messages=20, seed=5), "gauss", "1024", "0"),
], ids=["6-devices", "6-devices-4-buckets", "6-devices-4-buckets-linger", "5000-devices-1024-buckets"])
def test_sigkill_mid_stream_loses_no_reading_and_opens_no_duplicate_incident(
        kafka_settings, tmp_path, alert_receiver, records, detector, buckets, linger):
    records = records()
    env = {"EDDYLINE_RUNTIME_STATE_BUCKETS": buckets, "EDDYLINE_RUNTIME_POLL_LINGER_MS": linger} | (
        {"EDDYLINE_RUNTIME_DETECTOR": detector} if detector else {})
    publish(kafka_settings, records[:300])
    state = tmp_path / "state"
    alert_receiver.routing_keys = frozenset({ROUTING_KEY})
    notify = start_notify(kafka_settings, alert_receiver)
    partial = kill_mid_stream(kafka_settings, records, start_flow(kafka_settings, state, **env), stop,
                              chunk=max(20, len(records) // 40))
    assert len(partial) < len(records), "the kill should land mid-stream"
    proc = start_flow(kafka_settings, state, **env)
    try:
        scores = unique_scores(kafka_settings, len(records), timeout=120)
        expected = reference(records, detector)
        opened = {e.record["alert_key"] for e in expected if e.topic == "alerts" and e.record["status"] == "OPENED"}
        alert_receiver.wait_for(lambda r: set(r.incidents) >= opened, timeout=60)
    finally:
        log = stop(proc)
        log += stop(notify)
    assert {s["source_event_id"] for s in scores.values()} == {r["event_id"] for r in records}, log
    assert sum(len(s["scores"]) for rec in scores.values() for s in rec["series"]) == sum(
        len(s["values"]) for r in records for s in r["series"])
    assert len(opened) >= 5
    assert set(alert_receiver.incidents) == opened  # one PagerDuty incident per anomaly, none twice


def evicted_keys(path: Path) -> set[str]:
    """The keys in one process's idle store (read-only; none before its first eviction)."""
    from streams.state import decode_checkpoint

    if not path.exists():
        return set()
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30)
    try:
        return {decode_checkpoint(blob)["key"] for (blob,) in db.execute("SELECT state FROM idle")}
    except sqlite3.OperationalError:  # the table is not there before the first eviction
        return set()
    finally:
        db.close()


@pytest.mark.parametrize("buckets", ["0", "2"], ids=["one-key-per-device", "2-buckets"])
def test_an_idle_device_leaves_memory_and_its_state_comes_back_exactly(kafka_settings, tmp_path, buckets):
    from streams.engines.bytewax import idle_path

    records, _ = simulated(devices=3, messages=90, seed=8)
    publish(kafka_settings, records[:45])
    state = tmp_path / "state"
    proc = start_flow(kafka_settings, state, EDDYLINE_RUNTIME_IDLE_EVICT_S="1",
                      EDDYLINE_RUNTIME_STATE_BUCKETS=buckets)
    try:
        assert len(unique_scores(kafka_settings, 45, timeout=90)) == 45
        deadline = time.monotonic() + 60
        evicted: set[str] = set()
        while time.monotonic() < deadline and len(evicted) < 3:
            time.sleep(0.5)
            evicted = evicted_keys(idle_path(state))
        publish(kafka_settings, records[45:])
        scores = unique_scores(kafka_settings, len(records), timeout=90)
    finally:
        log = stop(proc)
    assert evicted == {r["device_id"] for r in records}, log
    want = {e.record["event_id"]: e.record for e in reference(records) if e.topic == "scores.anomaly"}
    assert scores == want, "a device reloaded after eviction must score as if it had never left"


def _versions_per_device(path: Path) -> dict[str, int]:
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30)
    try:
        return dict(db.execute("SELECT key, COUNT(*) FROM versions GROUP BY key").fetchall())
    except sqlite3.OperationalError:
        return {}
    finally:
        db.close()


def test_replaced_state_versions_go_once_bytewax_has_committed_past_them(kafka_settings, tmp_path):
    # Versions replaced while the flow runs are deleted as its resume epoch moves on (0.5 s epochs here), well
    # before the 60 s a time-based grace kept them (which left 3 for a device here once, when the newest
    # version was written only by the next epoch's snapshot), and a SIGKILL after that resumes every device
    # exactly: nothing a restart still needs was deleted. Since states are written in the background, an idle
    # flow keeps per device the newest version (written at once), the one its checkpoint refers to, and at most
    # one replaced version, deleted when a later snapshot reads that Bytewax's resume epoch has passed it.
    from streams.engines.bytewax import idle_path

    records, _ = simulated(devices=3, messages=150, seed=6)
    state = tmp_path / "state"
    proc = start_flow(kafka_settings, state, EDDYLINE_RUNTIME_STATE_BUCKETS="4")
    try:
        for wave in range(8):  # each device changes in many epochs, so many versions get replaced
            publish(kafka_settings, records[wave * 15:(wave + 1) * 15])
            assert len(unique_scores(kafka_settings, (wave + 1) * 15, timeout=90)) == (wave + 1) * 15
            time.sleep(2.0)  # a few epochs: this wave's versions are written and referenced, the last ones replaced
        deadline = time.monotonic() + 20  # a third of the old grace
        counts = _versions_per_device(idle_path(state))
        while time.monotonic() < deadline and not (counts and max(counts.values()) <= 3):
            time.sleep(0.5)
            counts = _versions_per_device(idle_path(state))
    finally:
        log = stop(proc)
    assert counts and max(counts.values()) <= 3, (counts, log)
    proc = start_flow(kafka_settings, state, EDDYLINE_RUNTIME_STATE_BUCKETS="4")
    try:
        publish(kafka_settings, records[120:])
        scores = unique_scores(kafka_settings, len(records), timeout=90)
    finally:
        log = stop(proc)
    want = {e.record["event_id"]: e.record for e in reference(records) if e.topic == "scores.anomaly"}
    assert scores == want, log


def test_a_checkpoint_moves_between_state_layouts_and_every_device_scores_on_exactly(kafka_settings, tmp_path):
    """One key per device, then 4 buckets, then 3 buckets, then one key per device again, on one state folder:
    each restart moves the states it finds in the other layout and no device relearns."""
    records, _ = simulated(devices=5, messages=100, seed=4)
    state = tmp_path / "state"
    done = 0
    for buckets, upto in [("0", 25), ("4", 50), ("3", 75), ("0", 100)]:
        publish(kafka_settings, records[done:upto])
        proc = start_flow(kafka_settings, state, EDDYLINE_RUNTIME_STATE_BUCKETS=buckets,
                          EDDYLINE_RUNTIME_IDLE_EVICT_S="0")
        try:
            scores = unique_scores(kafka_settings, upto, timeout=90)
            time.sleep(1.5)  # an epoch (0.5 s) after the last output: its state is checkpointed
        finally:
            log = stop(proc)
        assert len(scores) == upto, log
        assert "refused" not in log, log
        done = upto
    want = {e.record["event_id"]: e.record for e in reference(records) if e.topic == "scores.anomaly"}
    assert scores == want, "a device whose state moved to another layout must score as if it had not"
