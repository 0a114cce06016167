"""Drift, retraining and promotion through the real broker.

The click flow (with retraining) and the drift flow feed each other over Kafka topics, as they do when
both run: clicks -> predictions, feedback -> drift -> back to the click flow. Every event crosses the
broker, encoded with its schema, and is read back before the next flow sees it; the processors are
driven in-process, batch by batch (the engines only move these batches: tests/integration/test_sensor_flow.py
checks that for Bytewax).
"""

from __future__ import annotations

import uuid
from dataclasses import replace

import pytest

from connectors.movielens import click_events, load
from connectors.kafka import EventProducer, KafkaSettings, create_topics, make_consumer, read_topic
from models.registry import ModelRegistry
from schemas import ALERT, CLICK, DRIFT, FEEDBACK, PREDICTION, AvroSerde
from streams.flows import drift, retraining
from streams.flows.clicks import MODEL_NAME
from streams.engines.output import Codec
from streams.processor import Emit, Event, run_local

pytestmark = pytest.mark.integration
TYPES = {"clicks": CLICK, "predictions": PREDICTION, "feedback": FEEDBACK, "drift": DRIFT, "alerts": ALERT}
POLICY = {"train_window": 1000, "min_fresh": 1000, "shadow_events": 1000, "margin": 0.01, "cooldown": 100_000,
          "quality_drop": 10.0}
BEFORE, AFTER = 4000, 4000
serde = AvroSerde()


class Tail:
    """Reads topics from the beginning, as a flow's consumer would, handing back decoded events."""

    def __init__(self, settings: KafkaSettings, topics: list[str]) -> None:
        from confluent_kafka import OFFSET_BEGINNING, TopicPartition

        self.codec = Codec(settings, {t: TYPES[t] for t in topics})
        self.consumer = make_consumer(settings, f"test-{uuid.uuid4().hex}")
        parts = []
        for t in topics:
            meta = self.consumer.list_topics(settings.topic(t), timeout=10).topics[settings.topic(t)]
            parts += [TopicPartition(settings.topic(t), p, OFFSET_BEGINNING) for p in meta.partitions]
        self.consumer.assign(parts)

    def take(self, n: int, timeout: float = 30.0) -> list[Event]:
        import time

        out: list[Event] = []
        deadline = time.monotonic() + timeout
        while len(out) < n and time.monotonic() < deadline:
            for msg in self.consumer.consume(min(1000, n - len(out)), timeout=0.5):
                assert msg.error() is None, msg.error()
                ev = self.codec.decode(msg.topic(), msg.key(), msg.value(), msg.partition(), msg.offset())
                assert isinstance(ev, Event), ev
                out.append(ev)
        assert len(out) == n, f"expected {n} events from the broker, got {len(out)}"
        return out

    def close(self) -> None:
        self.consumer.close()


def publish(producer: EventProducer, emits: list[Emit]) -> None:
    for e in emits:
        producer.produce(e.topic, e.event_type, e.record, key=e.key)
    producer.flush(30)


def run_through_broker(settings: KafkaSettings, clicks: list[dict], registry_dir, extra_drift: dict | None = None,
                       extra_at: int = -1, chunk: int = 1000) -> None:
    create_topics(settings, list(TYPES), partitions=1)  # one partition: the replay stays in event-time order
    retrain_spec, drift_spec = retraining.flow(registry_dir=registry_dir, policy=POLICY), drift.flow()
    procs: dict = {}
    dprocs: dict = {}
    with EventProducer(settings) as producer:
        for rec in clicks:
            producer.produce("clicks", CLICK, rec, key=rec["user_id"])
        producer.flush(30)
        click_in, model_out, drift_back = (Tail(settings, ["clicks"]), Tail(settings, ["predictions", "feedback"]),
                                           Tail(settings, ["drift"]))
        try:
            pending: list[Event] = []
            done = 0
            while done < len(clicks):
                batch = click_in.take(min(chunk, len(clicks) - done))
                if extra_drift is not None and done <= extra_at < done + len(batch):
                    publish(producer, [Emit("drift", MODEL_NAME, DRIFT, extra_drift)])
                    pending += drift_back.take(1)
                done += len(batch)
                emitted = run_local(retrain_spec, pending + batch, procs)
                publish(producer, emitted)
                found = run_local(drift_spec, model_out.take(len(emitted)), dprocs)
                publish(producer, found)
                pending = drift_back.take(sum(e.topic == "drift" for e in found))
        finally:
            for tail in (click_in, model_out, drift_back):
                tail.close()


