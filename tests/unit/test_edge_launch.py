"""``run`` hands validated settings to the lean runtime: nothing is lost on the way."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

from connectors.kafka import KafkaSettings
from edge_agent.launch import plan, producer_conf
from edge_agent.runner import namespace
from edge_agent.settings import EdgeSettings, PluginSource, ProcSource


def test_plan_round_trips_into_plain_settings(tmp_path: Path, defaults_config: Path) -> None:
    edge = EdgeSettings(
        device_id="jetson-3",
        buffer_path=tmp_path / "b.sqlite",
        sources=[
            ProcSource(kind="proc", interval_s=2.0),
            PluginSource(kind="plugin", name="bme", target="x:Y", options={"bus": 1, "addr": {"hex": "0x76"}}),
        ],
    )
    kafka = KafkaSettings(
        bootstrap_servers="10.0.0.5:9093", namespace="site1.", extra={"reconnect.backoff.max.ms": "900"}
    )
    p = plan(edge, kafka)
    s = namespace(p["edge"])
    assert s.device_id == "jetson-3" and Path(s.buffer_path) == tmp_path / "b.sqlite"
    assert s.sources[0].kind == "proc" and s.sources[0].interval_s == 2.0
    assert s.sources[1].options == {"bus": 1, "addr": {"hex": "0x76"}}  # a plug-in's options stay a mapping
    assert s.inference.enabled is False
    assert p["topic"] == "site1.sensor.readings"
    conf = p["producer"]
    assert "logger" not in conf  # objects cannot cross exec
    assert conf["enable.idempotence"] is True and conf["acks"] == "all"
    assert conf["reconnect.backoff.max.ms"] == "900"  # the operator's extra wins over the agent's default
    assert producer_conf(edge, KafkaSettings())["reconnect.backoff.max.ms"] == 5000


_RUN = """
import os, sys
from edge_agent.runner import main
r, w = os.pipe()
os.write(w, sys.argv[1].encode())
os.close(w)
sys.exit(main(["--plan-fd", str(r), "--duration", "0.1"]))
"""


def test_a_kafka_property_librdkafka_refuses_stops_the_runner_with_what_to_fix(tmp_path: Path) -> None:
    """``check-config`` cannot see a typo in ``[kafka] extra``; ``run`` was a traceback and an exit systemd retries."""
    edge = EdgeSettings(device_id="pi", buffer_path=tmp_path / "b.sqlite", sources=[{"kind": "simulated"}])
    kafka = KafkaSettings(bootstrap_servers="127.0.0.1:1", extra={"linger.msx": "5"})
    done = subprocess.run([sys.executable, "-c", _RUN, json.dumps(plan(edge, kafka))], capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
    assert "linger.msx" in done.stderr and "[kafka] extra" in done.stderr


_ON_A_FULL_DISK = """
import os, sqlite3, sys
from edge_agent.buffer import DiskBuffer
def full(self, *args):
    raise sqlite3.OperationalError("database or disk is full")
DiskBuffer._prepare = full
from edge_agent.runner import main
r, w = os.pipe()
os.write(w, sys.argv[1].encode())
os.close(w)
sys.exit(main(["--plan-fd", str(r)]))
"""


def test_ctrl_c_while_the_runner_waits_for_disk_room_ends_without_a_traceback(tmp_path: Path) -> None:
    edge = EdgeSettings(device_id="pi", buffer_path=tmp_path / "b.sqlite", sources=[{"kind": "simulated"}])
    the_plan = json.dumps(plan(edge, KafkaSettings(bootstrap_servers="127.0.0.1:1")))
    proc = subprocess.Popen([sys.executable, "-c", _ON_A_FULL_DISK, the_plan], stderr=subprocess.PIPE, text=True)
    try:
        waiting = proc.stderr.readline()  # type: ignore[union-attr]
        assert "disk full" in waiting, waiting
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 130 and "Traceback" not in err and "run it again" in err, err
