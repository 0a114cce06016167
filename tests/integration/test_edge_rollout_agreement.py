"""Rollout gated on agreement with the platform's detector: three real agents, the anomaly flow as a process."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

np = pytest.importorskip("numpy")
pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")
pytest.importorskip("cryptography")

from typer.testing import CliRunner  # noqa: E402

from connectors.kafka import KafkaSettings, create_topics, read_topic  # noqa: E402
from edge_agent.inference.model import build_graph, build_model, fit, synthetic_normal  # noqa: E402
from schemas import SENSOR_BATCH, AvroSerde  # noqa: E402
from schemas.flags import unpack_flags  # noqa: E402
from streams.flows.rollout import RolloutPolicy, run_rollout  # noqa: E402
from tests.integration.test_edge_rollout import BASE, CLASS, Fleet  # noqa: E402
from tests.integration.test_sensor_flow import start_flow, stop  # noqa: E402

pytestmark = pytest.mark.integration


def flags_everything(path: Path) -> Path:
    """A well-formed model with an absurd scale: every reading scores far above any threshold."""
    import onnx

    weights, bias, _ = fit(synthetic_normal(n_series=8, length=400), 16)
    onnx.save(build_graph(weights, bias, 1e-9), path)
    return path


def test_a_canary_that_disagrees_with_the_platform_is_rolled_back_and_one_that_agrees_is_promoted(
    kafka_settings: KafkaSettings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from streams.cli import app

    monkeypatch.delenv("EDDYLINE_CONFIG", raising=False)
    monkeypatch.setenv("EDDYLINE_KAFKA_BOOTSTRAP_SERVERS", kafka_settings.bootstrap_servers)
    monkeypatch.setenv("EDDYLINE_KAFKA_NAMESPACE", kafka_settings.namespace)
    create_topics(kafka_settings, ["sensor.readings", "scores.anomaly", "device.health", "edge.models",
                                   "edge.rollouts"])
    runner = CliRunner()
    assert runner.invoke(app, ["edge", "keygen", "--out", str(tmp_path / "keys")]).exit_code == 0
    key = tmp_path / "keys" / "edge-signing.pem"
    for model, version in [(flags_everything(tmp_path / "loud.onnx"), "loud"),
                           (build_model(tmp_path / "v2.onnx", window=12), "v2")]:
        result = runner.invoke(app, ["edge", "publish", str(model), "--version", version, "--device-class", CLASS,
                                     "--key", str(key)])
        assert result.exit_code == 0, result.output

    policy = RolloutPolicy(observe_s=4, swap_timeout_s=60, max_error_rate_per_min=5, max_latency_ms=2000,
                           silence_intervals=20, fleet_window_s=60, min_agreement=0.9, min_joined_readings=300)
    flow = start_flow(kafka_settings, tmp_path / "flow-state")
    fleet = Fleet(tmp_path, kafka_settings, tmp_path / "keys" / "edge-signing.pub.pem")
    try:
        fleet.wait_latest(lambda h: h["model_version"] == BASE and h["model_state"] == "running", "the base model")
        deadline = time.monotonic() + 120  # the platform's detector is up once it scores the agents' readings
        while not read_topic(kafka_settings, "scores.anomaly", idle=0.5, timeout=5):
            assert flow.poll() is None and time.monotonic() < deadline, stop(flow)
        records: list[dict] = []

        final = run_rollout(kafka_settings, policy, CLASS, "loud", private_pem=key.read_bytes(), canary_percent=10,
                            on_event=records.append)
        assert final["state"] == "rolled_back", final["reason"]
        assert "disagrees with the platform's detector" in final["reason"], final["reason"]
        print("loud:", final["reason"])
        (canary,) = records[0]["canary_devices"]
        latest = fleet.wait_latest(lambda h: h["model_version"] == BASE, "all back on the base model")
        assert latest[canary]["model_state"] == "rolled_back"

        records.clear()
        final = run_rollout(kafka_settings, policy, CLASS, "v2", private_pem=key.read_bytes(), canary_percent=10,
                            on_event=records.append)
        assert final["state"] == "promoted", final["reason"]
        assert "agreement" in final["reason"] and "over" in final["reason"], final["reason"]
        print("v2:", final["reason"])
        fleet.wait_latest(lambda h: h["model_version"] == "v2", "all on v2 after promotion")
        assert flow.poll() is None, stop(flow)
    finally:
        fleet.stop()
        fleet.close()
        stop(flow)

    # what the gate read is on the topic: raw batches flagged by the model that scored them
    serde = AvroSerde()
    by_model: dict[str, list[float]] = {}
    for m in read_topic(kafka_settings, "sensor.readings", idle=2.0, timeout=60):
        b = serde.decode(m.value(), SENSOR_BATCH)
        if b["local_model"] is not None:
            flags = np.concatenate([unpack_flags(s["local_flags"], len(s["values"])) for s in b["series"]])
            by_model.setdefault(b["local_model"], []).append(float(flags.mean()))
    assert set(by_model) == {BASE, "loud", "v2"}
    assert min(by_model["loud"]) > 0.5 > max(np.mean(by_model[BASE]), np.mean(by_model["v2"]))
