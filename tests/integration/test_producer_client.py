"""The Python producer client against the real broker: every kind of event lands, ids are stable, exit flushes."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from connectors.kafka import KafkaSettings, read_topic
from connectors.producer import Producer
from schemas import CLICK, FEEDBACK, PREDICTION, SENSOR_BATCH, AvroSerde, SchemaError

pytestmark = pytest.mark.integration
serde = AvroSerde()


def _read(kafka: KafkaSettings, topic: str, event_type: str, expected: int) -> list[dict]:
    return [serde.decode(m.value(), event_type) for m in read_topic(kafka, topic, expected=expected, timeout=20)]


def test_every_kind_of_event_lands_with_stable_ids(kafka_settings: KafkaSettings) -> None:
    with Producer("svc-test", kafka_settings, max_readings=100) as p:
        for i in range(250):
            p.send_reading("press-7", "temperature", 20.0 + i, time_ms=1_000 + i)
        p.send_readings("press-8", "vibration", [1, 2, 3], [0.1, 0.2, 0.3], unit="g")
        click = p.send_click("u1", "item-9", "CLICK", position=2, time_ms=5_000)
        assert p.send_click("u1", "item-9", "CLICK", position=2, time_ms=5_000) == click  # a retry, same id
        pid = p.send_prediction("churn", "v3", "u1", 0.8, features={"tenure": 7}, time_ms=6_000)
        p.send_feedback("churn", pid, 1.0)
    batches = _read(kafka_settings, "sensor.readings", SENSOR_BATCH, 4)
    press7 = sorted((b for b in batches if b["device_id"] == "press-7"), key=lambda b: b["seq"])
    assert [len(b["series"][0]["values"]) for b in press7] == [100, 100, 50]
    assert [v for b in press7 for v in b["series"][0]["values"]] == [20.0 + i for i in range(250)]
    assert len({b["event_id"] for b in batches}) == 4 and all(b["producer"] == "svc-test" for b in batches)
    [press8] = [b for b in batches if b["device_id"] == "press-8"]
    assert press8["series"] == [
        {"sensor": "vibration", "unit": "g", "timestamps": [1, 2, 3], "values": [0.1, 0.2, 0.3], "local_flags": None}]
    assert press8["local_model"] is None  # a service does not score its readings; only edge agents with a model do
    clicks = _read(kafka_settings, "clicks", CLICK, 2)
    assert [c["event_id"] for c in clicks] == [click, click] and clicks[0]["position"] == 2
    [prediction] = _read(kafka_settings, "predictions", PREDICTION, 1)
    assert prediction["event_id"] == pid and prediction["features"] == {"tenure": 7.0}
    [feedback] = _read(kafka_settings, "feedback", FEEDBACK, 1)
    assert (feedback["prediction_id"], feedback["label"]) == (pid, 1.0)


def test_readings_are_sent_when_the_process_exits(kafka_settings: KafkaSettings) -> None:
    script = ("from connectors.producer import Producer\n"
              "p = Producer('exit-test', linger_s=3600)\n"
              "for i in range(10): p.send_reading('dev', 's', float(i), time_ms=i)\n")
    env = {**os.environ, "EDDYLINE_KAFKA_BOOTSTRAP_SERVERS": kafka_settings.bootstrap_servers,
           "EDDYLINE_KAFKA_NAMESPACE": kafka_settings.namespace}
    subprocess.run([sys.executable, "-c", script], env=env, check=True, timeout=60)
    [batch] = _read(kafka_settings, "sensor.readings", SENSOR_BATCH, 1)
    assert batch["series"][0]["values"] == [float(i) for i in range(10)]


def test_bad_input_is_refused_before_it_leaves(kafka_settings: KafkaSettings) -> None:
    with Producer("svc-bad", kafka_settings, create_topics=False) as p:
        with pytest.raises(ValueError, match="timestamps"):
            p.send_readings("d", "s", [1, 2], [1.0])
        with pytest.raises(SchemaError, match="action"):
            p.send_click("u", "i", "PURCHASE")  # type: ignore[arg-type]
    with pytest.raises(RuntimeError, match="closed"):
        p.send_reading("d", "s", 1.0)


@pytest.mark.parametrize("timestamps, values", [([4], [float("nan")]), ([5, "soon"], [1.0, 2.0]), ([], [])],
                         ids=["nan", "not-a-time", "empty"])
def test_a_bad_reading_does_not_take_the_devices_batch_or_the_sender_with_it(
    kafka_settings: KafkaSettings, timestamps: list, values: list
) -> None:
    """Found when the batch was sent, one NaN lost the device's other readings and stopped the thread that sends
    batches after ``linger_s`` (the rest waited for ``close``)."""
    with Producer("svc-nan", kafka_settings, linger_s=0.2) as p:
        p.send_readings("dev-a", "temp", [1, 2, 3], [1.0, 2.0, 3.0])
        if values:
            with pytest.raises(ValueError):
                p.send_readings("dev-a", "other", timestamps, values)
        else:
            p.send_readings("dev-a", "other", timestamps, values)  # nothing to send
        batches = _read(kafka_settings, "sensor.readings", SENSOR_BATCH, 1)
        p.send_readings("dev-b", "temp", [10], [5.0])
        batches += _read(kafka_settings, "sensor.readings", SENSOR_BATCH, 2)[1:]  # before close: the sender lives
    assert [(b["device_id"], [(s["sensor"], s["values"]) for s in b["series"]]) for b in batches] == [
        ("dev-a", [("temp", [1.0, 2.0, 3.0])]), ("dev-b", [("temp", [5.0])])]


def test_the_sender_outlives_a_batch_the_client_refuses(kafka_settings: KafkaSettings,
                                                        caplog: pytest.LogCaptureFixture) -> None:
    """The thread that sends batches after ``linger_s`` stopped at its first error; the rest waited for ``close``."""
    small = kafka_settings.model_copy(update={"extra": {"message.max.bytes": "2000"}})
    with Producer("svc-big", small, linger_s=0.2) as p:
        p.send_readings("big", "temp", list(range(500)), [1.0] * 500)  # far over 2000 bytes: refused when sent
        p.send_readings("small", "temp", [1], [2.0])
        batches = _read(kafka_settings, "sensor.readings", SENSOR_BATCH, 1)  # before close: the sender lives
    assert [b["device_id"] for b in batches] == ["small"]
    assert "linger_s failed" in caplog.text and "too large" in caplog.text.lower()
