"""Faust's rebalance window: a worker killed while a batch is in flight across a rebalance loses nothing.

During a rebalance Faust skips the events its streams receive and acknowledges them, as if processed; a
commit in that window could then move past offsets no worker has processed, and a crash makes that final.
The adapter lets only events its flow processed count as acknowledged (the bookkeeping itself is shown in
tests/unit/test_faust_ack_guard.py). Here worker A holds a batch in flight (its side sink blocks), worker B
joins the group, A lets go while the group rebalances and commits what it may, and A is killed with SIGKILL
a few seconds later; B then owns every partition. Every reading must be scored.
"""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest

from connectors.kafka import KafkaSettings
from tests.integration.test_faust_engine import log_records, start, start_faust, stop, tail
from tests.integration.test_sensor_flow import publish, simulated, unique_scores

pytestmark = pytest.mark.integration


def _wait_for(path: Path, proc, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert proc.poll() is None, "worker A exited early"
        assert time.monotonic() < deadline, f"{path.name} did not appear within {timeout:.0f} s"
        time.sleep(0.1)


def test_a_worker_killed_inside_the_rebalance_window_loses_no_reading(
    kafka_settings: KafkaSettings, tmp_path: Path
) -> None:
    records, _ = simulated(devices=6, messages=900, seed=11)
    publish(kafka_settings, records)
    log_a, log_b = tmp_path / "a.log", tmp_path / "b.log"
    a = start("tests.integration.faust_window_worker", [str(tmp_path), str(tmp_path / "state-a"), "20"],
              kafka_settings, log_a)
    b = None
    try:
        _wait_for(tmp_path / "held", a, timeout=120)
        b = start_faust(kafka_settings, tmp_path / "state-b", log_b)
        deadline = time.monotonic() + 60  # the group rebalances around A's batch in flight
        while not any(r.get("msg") == "partitions assigned" for r in log_records(log_b)) and time.monotonic() < deadline:
            time.sleep(0.2)
        (tmp_path / "release").touch()
        time.sleep(3.0)  # A drains what it holds while the group rebalances, and commits what it may
        stop(a, signal.SIGKILL)
        scores = unique_scores(kafka_settings, len(records), timeout=180)
    finally:
        stop(a, signal.SIGKILL)
        if b is not None:
            stop(b, signal.SIGTERM)
    missing = {r["event_id"] for r in records} - {s["source_event_id"] for s in scores.values()}
    assert not missing, f"{len(missing)} messages never scored\nA:\n{tail(log_a)}\nB:\n{tail(log_b)}"
