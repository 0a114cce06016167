"""``run`` hands validated settings to the lean runtime: nothing is lost on the way."""

from __future__ import annotations

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
