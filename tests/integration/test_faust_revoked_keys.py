"""After a rebalance a Faust worker keeps in memory the states of the devices it owns, and no others.

Worker A scores every device alone, then worker B joins the group and takes some of the input partitions (and
with them the changelog partitions, co-partitioned). A must drop the states of the devices it gave away, those it
wrote itself included (the flow writes into the table; before, only states loaded from the changelog knew their
partition, so A kept every device it had ever scored), and B must continue them from the changelog: every later
score equals what one uninterrupted worker gives. A keeps the processors of the devices it still owns: Faust's
recovery goes on from the last offset A wrote to those partitions instead of replaying them. What A holds is read
from its own log when it stops, after the later batches, so a standby copy replayed after the rebalance would show.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from connectors.kafka import KafkaSettings, read_topic
from tests.integration.test_faust_engine import log_records, start_faust, stop, tail
from tests.integration.test_sensor_flow import publish, reference, simulated, unique_scores

pytestmark = pytest.mark.integration


def _wait_for(what: str, done: Callable[[], bool], timeout: float, logs: str) -> None:
    deadline = time.monotonic() + timeout
    while not done():
        assert time.monotonic() < deadline, f"{what} did not happen within {timeout:.0f} s\n{logs}"
        time.sleep(0.2)


def _last(log: Path, msg: str) -> dict | None:
    found = [r for r in log_records(log) if r.get("msg") == msg]
    return found[-1] if found else None


def test_a_worker_drops_the_states_of_partitions_it_gave_away_and_the_new_owner_continues_them(
    kafka_settings: KafkaSettings, tmp_path: Path
) -> None:
    records, _ = simulated(devices=12, messages=480, seed=17)
    devices = {r["device_id"] for r in records}
    publish(kafka_settings, records[:240])
    log_a, log_b = tmp_path / "a.log", tmp_path / "b.log"
    a = start_faust(kafka_settings, tmp_path / "state-a", log_a)
    b = None
    try:
        assert len(unique_scores(kafka_settings, 240, timeout=120)) == 240, tail(log_a)
        restores = sum(1 for r in log_records(log_a) if r.get("msg") == "state restored from the changelog")
        b = start_faust(kafka_settings, tmp_path / "state-b", log_b)
        _wait_for("the rebalance: B assigned partitions and A's recovery done", lambda: (
            (_last(log_b, "partitions assigned") or {}).get("partitions")
            and sum(1 for r in log_records(log_a) if r.get("msg") == "state restored from the changelog") > restores
            and (_last(log_a, "partitions assigned") or {}).get("partitions") is not None
            and len(_last(log_a, "partitions assigned")["partitions"]) < kafka_settings.partitions),
            timeout=120, logs=f"A:\n{tail(log_a)}\nB:\n{tail(log_b)}")
        publish(kafka_settings, records[240:])
        scores = unique_scores(kafka_settings, len(records), timeout=120)
    finally:
        stop(a, signal.SIGTERM)
        if b is not None:
            stop(b, signal.SIGTERM)
    logs = f"A:\n{tail(log_a)}\nB:\n{tail(log_b)}"
    want = {e.record["event_id"]: e.record for e in reference(records) if e.topic == "scores.anomaly"}
    assert scores == want, "the new owner must continue each moved device's state from the changelog\n" + logs

    owned_a = set(_last(log_a, "partitions assigned")["partitions"])
    owned_b = set(_last(log_b, "partitions assigned")["partitions"])
    assert owned_a and owned_b and not owned_a & owned_b, logs
    partition_of = {m.key().decode(): f"{m.topic()}[{m.partition()}]"
                    for m in read_topic(kafka_settings, "sensor.readings", timeout=10)}
    mine = {d for d in devices if partition_of[d] in owned_a}
    assert 0 < len(mine) < len(devices), partition_of  # the split moved some devices and kept some
    restored = _last(log_a, "state restored from the changelog")
    assert restored["keys"] == len(mine), f"after the rebalance A held {restored['keys']} states\n{logs}"
    # and kept its processors: the states it wrote itself were not replayed from the changelog, one by one
    assert restored["live"] == len(mine), logs
    stopping = _last(log_a, "worker stopping")
    assert stopping is not None, logs
    assert stopping["keys"] == len(mine), f"A holds {stopping['keys']} states, owns {len(mine)} devices\n{logs}"
    assert stopping["live"] <= len(mine), logs
    assert _last(log_a, "states of partitions moved away dropped from memory") is not None, logs
