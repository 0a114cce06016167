"""Two workers split the work and give the same outputs as one: Bytewax with 2 processes, Faust with 2 workers.

Each worker process gets a side sink that notes which device keys it scored, so the test sees the split
itself, not only the outputs. The topic has 4 partitions and the 6 simulated devices land in all of them.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import pytest

from connectors.kafka import KafkaSettings
from streams.processor import Emit
from tests.integration.test_faust_engine import alert_ids, log_records, stop, tail
from tests.integration.test_sensor_flow import evicted_keys, publish, reference, simulated, unique_scores

pytestmark = pytest.mark.integration
PARTITIONS = 4


class KeysSeen:
    """Side sink: one line per scored batch, ``PID KEY``."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def write(self, emits: Sequence[Emit]) -> None:
        lines = "".join(f"{os.getpid()} {e.key}\n" for e in emits if e.topic == "scores.anomaly")
        with self.path.open("a") as f:
            f.write(lines)

    def close(self) -> None:
        return None


def serve(engine: str, workers: int, state_dir: str, seen: str, idle_s: float | None = None,
          buckets: int = 0) -> None:
    """Run the sensor flow with the ``KeysSeen`` sink (in a child process started by the tests)."""
    from streams import logs
    from streams.flows.sensor_anomaly import sensor_anomaly_flow

    logs.setup()
    spec = sensor_anomaly_flow(sinks=[lambda: KeysSeen(Path(seen))])
    settings = KafkaSettings()
    try:
        if engine == "faust":
            from streams.engines.faust import run

            run(spec, settings, state_dir=Path(state_dir), workers=workers, loglevel="INFO")
        else:
            from datetime import timedelta

            from streams.engines.bytewax_cluster import run_cluster

            run_cluster(spec, settings, processes=workers, state_dir=Path(state_dir),
                        epoch_interval=timedelta(seconds=0.5),
                        idle_after=timedelta(seconds=idle_s) if idle_s else timedelta(minutes=10), buckets=buckets)
    except KeyboardInterrupt:
        pass


def start(engine: str, workers: int, settings: KafkaSettings, tmp: Path, idle_s: float | None = None,
          buckets: int = 0) -> subprocess.Popen:
    env = {**os.environ, "EDDYLINE_KAFKA_BOOTSTRAP_SERVERS": settings.bootstrap_servers,
           "EDDYLINE_KAFKA_NAMESPACE": settings.namespace, "EDDYLINE_KAFKA_PARTITIONS": str(PARTITIONS),
           "EDDYLINE_KAFKA_SESSION_TIMEOUT_MS": str(settings.session_timeout_ms), "EDDYLINE_LOG_LEVEL": "INFO"}
    code = (f"from tests.integration.test_scale_out import serve; "
            f"serve({engine!r}, {workers}, {str(tmp / 'state')!r}, {str(tmp / 'seen.txt')!r}, {idle_s!r}, {buckets})")
    return subprocess.Popen([sys.executable, "-c", code], env=env, cwd=Path(__file__).parents[2],
                            stdout=(tmp / "flow.log").open("ab"), stderr=subprocess.STDOUT, start_new_session=True)


def keys_by_pid(path: Path) -> dict[int, set[str]]:
    out: dict[int, set[str]] = {}
    for line in path.read_text().splitlines():
        pid, key = line.split(" ", 1)
        out.setdefault(int(pid), set()).add(key)
    return out


@pytest.mark.parametrize(("engine", "buckets"), [("bytewax", 0), ("bytewax", 16), ("faust", 0)],
                         ids=["bytewax", "bytewax-16-buckets", "faust"])
def test_two_workers_split_the_work_and_give_the_outputs_of_one(engine, buckets, kafka_settings, tmp_path):
    settings = kafka_settings.model_copy(update={"partitions": PARTITIONS})
    records, _ = simulated(devices=6, messages=240, seed=11)
    publish(settings, records)
    proc = start(engine, 2, settings, tmp_path, buckets=buckets)
    try:
        scores = unique_scores(settings, len(records), timeout=120)
    finally:
        stop(proc, signal.SIGTERM)
    log = tmp_path / "flow.log"
    expected = reference(records)  # what one worker gives (test_sensor_flow, test_faust_engine)
    assert scores == {e.record["event_id"]: e.record for e in expected if e.topic == "scores.anomaly"}, tail(log)
    assert alert_ids(settings) == {e.record["event_id"] for e in expected if e.topic == "alerts"}

    seen = keys_by_pid(tmp_path / "seen.txt")
    assert len(seen) == 2, f"both worker processes should score devices: {seen}\n{tail(log)}"
    assert set().union(*seen.values()) == {r["device_id"] for r in records}
    if engine == "faust":  # the group's final assignment: each input partition on exactly one worker
        last: dict[int, list[str]] = {}
        for rec in log_records(log):
            if rec["msg"] == "partitions assigned":
                last[rec["worker_pid"]] = rec["partitions"]
        owned = [p for parts in last.values() for p in parts]
        assert len(last) == 2 and all(last.values()), last
        assert sorted(owned) == sorted(f"{settings.topic('sensor.readings')}[{p}]" for p in range(PARTITIONS))
    else:  # Bytewax routes each key to one worker
        pids = list(seen)
        assert not seen[pids[0]] & seen[pids[1]], seen


@pytest.mark.parametrize("buckets", [0, 16], ids=["one-key-per-device", "16-buckets"])
def test_a_bytewax_cluster_evicts_idle_devices_and_scores_them_as_if_they_never_left(kafka_settings, tmp_path, buckets):
    import time

    from streams.engines.bytewax import idle_path

    settings = kafka_settings.model_copy(update={"partitions": PARTITIONS})
    records, _ = simulated(devices=6, messages=120, seed=12)
    publish(settings, records[:60])
    proc = start("bytewax", 2, settings, tmp_path, idle_s=1.0, buckets=buckets)
    evicted: list[set[str]] = [set(), set()]
    try:
        assert len(unique_scores(settings, 60, timeout=120)) == 60, tail(tmp_path / "flow.log")
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and len(evicted[0] | evicted[1]) < 6:
            time.sleep(0.5)
            evicted = [evicted_keys(idle_path(tmp_path / "state", i)) for i in (0, 1)]
        publish(settings, records[60:])
        scores = unique_scores(settings, len(records), timeout=120)
    finally:
        stop(proc, signal.SIGTERM)
    assert all(evicted), evicted  # each process evicted its own devices into its own file
    assert evicted[0] | evicted[1] == {r["device_id"] for r in records}, tail(tmp_path / "flow.log")
    want = {e.record["event_id"]: e.record for e in reference(records) if e.topic == "scores.anomaly"}
    assert scores == want, "devices reloaded after eviction must score as if they had never left"
