"""Three real agent processes publish device.health to the real broker; the fleet flow runs as a process.

One agent is killed: a silent-device alert opens on the alerts topic (what the notify flow delivers), and it
resolves with the same key when the agent comes back. The fleet state reaches the time-series store, and
``edge status`` shows the stopped device as silent while it is away.
"""

from __future__ import annotations

import os
import re
import signal
import time
from pathlib import Path

import pytest

from benchmarks.edge import start_agent
from connectors.kafka import KafkaSettings, create_topics, read_topic
from schemas import ALERT, AvroSerde
from typer.testing import CliRunner

from streams.cli import app
from streams.cli.edge import fleet_status
from tests.fixtures.topic_reader import TopicReader
from tests.integration.test_edge_outage import write_config
from tests.integration.test_mlops_flows import logs, start, stop
from tests.fixtures.config import empty_config

pytestmark = pytest.mark.integration

DEVICES = ("pi-1", "pi-2", "pi-3")
serde = AvroSerde()


def fleet_alerts(settings: KafkaSettings) -> list[dict]:
    return [serde.decode(m.value(), ALERT) for m in read_topic(settings, "alerts", timeout=5, idle=0.5)]


def wait_alert(settings: KafkaSettings, status: str, tmp: Path, timeout: float = 90.0) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = [a for a in fleet_alerts(settings)
                 if a["source"] == "fleet" and a["entity"] == "pi-2" and a["status"] == status]
        if found:
            return found[0]
        time.sleep(0.5)
    pytest.fail(f"no {status} silent-device alert for pi-2 in {timeout:.0f} s\n{logs(tmp)}")


def test_a_stopped_agent_opens_a_silent_alert_that_resolves_when_it_returns(
        kafka_settings: KafkaSettings, tmp_path: Path, victoria) -> None:
    create_topics(kafka_settings, ["sensor.readings", "device.health", "dlq.device.health", "alerts"])
    influx = victoria.influx_settings("fleet")
    flow = start("fleet", kafka_settings, tmp_path, EDDYLINE_FLEET_SILENT_AFTER_S="4",
                 EDDYLINE_INFLUX_URL=influx.url, EDDYLINE_INFLUX_TOKEN="test-token", EDDYLINE_INFLUX_BUCKET="fleet",
                 EDDYLINE_INFLUX_FLUSH_INTERVAL_MS="100", EDDYLINE_INFLUX_BATCH_SIZE="10")
    agents, configs = {}, {}
    health, heard = TopicReader(kafka_settings, "device.health"), []

    def fleet_now(**options: float) -> list[dict]:
        heard.extend(health.read())
        return fleet_status(heard, int(time.time() * 1000), **options)

    try:
        for device in DEVICES:
            home = tmp_path / device
            home.mkdir()
            configs[device] = write_config(home, kafka_settings.bootstrap_servers, kafka_settings.namespace,
                                           device_id=device, heartbeat_interval_s=0.5, device_class="rpi4")
            agents[device] = start_agent(configs[device], home / "agent.log", flush_timeout_s=10)
        deadline = time.monotonic() + 60
        while {r.get("device_id") for r in fleet_now()} != set(DEVICES):
            assert time.monotonic() < deadline, f"not every agent published health\n{logs(tmp_path)}"
            time.sleep(0.5)
        assert not [a for a in fleet_alerts(kafka_settings) if a["source"] == "fleet"], "an alert before any stop"

        os.kill(agents["pi-2"].pid, signal.SIGKILL)
        agents["pi-2"].wait(timeout=10)
        opened = wait_alert(kafka_settings, "OPENED", tmp_path)
        assert opened["details"]["kind"] == "silent" and opened["severity"] == "ERROR"
        assert opened["details"]["device_class"] == "rpi4"
        status = {r["device_id"]: r for r in fleet_now(silent_after_s=4) if "device_id" in r}
        assert status["pi-2"]["state"] == "silent" and status["pi-1"]["state"] == "ok", status
        # live agents keep sending: it reads up to the end as of its start (test_edge_status_live)
        shown = CliRunner().invoke(app, ["edge", "status", "--timeout", "10"], env={
            "EDDYLINE_CONFIG": str(empty_config(tmp_path)), "EDDYLINE_FLEET_SILENT_AFTER_S": "4",
            "EDDYLINE_KAFKA_BOOTSTRAP_SERVERS": kafka_settings.bootstrap_servers,
            "EDDYLINE_KAFKA_NAMESPACE": kafka_settings.namespace})
        assert shown.exit_code == 0, shown.output
        assert "3 devices" in shown.output and "pi-2" in shown.output, shown.output
        assert re.search(r" silent +1\n", shown.output), shown.output

        agents["pi-2"] = start_agent(configs["pi-2"], tmp_path / "pi-2" / "agent.log", flush_timeout_s=10)
        resolved = wait_alert(kafka_settings, "RESOLVED", tmp_path)
        assert resolved["alert_key"] == opened["alert_key"]
        others = [a for a in fleet_alerts(kafka_settings) if a["source"] == "fleet" and a["entity"] != "pi-2"]
        assert not others, f"live devices were alerted on: {others}"

        deadline = time.monotonic() + 30
        while not (series := victoria.export('{__name__="device_health_send_rate"}')):
            assert time.monotonic() < deadline, f"no device_health points in the store\n{logs(tmp_path)}"
            time.sleep(0.5)
        assert {s["metric"]["device_id"] for s in series} == set(DEVICES)
    finally:
        for proc in agents.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in agents.values():
            proc.wait(timeout=30)
        stop(flow)
        health.close()
