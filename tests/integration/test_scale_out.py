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
from tests.integration.test_sensor_flow import publish, reference, simulated, unique_scores

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


def serve(engine: str, workers: int, state_dir: str, seen: str) -> None:
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
                        epoch_interval=timedelta(seconds=0.5))
    except KeyboardInterrupt:
        pass


def start(engine: str, workers: int, settings: KafkaSettings, tmp: Path) -> subprocess.Popen:
    env = {**os.environ, "EDDYLINE_KAFKA_BOOTSTRAP_SERVERS": settings.bootstrap_servers,
           "EDDYLINE_KAFKA_NAMESPACE": settings.namespace, "EDDYLINE_KAFKA_PARTITIONS": str(PARTITIONS),
           "EDDYLINE_KAFKA_SESSION_TIMEOUT_MS": str(settings.session_timeout_ms), "EDDYLINE_LOG_LEVEL": "INFO"}
    code = (f"from tests.integration.test_scale_out import serve; "
            f"serve({engine!r}, {workers}, {str(tmp / 'state')!r}, {str(tmp / 'seen.txt')!r})")
    return subprocess.Popen([sys.executable, "-c", code], env=env, cwd=Path(__file__).parents[2],
                            stdout=(tmp / "flow.log").open("ab"), stderr=subprocess.STDOUT, start_new_session=True)


def keys_by_pid(path: Path) -> dict[int, set[str]]:
    out: dict[int, set[str]] = {}
    for line in path.read_text().splitlines():
        pid, key = line.split(" ", 1)
        out.setdefault(int(pid), set()).add(key)
    return out


@pytest.mark.parametrize("engine", ["bytewax", "faust"])
def test_two_workers_split_the_work_and_give_the_outputs_of_one(engine, kafka_settings, tmp_path):
    settings = kafka_settings.model_copy(update={"partitions": PARTITIONS})
    records, _ = simulated(devices=6, messages=240, seed=11)
    publish(settings, records)
    proc = start(engine, 2, settings, tmp_path)
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
