"""Signed rollout records on the real broker: write access to the rollouts topic is not the key to downgrade.

The device's own feed and updater (``UpdateFeed``, ``ModelUpdates``) read the topics as an agent does; the
controller's view is ``latest_rollouts``. The attacker writes to the topic without the signing key.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

import pytest

pytest.importorskip("numpy")
pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")
pytest.importorskip("cryptography")

from connectors.kafka import EventProducer, KafkaSettings, consumer_config, create_topics  # noqa: E402
from edge_agent.inference.local import LocalInference  # noqa: E402
from edge_agent.inference.model import build_model  # noqa: E402
from edge_agent.inference.updates import ModelUpdates, UpdateFeed  # noqa: E402
from schemas.catalog import EDGE_MODEL, EDGE_ROLLOUT  # noqa: E402
from schemas.signing import Verifier, generate_keypair, sign_model, sign_rollout  # noqa: E402
from streams.flows.rollout import RolloutController, RolloutPolicy, latest_rollouts, previous_version  # noqa: E402

pytestmark = pytest.mark.integration

CFG = SimpleNamespace(model_path=None, threshold=4.0, send="raw", scarce_backlog=10, providers=[])
POLICY = RolloutPolicy()


def promoted(version: str, previous: str | None, now_ms: int, after: int, private: bytes) -> dict:
    """What the controller writes when a rollout of ``version`` is promoted: signed, above ``after``."""
    start = RolloutController.start(POLICY, "rpi4", version, previous, ["pi-1"], now_ms, "eddyline-rollout", 100,
                                    after=after)
    return sign_rollout({**start, "state": "promoted", "reason": "healthy"}, private)


def follow(feed: UpdateFeed, u: ModelUpdates, done: Callable[[], bool], most: float) -> None:
    """Run the agent's loop turn (poll the feed, step the updater) until ``done`` or ``most`` seconds."""
    deadline = time.monotonic() + most
    while not done() and time.monotonic() < deadline:
        feed.poll()
        u.step()
        time.sleep(0.05)


def test_a_replayed_or_forged_rollout_does_not_downgrade_a_device(
    kafka_settings: KafkaSettings, tmp_path: Path
) -> None:
    generate_keypair(tmp_path / "k.pem", tmp_path / "k.pub.pem")
    private = (tmp_path / "k.pem").read_bytes()
    data = build_model(tmp_path / "m.onnx", window=12).read_bytes()
    create_topics(kafka_settings, ["edge.models", "edge.rollouts"])
    old = promoted("v1", None, 1_000, 0, private)  # v1: old, validly signed, perhaps vulnerable
    new = promoted("v2", "v1", 2_000, old["sequence"], private)
    with EventProducer(kafka_settings) as out:
        for v in ("v1", "v2"):
            out.produce("edge.models", EDGE_MODEL, sign_model(
                {"event_id": v, "event_time": 1, "producer": "t", "name": "anomaly", "version": v,
                 "device_class": "rpi4", "format": "onnx", "model": data}, private), key=f"rpi4/{v}")
        for r in (old, new):
            out.produce("edge.rollouts", EDGE_ROLLOUT, r, key="rpi4")
    u = ModelUpdates("pi-1", "rpi4", CFG, Verifier((tmp_path / "k.pub.pem").read_bytes()), LocalInference(CFG),
                     tmp_path / "edge-model.avro")
    conf = consumer_config(kafka_settings, "unused")
    feed = UpdateFeed({k: v for k, v in conf.items() if isinstance(v, (str, int, float, bool))},
                      kafka_settings.topic("edge.models"), kafka_settings.topic("edge.rollouts"), u)
    try:
        follow(feed, u, lambda: u.current.version == "v2", 30)
        assert u.current.version == "v2"
        unsigned = {**old, "sequence": new["sequence"] + 1, "key_id": None, "signature": None}
        with EventProducer(kafka_settings) as out:  # the attacker: the old record again, and a forged newer one
            for r in (old, unsigned):
                out.produce("edge.rollouts", EDGE_ROLLOUT, r, key="rpi4")
        follow(feed, u, lambda: u.rollout != new or u.rollouts_refused == 2, 30)
        follow(feed, u, lambda: u.current.version != "v2", 1)  # had it followed either, it would now load v1
        assert u.rollout == new and u.current.version == "v2", f"the device went to {u.current.version}"
        assert u.rollouts_refused == 2 and u.info()["model_state"] == "running"

        # the controller reads past the forged record too: a rollback of the next rollout does not go to v1
        assert previous_version(latest_rollouts(kafka_settings, Verifier.for_signing_key(private))["rpi4"]) == "v2"

        rollback = promoted("v1", "v2", 3_000, new["sequence"], private)  # the operator's own: newer, signed
        with EventProducer(kafka_settings) as out:
            out.produce("edge.rollouts", EDGE_ROLLOUT, rollback, key="rpi4")
        follow(feed, u, lambda: u.current.version == "v1", 30)
        assert u.current.version == "v1" and u.rollouts_refused == 2
    finally:
        feed.close()


