"""Three real agent processes, the real broker, signed models: canary, promotion, rollback, refusal, no reading lost."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

import pytest

np = pytest.importorskip("numpy")
onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")
pytest.importorskip("cryptography")

from typer.testing import CliRunner  # noqa: E402

from connectors.kafka import EventProducer, KafkaSettings, create_topics, read_to_end  # noqa: E402
from edge_agent.inference.model import build_graph, build_model, fit, synthetic_normal  # noqa: E402
from schemas import SENSOR_BATCH, AvroSerde  # noqa: E402
from schemas.catalog import DEVICE_HEALTH, EDGE_MODEL, EDGE_ROLLOUT  # noqa: E402
from schemas.signing import generate_keypair, sign_model, sign_rollout  # noqa: E402
from streams.flows.rollout import RolloutController, RolloutPolicy, run_rollout  # noqa: E402
from tests.fixtures.topic_reader import TopicReader  # noqa: E402

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
DEVICES = ["pi-a", "pi-b", "pi-c"]
CLASS = "testpi"
BASE = "residual_w16_int8"  # the model shipped with the agent, running before any rollout


def broken_at_run_time(path: Path) -> Path:
    """Scores the one window the agent tries at load, but no more at once: every batch's scoring fails on the device."""
    from onnx import numpy_helper

    weights, bias, sigma = fit(synthetic_normal(n_series=8, length=400), 16)
    model = build_graph(weights, bias, sigma)
    model.graph.initializer.append(numpy_helper.from_array(np.array([1, 1], dtype=np.int64), "one_row"))
    model.graph.node.append(onnx.helper.make_node("Reshape", ["score", "one_row"], ["first"]))
    model.graph.output[0].CopyFrom(onnx.helper.make_tensor_value_info("first", onnx.TensorProto.FLOAT, [1, 1]))
    onnx.save(model, path)
    return path


def agent_config(tmp: Path, device: str, kafka: KafkaSettings, public_key: Path) -> Path:
    path = tmp / f"{device}.toml"
    path.write_text(
        f"""[kafka]
bootstrap_servers = "{kafka.bootstrap_servers}"
namespace = "{kafka.namespace}"
extra = {{ debug = "eos" }}
[edge]
log_level = "DEBUG"
device_id = "{device}"
device_class = "{CLASS}"
buffer_path = "{tmp / device}.sqlite"
batch_max_age_s = 0.2
heartbeat_interval_s = 0.5
buffer_sync = "normal"
[[edge.sources]]
kind = "simulated"
rate = 100
sensors = 2
interval_s = 0.05
[edge.inference]
enabled = true
[edge.models]
enabled = true
public_key = "{public_key}"
"""
    )
    return path


class Fleet:
    def __init__(self, tmp: Path, kafka: KafkaSettings, public_key: Path) -> None:
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        env.pop("EDDYLINE_CONFIG", None)
        self.logs = {d: tmp / f"{d}.log" for d in DEVICES}
        self.procs = {
            d: subprocess.Popen(
                [sys.executable, "-m", "edge_agent", "run", "--config", str(agent_config(tmp, d, kafka, public_key))],
                stdout=subprocess.DEVNULL, stderr=self.logs[d].open("ab"), env=env, cwd=REPO,
            )
            for d in DEVICES
        }
        self.kafka = kafka
        self.serde = AvroSerde()
        self.seen: dict[str, list[dict]] = defaultdict(list)
        self.reader = TopicReader(kafka, "device.health")

    def health(self, idle: float = 0.2, most: float = 2.0) -> dict[str, list[dict]]:
        """Every health record the agents published so far (``TopicReader.read`` says how far)."""
        for m in self.reader.read(idle, most):
            h = self.serde.decode(m.value(), DEVICE_HEALTH)
            self.seen[h["device_id"]].append(h)
        return {d: list(hs) for d, hs in self.seen.items()}

    def wait_latest(self, cond, what: str, timeout: float = 60.0) -> dict[str, dict]:
        deadline = time.monotonic() + timeout
        latest: dict[str, dict] = {}
        while time.monotonic() < deadline:
            for d, p in self.procs.items():
                if p.poll() is not None:
                    pytest.fail(f"{d} exited {p.returncode}:\n{self.logs[d].read_text()[-3000:]}")
            latest = {d: hs[-1] for d, hs in self.health().items()}
            if len(latest) == len(DEVICES) and all(cond(h) for h in latest.values()):
                return latest
            time.sleep(0.5)
        pytest.fail(f"timed out waiting for {what}; latest: "
                    f"{ {d: (h['model_version'], h['model_state'], h['model_message']) for d, h in latest.items()} }")

    def stop(self) -> None:
        for p in self.procs.values():
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for d, p in self.procs.items():
            try:
                assert p.wait(30) == 0, self.logs[d].read_text()[-3000:]
            except subprocess.TimeoutExpired:
                p.kill()
                pytest.fail(f"{d} ignored SIGTERM")

    def close(self) -> None:
        self.reader.close()


