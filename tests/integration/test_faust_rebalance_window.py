"""Faust's rebalance window: a worker killed while a batch is in flight across a rebalance loses nothing.

During a rebalance Faust skips the events its streams receive and acknowledges them, as if processed; a
commit in that window could then move past offsets no worker has processed, and a crash makes that final.
The adapter lets only events its flow processed count as acknowledged (the bookkeeping itself is shown in
tests/unit/test_faust_ack_guard.py). Here worker A holds a batch in flight (its side sink blocks), worker B
joins the group, A lets go while the group rebalances (A's heartbeats are refused: "rebalancing") and commits
what it may, and A is killed with SIGKILL once the group has committed past where it stood at the release;
B then owns every partition. Every reading must be scored.

The group cannot finish rebalancing while A holds its batch, so every wait is for the event itself (the
rebalance under way, B's assignment, a commit), never a fixed sleep.
"""

from __future__ import annotations

import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from connectors.kafka import KafkaSettings
from connectors.lag import LagReader
from streams.engines.faust import app_id
from streams.flows import flow_spec
from tests.integration.test_faust_engine import log_records, start, start_faust, stop, tail
from tests.integration.test_sensor_flow import publish, simulated, unique_scores

pytestmark = pytest.mark.integration


def _wait_for(what: str, done: Callable[[], bool], proc: subprocess.Popen, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not done():
        assert proc.poll() is None, f"worker A exited before {what}"
        assert time.monotonic() < deadline, f"{what} did not happen within {timeout:.0f} s"
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
    group, source = app_id(flow_spec("anomaly"), kafka_settings), kafka_settings.topic("sensor.readings")
    lag = LagReader(kafka_settings)
    try:
        _wait_for("A holding its batch", (tmp_path / "held").exists, a, timeout=120)
        b = start_faust(kafka_settings, tmp_path / "state-b", log_b)
        _wait_for("a rebalance around A's batch", lambda: "because it is rebalancing" in tail(log_a, 100_000), a,
                  timeout=120)
        at_release = lag.committed(group, lag.partitions([source]))
        (tmp_path / "release").touch()
        _wait_for("B's assignment", lambda: any(r.get("msg") == "partitions assigned" for r in log_records(log_b)),
                  a, timeout=60)
        _wait_for("a commit after the release", lambda: any(
            (now or -1) > (at_release.get(tp) or -1) for tp, now in lag.committed(group, at_release).items()),
                  a, timeout=60)
        stop(a, signal.SIGKILL)
        scores = unique_scores(kafka_settings, len(records), timeout=180)
    finally:
        lag.close()
        stop(a, signal.SIGKILL)
        if b is not None:
            stop(b, signal.SIGTERM)
    missing = {r["event_id"] for r in records} - {s["source_event_id"] for s in scores.values()}
    assert not missing, f"{len(missing)} messages never scored\nA:\n{tail(log_a)}\nB:\n{tail(log_b)}"
