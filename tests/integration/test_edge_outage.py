"""The agent against a real broker that goes away: nothing sampled during an outage or a crash is lost."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import time
from collections import Counter
from pathlib import Path

import pytest

from benchmarks.edge import buffer_state, start_agent
from connectors.broker import EmbeddedBroker, free_port
from connectors.kafka import KafkaSettings, create_topics, read_topic
from schemas import SENSOR_BATCH, AvroSerde

pytestmark = pytest.mark.integration

RATE = 200  # readings per second, 2 sensors: one reading per sensor every 10 ms
PERIOD_MS = 10


def write_config(tmp: Path, bootstrap: str, namespace: str, **edge: object) -> Path:
    opts = {
        "device_id": "pi-test",
        "buffer_path": str(tmp / "buffer.sqlite"),
        "batch_max_age_s": 0.2,
        "send_timeout_s": 3.0,
        "heartbeat_interval_s": 1.0,
        "buffer_sync": "normal",
        **edge,
    }
    lines = ["[kafka]", f'bootstrap_servers = "{bootstrap}"', f'namespace = "{namespace}"']
    lines += ['extra = { "reconnect.backoff.max.ms" = "500" }', "[edge]"]
    lines += [f"{k} = {_toml(v)}" for k, v in opts.items()]
    lines += ["[[edge.sources]]", 'kind = "simulated"', f"rate = {RATE}", "sensors = 2", "interval_s = 0.05"]
    path = tmp / "edge.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def _toml(v: object) -> str:
    return f'"{v}"' if isinstance(v, str) else str(v).lower() if isinstance(v, bool) else str(v)


def acked(path: Path) -> int:
    depth, _, next_seq = buffer_state(path)
    return next_seq - depth


def wait_for(cond, timeout: float, what: str, agent: subprocess.Popen[bytes] | None = None, log: Path | None = None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = cond()
        if value:
            return value
        if agent is not None and agent.poll() is not None:
            pytest.fail(
                f"agent exited {agent.returncode} while waiting for {what}:\n{log.read_text()[-3000:] if log else ''}"
            )
        time.sleep(0.1)
    pytest.fail(f"timed out after {timeout}s waiting for {what}" + (f":\n{log.read_text()[-3000:]}" if log else ""))


def stop_agent(agent: subprocess.Popen[bytes], log: Path) -> None:
    agent.send_signal(signal.SIGTERM)
    try:
        rc = agent.wait(30)
    except subprocess.TimeoutExpired:
        agent.kill()
        pytest.fail(f"agent ignored SIGTERM:\n{log.read_text()[-3000:]}")
    assert rc == 0, log.read_text()[-3000:]


def decode(messages) -> list[dict]:
    serde = AvroSerde()
    return [serde.decode(m.value(), SENSOR_BATCH) for m in messages]


def check_complete(batches: list[dict], restarts: int = 0) -> tuple[dict[int, dict], int]:
    """Dedup by seq; assert no gap in seq and no missing or repeated reading. Returns (by seq, duplicates).

    Each agent restart may leave one forward jump per sensor: the time it was not running, plus the
    readings still in memory when it was killed (sampled, never sealed nor acknowledged).
    """
    by_seq: dict[int, dict] = {}
    dups = 0
    for b in batches:
        assert b["device_id"] == "pi-test"
        if b["seq"] in by_seq:
            assert by_seq[b["seq"]]["event_id"] == b["event_id"], "a retry must carry the same event id"
            assert by_seq[b["seq"]]["series"] == b["series"], "a retry must carry the same readings"
            dups += 1
        by_seq[b["seq"]] = b
    seqs = sorted(by_seq)
    assert seqs == list(range(seqs[-1] + 1)), f"sequence gaps: {sorted(set(range(seqs[-1] + 1)) - set(seqs))[:20]}"
    stamps: dict[str, list[int]] = {}
    for seq in seqs:
        for s in by_seq[seq]["series"]:
            stamps.setdefault(s["sensor"], []).extend(s["timestamps"])
    assert len(stamps) == 2
    for sensor, ts in stamps.items():
        steps = Counter(b - a for a, b in zip(ts, ts[1:]))
        # ordered by seq, every sensor's readings follow each other at the sampling period: none missing,
        # none repeated, none out of order
        jumps = {step: n for step, n in steps.items() if step != PERIOD_MS}
        assert all(step > PERIOD_MS for step in jumps), f"{sensor}: repeated or reordered readings: {jumps}"
        assert sum(jumps.values()) <= restarts, f"{sensor}: readings missing: steps {jumps} with {restarts} restarts"
    return by_seq, dups


def test_broker_outage_loses_nothing_and_keeps_order(tmp_path: Path) -> None:
    port = free_port()
    ks = KafkaSettings(bootstrap_servers=f"127.0.0.1:{port}", namespace="outage.", session_timeout_ms=6000)
    broker = EmbeddedBroker(port=port, log_path=tmp_path / "tansu1.log").start()
    log = tmp_path / "agent.log"
    agent = None
    try:
        create_topics(ks, ["sensor.readings"])
        config = write_config(tmp_path, ks.bootstrap_servers, ks.namespace, send_fresh_share=0.0)
        agent = start_agent(config, log, flush_timeout_s=10)
        wait_for(lambda: acked(tmp_path / "buffer.sqlite") >= 5, 30, "first deliveries", agent, log)

        # Freeze the agent so that what the broker has acknowledged is exactly what we read before it dies.
        agent.send_signal(signal.SIGSTOP)
        before = decode(read_topic(ks, "sensor.readings", idle=2.0))
        broker.stop()
        outage_start_ms = time.time_ns() // 1_000_000
        agent.send_signal(signal.SIGCONT)

        _, _, seq_at_stop = buffer_state(tmp_path / "buffer.sqlite")
        wait_for(
            lambda: buffer_state(tmp_path / "buffer.sqlite")[2] >= seq_at_stop + 15,
            30,
            "batches sealed during the outage",
            agent,
            log,
        )
        outage_end_ms = time.time_ns() // 1_000_000
        _, _, seq_at_restart = buffer_state(tmp_path / "buffer.sqlite")

        # Tansu keeps nothing across a restart: same port, topics recreated, empty.
        broker = EmbeddedBroker(port=port, log_path=tmp_path / "tansu2.log").start()
        create_topics(ks, ["sensor.readings"])
        wait_for(lambda: buffer_state(tmp_path / "buffer.sqlite")[0] == 0, 60, "the backlog to drain", agent, log)
        stop_agent(agent, log)
        agent = None
        after = decode(read_topic(ks, "sensor.readings", idle=1.5))
    finally:
        if agent is not None:
            agent.kill()
            agent.wait()
        broker.stop()

    assert before and after
    by_seq, _ = check_complete(before + after)
    after_seqs = {b["seq"] for b in after}
    # every batch sealed while the broker was down arrived after it came back
    outage_seqs = set(range(seq_at_stop, seq_at_restart))
    assert len(outage_seqs) >= 15 and outage_seqs <= after_seqs
    during = [
        t
        for b in by_seq.values()
        for s in b["series"]
        for t in s["timestamps"]
        if outage_start_ms <= t <= outage_end_ms
    ]
    assert len(during) > RATE  # more than a second's worth of readings was sampled during the outage
    # in order: with the fresh lane off, the topic itself carries each device's batches in seq order
    first_seen: list[int] = []
    for b in after:
        if b["seq"] not in first_seen:
            first_seen.append(b["seq"])
    assert first_seen == sorted(first_seen)
    assert "heartbeat" in log.read_text()


def test_sigkill_mid_flush_loses_no_acknowledged_reading(tmp_path: Path, broker: EmbeddedBroker) -> None:
    ks = KafkaSettings(bootstrap_servers=broker.bootstrap, namespace=f"kill{os.getpid()}.", session_timeout_ms=6000)
    create_topics(ks, ["sensor.readings"])
    buf = tmp_path / "buffer.sqlite"
    log = tmp_path / "agent.log"

    # A backlog first: the agent samples with no broker to send to.
    dead = write_config(tmp_path, f"127.0.0.1:{free_port()}", ks.namespace, batch_max_age_s=0.05)
    agent = start_agent(dead, log, flush_timeout_s=10)
    wait_for(lambda: buffer_state(buf)[0] >= 60, 30, "a backlog on disk", agent, log)
    agent.send_signal(signal.SIGKILL)
    agent.wait()

    # Drain it slowly (few batches in flight) and kill the agent while it is flushing.
    live = write_config(tmp_path, broker.bootstrap, ks.namespace, send_max_in_flight=1, batch_max_age_s=0.05)
    backlog = buffer_state(buf)[0]
    agent = start_agent(live, log, flush_timeout_s=10)
    try:
        wait_for(lambda: buffer_state(buf)[0] <= backlog - 10, 30, "the drain to start", agent, log)
        agent.send_signal(signal.SIGKILL)
        agent.wait()
        depth = buffer_state(buf)[0]
        assert depth > 0, "the backlog drained before the kill; nothing was mid-flush"
        acked_before_kill = {b["seq"] for b in decode(read_topic(ks, "sensor.readings", idle=2.0))}

        db = sqlite3.connect(buf)
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        db.close()

        agent = start_agent(live, log, flush_timeout_s=10)
        wait_for(lambda: buffer_state(buf)[0] == 0, 60, "the rest of the backlog to drain", agent, log)
        stop_agent(agent, log)
        agent = None
    finally:
        if agent is not None:
            agent.kill()
            agent.wait()
    batches = decode(read_topic(ks, "sensor.readings", idle=1.5))
    by_seq, dups = check_complete(batches, restarts=2)
    assert acked_before_kill <= set(by_seq)
    assert len(by_seq) > len(acked_before_kill)


def test_fresh_readings_are_not_starved_by_a_backlog(tmp_path: Path, broker: EmbeddedBroker) -> None:
    from edge_agent.batching import BatchEncoder
    from edge_agent.buffer import DiskBuffer
    from edge_agent.sources import Chunk

    ks = KafkaSettings(bootstrap_servers=broker.bootstrap, namespace=f"fresh{os.getpid()}.", session_timeout_ms=6000)
    create_topics(ks, ["sensor.readings"])
    # An hour-old backlog of 1500 batches, as after a long outage.
    buf = DiskBuffer(tmp_path / "buffer.sqlite", "pi-test", min_free_bytes=0, sync="normal")
    enc = BatchEncoder("pi-test", "test", ks.topic("sensor.readings"))
    old = time.time_ns() // 1_000_000 - 3_600_000
    for i in range(1500):
        seq = buf.next_seq
        buf.append(seq, enc.encode(seq, [Chunk("backlog", None, [old + i], [float(i)])]), 1, old + i)
    buf.close()

    log = tmp_path / "agent.log"
    config = write_config(tmp_path, broker.bootstrap, ks.namespace, send_max_in_flight=4, send_fresh_share=0.5)
    agent = start_agent(config, log, flush_timeout_s=10)
    try:
        wait_for(lambda: buffer_state(tmp_path / "buffer.sqlite")[0] == 0, 60, "the backlog to drain", agent, log)
        stop_agent(agent, log)
        agent = None
    finally:
        if agent is not None:
            agent.kill()
            agent.wait()
    order = [b["seq"] for b in decode(read_topic(ks, "sensor.readings", idle=1.5))]
    assert set(order) == set(range(max(order) + 1))
    fresh = [i for i, seq in enumerate(order) if seq >= 1500]
    last_backlog = max(i for i, seq in enumerate(order) if seq < 1500)
    assert fresh, "no batch was sampled during the drain"
    assert fresh[0] < last_backlog, "fresh batches waited for the whole backlog"
    assert order[: len(order) // 4] != sorted(order[: len(order) // 4])  # the two lanes interleaved
