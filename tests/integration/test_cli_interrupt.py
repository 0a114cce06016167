"""Ctrl-C stops a running flow as its operator expects: one line that says where its state is, no backtrace."""

from __future__ import annotations

import itertools
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from connectors.kafka import KafkaSettings
from streams.producers.simulator import SensorSimulator
from tests.integration.test_sensor_flow import flow_env, publish, stop, unique_scores

pytestmark = pytest.mark.integration


def test_ctrl_c_stops_a_bytewax_flow_with_where_its_state_is_not_a_backtrace(kafka_settings: KafkaSettings,
                                                                              tmp_path: Path) -> None:
    """Bytewax re-raises the KeyboardInterrupt as its own runtime error: the flow ended in a Rust panic and a
    Python backtrace, exit 1, where `eddyline run` meant to say "stopped; state kept in ..."."""
    publish(kafka_settings, list(itertools.islice(SensorSimulator(devices=2, readings_per_message=20, seed=3), 4)))
    state = tmp_path / "state"
    proc = subprocess.Popen([sys.executable, "-m", "streams.cli", "run", "anomaly", "--state-dir", str(state)],
                            env=flow_env(kafka_settings), stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        assert unique_scores(kafka_settings, 1, timeout=120), stop(proc)  # the dataflow runs
        proc.send_signal(signal.SIGINT)
        out = proc.communicate(timeout=60)[0].decode(errors="replace")
    finally:
        stop(proc)
    assert proc.returncode == 0, out[-3000:]
    assert f"sensor-anomaly stopped; state kept in {state}" in out
    assert "Traceback" not in out and "BytewaxRuntimeError" not in out, out[-3000:]