def test_canary_promotion_rollback_and_refusal(
    kafka_settings: KafkaSettings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from streams.cli import app

    monkeypatch.delenv("EDDYLINE_CONFIG", raising=False)
    monkeypatch.setenv("EDDYLINE_KAFKA_BOOTSTRAP_SERVERS", kafka_settings.bootstrap_servers)
    monkeypatch.setenv("EDDYLINE_KAFKA_NAMESPACE", kafka_settings.namespace)
    create_topics(kafka_settings, ["sensor.readings", "device.health", "edge.models", "edge.rollouts"])
    runner = CliRunner()
    assert runner.invoke(app, ["edge", "keygen", "--out", str(tmp_path / "keys")]).exit_code == 0
    generate_keypair(tmp_path / "rogue.pem", tmp_path / "rogue.pub.pem")
    key, rogue = tmp_path / "keys" / "edge-signing.pem", tmp_path / "rogue.pem"
    signing = key.read_bytes()
    good = build_model(tmp_path / "v2.onnx", window=12)
    broken = broken_at_run_time(tmp_path / "v3.onnx")
    for model, version, signer in [(good, "v2", key), (broken, "v3", key), (good, "v4", rogue)]:
        result = runner.invoke(app, ["edge", "publish", str(model), "--version", version, "--device-class", CLASS,
                                     "--key", str(signer)])
        assert result.exit_code == 0, result.output
    forged = sign_model({"event_id": "v7", "event_time": int(time.time() * 1000), "producer": "mallory",
                         "name": "anomaly", "version": "v7", "device_class": CLASS, "format": "onnx",
                         "model": good.read_bytes()}, key.read_bytes())
    forged["signature"] = bytes([forged["signature"][0] ^ 1]) + forged["signature"][1:]  # right key id, bad signature
    with EventProducer(kafka_settings) as out:
        out.produce("edge.models", EDGE_MODEL, forged, key=f"{CLASS}/v7")

    policy = RolloutPolicy(observe_s=3, swap_timeout_s=30, max_error_rate_per_min=5, max_latency_ms=2000,
                           silence_intervals=20, fleet_window_s=60,
                           min_joined_readings=0)  # health gates here; agreement: test_edge_rollout_agreement
    fleet = Fleet(tmp_path, kafka_settings, tmp_path / "keys" / "edge-signing.pub.pem")
    try:
        fleet.wait_latest(lambda h: h["model_version"] == BASE and h["model_state"] == "running", "the base model")
        records: list[dict] = []

        # a canary rollout reaches the canary share, is promoted, and all three report the new version
        final = run_rollout(kafka_settings, policy, CLASS, "v2", private_pem=signing, canary_percent=10,
                            on_event=records.append)
        assert final["state"] == "promoted", final["reason"]
        (canary,) = records[0]["canary_devices"]
        seen = fleet.health()
        on_v2_before_promotion = {
            d for d, hs in seen.items() for h in hs if h["model_version"] == "v2" and h["event_time"] < final["event_time"] - 1000
        }
        assert on_v2_before_promotion == {canary}
        fleet.wait_latest(lambda h: h["model_version"] == "v2", "all on v2 after promotion")

        # a canary that degrades (its model fails on every batch) is rolled back; it keeps v2 for that
        records.clear()
        final = run_rollout(kafka_settings, policy, CLASS, "v3", private_pem=signing, canary_percent=10,
                            on_event=records.append)
        assert final["state"] == "rolled_back" and "errors/min" in final["reason"], final["reason"]
        (canary3,) = records[0]["canary_devices"]
        latest = fleet.wait_latest(lambda h: h["model_version"] == "v2", "all back on v2 after rollback")
        assert latest[canary3]["model_state"] == "rolled_back"

        # a model with a bad signature, or signed by another key, is refused on the device; the old one keeps scoring
        for version, why in [("v7", "model v7: bad signature"), ("v4", "model v4: signed with key")]:
            records.clear()
            final = run_rollout(kafka_settings, policy, CLASS, version, private_pem=signing, canary_percent=10,
                                on_event=records.append)
            assert final["state"] == "rolled_back" and "refused" in final["reason"], final["reason"]
            (refuser,) = records[0]["canary_devices"]
            before = fleet.health()[refuser][-1]
            time.sleep(2)
            after = fleet.wait_latest(lambda h: h["model_version"] == "v2", "v2 after the refusal")[refuser]
            assert (after["model_message"] or "").startswith(why), after["model_message"]
            assert after["model_state"] == "refused" and after["inference_latency_ms"] is not None
            assert after["errors"] == before["errors"] and after["sampled_readings"] > before["sampled_readings"]

        # the state is the rollouts topic: a canary a controller started and never finished is resumed
        assert runner.invoke(app, ["edge", "publish", str(good), "--version", "v5", "--device-class", CLASS,
                                   "--key", str(key)]).exit_code == 0
        started = sign_rollout(
            RolloutController.start(policy, CLASS, "v5", "v2", DEVICES, int(time.time() * 1000), "test", 10), signing)
        with EventProducer(kafka_settings) as out:
            out.produce("edge.rollouts", EDGE_ROLLOUT, started, key=CLASS)
        with pytest.raises(ValueError, match="in progress"):
            run_rollout(kafka_settings, policy, CLASS, "v6", private_pem=signing)
        records.clear()
        final = run_rollout(kafka_settings, policy, CLASS, "v5", private_pem=signing, on_event=records.append)
        assert records[0]["rollout_id"] == started["rollout_id"] and final["state"] == "promoted"
        fleet.wait_latest(lambda h: h["model_version"] == "v5", "all on v5 after the resumed rollout")
    finally:
        fleet.stop()

    # no reading lost across the swaps: every device's sequence is complete and holds all it sampled. The agents
    # have stopped, so each topic is read to its end as of now (no idle guess that a slow fetch could cut short).
    serde = AvroSerde()
    readings: dict[str, int] = defaultdict(int)
    seqs: dict[str, set[int]] = defaultdict(set)
    where: dict[str, list[tuple[int, int, int]]] = defaultdict(list)  # device -> (partition, offset, seq)
    offsets: dict[int, set[int]] = defaultdict(set)  # every offset the topic holds, by partition
    batches, pending = read_to_end(kafka_settings, "sensor.readings", {}, timeout=60)
    assert not pending, f"sensor.readings partitions {sorted(pending)} not read to their end"
    for m in batches:
        b = serde.decode(m.value(), SENSOR_BATCH)
        where[b["device_id"]].append((m.partition(), m.offset(), b["seq"]))
        offsets[m.partition()].add(m.offset())
        if b["seq"] not in seqs[b["device_id"]]:
            seqs[b["device_id"]].add(b["seq"])
            readings[b["device_id"]] += sum(len(s["values"]) for s in b["series"])
    fleet.close()
    health, pending = read_to_end(kafka_settings, "device.health", {}, timeout=60)
    assert not pending, f"device.health partitions {sorted(pending)} not read to their end"
    final_health = {}
    for m in sorted(health, key=lambda m: (m.partition(), m.offset())):
        h = serde.decode(m.value(), DEVICE_HEALTH)
        final_health[h["device_id"]] = h
    for d in DEVICES:
        assert seqs[d] == set(range(len(seqs[d]))), gaps_report(d, seqs[d], where[d], offsets, fleet.logs[d])
        assert readings[d] == final_health[d]["sampled_readings"] > 0, d


def gaps_report(device: str, seqs: set[int], where: list[tuple[int, int, int]], offsets: dict[int, set[int]],
                log: Path) -> str:
    """Which side lost a device's batches: what the topic holds (the device's partition, offset and seq; offsets
    missing from a partition, which the broker gave out and holds no record for) and what the agent's producer
    logged (its producer id, duplicate answers, warnings) while it counted them delivered."""
    missing = sorted(set(range(max(seqs, default=-1) + 1)) - seqs)
    held = sorted(where)
    absent = {p: sorted(set(range(max(offsets[p]) + 1)) - offsets[p])[:30] for p in sorted({p for p, _, _ in held})}
    lines = [line for line in log.read_text(errors="replace").splitlines()
             if re.search(r"WARNING|ERROR|PID|DUPSEQ|duplicate|fatal|stopped", line)]
    return (f"{device}: gaps in seq: missing {missing[:30]}{' ...' if len(missing) > 30 else ''} of {len(seqs)} held; "
            f"first held (partition, offset, seq): {held[:10]}; offsets absent from its partitions: {absent}\n"
            f"agent log ({len(lines)} lines):\n"
            + "\n".join(lines[-40:]))
