"""Edge records where a Schema Registry is configured (the loopback stand-in), on the real broker.

Edge agents have no registry client: what they read (models, rollouts) carries the packaged schemas' ids, and
what the platform's flows write (scores) carries the registry's, so the rollout controller reads both.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

np = pytest.importorskip("numpy")
pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")
pytest.importorskip("cryptography")

from typer.testing import CliRunner  # noqa: E402

from connectors.kafka import EventProducer, KafkaSettings, consumer_config, create_topics, read_latest  # noqa: E402
from connectors.testing.schema_registry import SchemaRegistryStandIn  # noqa: E402
from edge_agent.inference.local import LocalInference  # noqa: E402
from edge_agent.inference.model import build_model  # noqa: E402
from edge_agent.inference.updates import ModelUpdates, UpdateFeed  # noqa: E402
from schemas import ANOMALY_SCORE, SENSOR_BATCH, AvroSerde  # noqa: E402
from schemas.catalog import DEVICE_HEALTH, EDGE_MODEL, EDGE_ROLLOUT  # noqa: E402
from schemas.signing import Verifier, generate_keypair, sign_model  # noqa: E402
from streams.cli import app  # noqa: E402
from streams.flows.rollout import RolloutPolicy, run_rollout  # noqa: E402
from tests.integration.test_edge_rollout_signed import CFG, class_of_20_on_the_topic, follow, promoted  # noqa: E402
from tests.unit.test_rollout_agreement import batch, scores  # noqa: E402
from tests.unit.test_schemas_serde import EXAMPLES  # noqa: E402

pytestmark = pytest.mark.integration


def test_a_rollout_joins_the_canarys_readings_with_scores_written_through_the_registry(
    kafka_settings: KafkaSettings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The controller read the anomaly flow's scores with the packaged schemas only: with a registry configured
    no score decoded, and every canary was rolled back as "only 0 of N readings joined with the platform's scores"."""
    generate_keypair(tmp_path / "k.pem", tmp_path / "k.pub.pem")
    private = (tmp_path / "k.pem").read_bytes()
    class_of_20_on_the_topic(kafka_settings, private, [])  # the class's heartbeats and v3, as agents read them
    policy = RolloutPolicy(observe_s=0.5, swap_timeout_s=20, max_latency_ms=1000, silence_intervals=100,
                           min_joined_readings=100, min_agreement=0.9)
    started: list[dict] = []
    final: list[dict] = []
    with SchemaRegistryStandIn() as registry:
        monkeypatch.setenv("EDDYLINE_SCHEMA_REGISTRY_URL", registry.url)
        controller = threading.Thread(target=lambda: final.append(run_rollout(
            kafka_settings, policy, "rpi4", "v3", private_pem=private, canary_percent=5, on_event=started.append)))
        controller.start()
        deadline = time.monotonic() + 60
        while not started and controller.is_alive() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert started and started[0]["state"] == "canary", final
        [canary] = started[0]["canary_devices"]
        edge, platform = AvroSerde(), EventProducer(kafka_settings)  # the flows' producer: the registry's ids
        with EventProducer(kafka_settings, edge) as device:
            start = 0
            while controller.is_alive() and time.monotonic() < deadline:
                flags = np.arange(50) % 10 == 0
                device.produce("device.health", DEVICE_HEALTH, {**EXAMPLES[DEVICE_HEALTH], "device_id": canary,
                               "event_id": f"h{start}", "device_class": "rpi4", "model_version": "v3"}, key=canary)
                device.produce("sensor.readings", SENSOR_BATCH, {**EXAMPLES[SENSOR_BATCH], "event_id": f"b{start}",
                               **batch(canary, "v3", flags, start)}, key=canary)
                platform.produce("scores.anomaly", ANOMALY_SCORE, {**EXAMPLES[ANOMALY_SCORE], "event_id": f"s{start}",
                                 **scores(canary, flags, start)}, key=canary)
                device.flush()
                platform.flush()
                start += 50
                controller.join(0.5)
        platform.close()
        assert f"{kafka_settings.topic('scores.anomaly')}-value" in registry.subjects
    controller.join(10)
    assert final and final[0]["state"] == "promoted", final and final[0]["reason"]
    assert "agreement" in final[0]["reason"]
    on_topic = read_latest(kafka_settings, "edge.rollouts")[b"rpi4"]
    assert AvroSerde().decode(on_topic, EDGE_ROLLOUT)["state"] == "promoted"  # as the agents read it


def test_a_model_published_where_a_schema_registry_is_configured_reaches_the_agents(
    kafka_settings: KafkaSettings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Agents have no registry client: `eddyline edge publish` wrote the model with the registry's id, which no
    agent could read, and publishing it again failed on that id; it now replaces such a record."""
    generate_keypair(tmp_path / "k.pem", tmp_path / "k.pub.pem")
    model = build_model(tmp_path / "m.onnx", window=12)
    create_topics(kafka_settings, ["edge.models", "edge.rollouts"])
    u = ModelUpdates("pi-1", "rpi4", CFG, Verifier((tmp_path / "k.pub.pem").read_bytes()), LocalInference(CFG), None)
    conf = consumer_config(kafka_settings, "unused")
    feed = UpdateFeed({k: v for k, v in conf.items() if isinstance(v, (str, int, float, bool))},
                      kafka_settings.topic("edge.models"), kafka_settings.topic("edge.rollouts"), u)
    monkeypatch.delenv("EDDYLINE_CONFIG", raising=False)
    monkeypatch.setenv("EDDYLINE_KAFKA_BOOTSTRAP_SERVERS", kafka_settings.bootstrap_servers)
    monkeypatch.setenv("EDDYLINE_KAFKA_NAMESPACE", kafka_settings.namespace)
    publish = ["edge", "publish", str(model), "--version", "v2", "--device-class", "rpi4", "--key",
               str(tmp_path / "k.pem")]
    try:
        with SchemaRegistryStandIn() as registry:
            monkeypatch.setenv("EDDYLINE_SCHEMA_REGISTRY_URL", registry.url)
            with EventProducer(kafka_settings) as out:  # the configured registry's id: what publish wrote before
                out.produce("edge.models", EDGE_MODEL, sign_model(
                    {"event_id": "v2", "event_time": 1, "producer": "t", "name": "anomaly", "version": "v2",
                     "device_class": "rpi4", "format": "onnx", "model": b"onnx"}, (tmp_path / "k.pem").read_bytes()),
                    key="rpi4/v2")
            for _ in range(2):
                result = CliRunner().invoke(app, publish)
                assert result.exit_code == 0, result.output or repr(result.exception)
            with EventProducer(kafka_settings, AvroSerde()) as out:  # as run_rollout writes them
                out.produce("edge.rollouts", EDGE_ROLLOUT, promoted("v2", None, 1_000, 0,
                                                                    (tmp_path / "k.pem").read_bytes()), key="rpi4")
        follow(feed, u, lambda: u.current.version == "v2", 30)
        assert u.current.version == "v2" and feed.bad_records <= 1  # the earlier record, if not yet compacted
    finally:
        feed.close()