def test_bytes_that_are_no_rollout_do_not_stop_the_controller(kafka_settings: KafkaSettings, tmp_path: Path) -> None:
    """Whoever can write the topic could otherwise block every later rollout, rollbacks included."""
    generate_keypair(tmp_path / "k.pem", tmp_path / "k.pub.pem")
    private = (tmp_path / "k.pem").read_bytes()
    create_topics(kafka_settings, ["edge.rollouts"])
    latest = promoted("v2", "v1", 2_000, 0, private)
    with EventProducer(kafka_settings) as out:
        out.produce("edge.rollouts", EDGE_ROLLOUT, latest, key="rpi4")
        out.produce_raw("edge.rollouts", b"\xff not a rollout", "rpi4")
    assert latest_rollouts(kafka_settings, Verifier.for_signing_key(private))["rpi4"] == latest


def class_of_20_on_the_topic(settings: KafkaSettings, private: bytes, rollouts: list[dict]) -> None:
    """The topics as a short rollout of v3 needs them: ``rollouts`` on the rollouts topic, v3 published, 20 devices
    of class rpi4 heard from just now."""
    from schemas.catalog import DEVICE_HEALTH
    from tests.unit.test_schemas_serde import EXAMPLES

    create_topics(settings, ["edge.models", "edge.rollouts", "device.health"])
    now = int(time.time() * 1000)
    with EventProducer(settings) as out:
        for r in rollouts:
            out.produce("edge.rollouts", EDGE_ROLLOUT, r, key="rpi4")
        out.produce("edge.models", EDGE_MODEL, sign_model(
            {"event_id": "v3", "event_time": 1, "producer": "t", "name": "anomaly", "version": "v3",
             "device_class": "rpi4", "format": "onnx", "model": b"onnx"}, private), key="rpi4/v3")
        for d in (f"pi-{i}" for i in range(20)):
            out.produce("device.health", DEVICE_HEALTH, {**EXAMPLES[DEVICE_HEALTH], "device_id": d, "event_id": d,
                                                         "device_class": "rpi4", "event_time": now}, key=d)


QUICK = RolloutPolicy(swap_timeout_s=0.5, min_joined_readings=0)  # no canary answers: rolled back at once


def test_a_replay_compacted_over_the_latest_record_does_not_become_the_next_rollouts_base(
    kafka_settings: KafkaSettings, tmp_path: Path
) -> None:
    """The log cleaner keeps a key's last record only: once an old record replayed under the class's key is
    compacted over the latest, the topic says the class runs v1. The controller read it, and signed the next
    canary with v1 as the version the rest of the class runs: every device (its mark passed) went back to v1."""
    from streams.flows.rollout import keep_rollout, run_rollout

    generate_keypair(tmp_path / "k.pem", tmp_path / "k.pub.pem")
    private = (tmp_path / "k.pem").read_bytes()
    kept = tmp_path / "state" / "rollouts"
    old = promoted("v1", None, 1_000, 0, private)
    new = promoted("v2", "v1", 2_000, old["sequence"], private)
    keep_rollout(kept, kafka_settings, new)  # as the controller that wrote it kept it
    class_of_20_on_the_topic(kafka_settings, private, [old])  # all the cleaner left
    records: list[dict] = []
    final = run_rollout(kafka_settings, QUICK, "rpi4", "v3", private_pem=private, canary_percent=10,
                        on_event=records.append, kept=kept)
    assert records[0]["previous_version"] == "v2" and final["previous_version"] == "v2"
    assert latest_rollouts(kafka_settings, Verifier.for_signing_key(private))["rpi4"] == final  # written again


def test_the_first_signed_rollout_asks_what_the_class_runs(kafka_settings: KafkaSettings, tmp_path: Path) -> None:
    """Records written before rollouts were signed (or with a rotated key) are not trusted, and the first signed
    rollout named no previous version: every device that was not a canary went back to its shipped model."""
    from streams.flows.rollout import run_rollout

    generate_keypair(tmp_path / "k.pem", tmp_path / "k.pub.pem")
    private = (tmp_path / "k.pem").read_bytes()
    unsigned = {**promoted("v2", "v1", 2_000, 0, private), "sequence": 0, "key_id": None, "signature": None}
    class_of_20_on_the_topic(kafka_settings, private, [unsigned])
    with pytest.raises(ValueError, match="--running VERSION"):
        run_rollout(kafka_settings, QUICK, "rpi4", "v3", private_pem=private, canary_percent=10)
    records: list[dict] = []
    final = run_rollout(kafka_settings, QUICK, "rpi4", "v3", private_pem=private, canary_percent=10,
                        on_event=records.append, running="v2")
    assert records[0]["previous_version"] == "v2" and final["state"] == "rolled_back"
    assert final["previous_version"] == "v2"