def test_injected_concept_drift_is_detected_retrained_promoted_and_registered(kafka_settings, tmp_path) -> None:
    ratings = load(limit=BEFORE + AFTER)
    turned = ratings[:BEFORE] + [replace(r, rating=1.0 if r.liked else 5.0) for r in ratings[BEFORE:]]  # tastes invert
    run_through_broker(kafka_settings, list(click_events(turned)), tmp_path)

    drifts = [serde.decode(m.value(), DRIFT) for m in read_topic(kafka_settings, "drift")]
    concept = [d for d in drifts if d["kind"] == "CONCEPT" and d["window_end"] >= ratings[BEFORE].time_ms]
    assert concept, f"no concept drift after the change; drift events: {drifts}"
    alerts = [serde.decode(m.value(), ALERT) for m in read_topic(kafka_settings, "alerts")]
    opened = [a for a in alerts if a["details"].get("drift_event_id") == concept[0]["event_id"]]
    assert opened and opened[0]["severity"] == "ERROR" and opened[0]["entity"] == MODEL_NAME

    reg = ModelRegistry(tmp_path)
    champ = reg.champion(MODEL_NAME)
    assert champ.version == "2" and champ.parent == "1" and champ.info["trigger_id"] == concept[0]["event_id"]
    assert champ.metrics["shadow_log_loss"] + POLICY["margin"] <= champ.metrics["champion_log_loss"]
    assert [(h["action"], h["version"], h["replaced"]) for h in reg.history(MODEL_NAME)] == [
        ("registered", "1", None), ("promoted", "1", None), ("registered", "2", None), ("promoted", "2", "1")]
    versions = [serde.decode(m.value(), PREDICTION)["model_version"] for m in read_topic(kafka_settings, "predictions")]
    assert len(versions) == len(ratings) and versions[0] == "1" and versions[-1] == "2"


def test_a_worse_challenger_is_not_promoted(kafka_settings, tmp_path) -> None:
    """A false alarm on the drift topic: the challenger trained on a short window loses its shadow trial."""
    ratings = load(limit=5000)
    false_alarm = {
        "event_id": "false-alarm", "event_time": ratings[2500].time_ms, "producer": "test", "model_name": MODEL_NAME,
        "feature": None, "kind": "CONCEPT", "detector": "manual", "statistic": 1.0, "threshold": 1.0,
        "window_start": ratings[2400].time_ms, "window_end": ratings[2500].time_ms, "reference_size": 0,
        "window_size": 0}
    run_through_broker(kafka_settings, list(click_events(ratings)), tmp_path, extra_drift=false_alarm, extra_at=2500)

    reg = ModelRegistry(tmp_path)
    assert reg.champion(MODEL_NAME).version == "1"
    loser = reg.get(MODEL_NAME, "2")
    assert loser.status == "rejected" and loser.info["trigger_id"] == "false-alarm"
    assert loser.metrics["shadow_log_loss"] > loser.metrics["champion_log_loss"] - POLICY["margin"]
    assert reg.history(MODEL_NAME)[-1]["action"] == "rejected"
    versions = {serde.decode(m.value(), PREDICTION)["model_version"] for m in read_topic(kafka_settings, "predictions")}
    assert versions == {"1"}
