"""Dead letters keep the original bytes and say why and where from, through the real broker."""

from __future__ import annotations

import time

import pytest

from connectors.dlq import DeadLetterProducer, dlq_headers, dlq_info, dlq_topic
from connectors.kafka import EventProducer, KafkaSettings, read_topic
from schemas import AvroSerde, SchemaError, catalog, wire

pytestmark = pytest.mark.integration


def test_undecodable_input_goes_to_the_dlq_unchanged(kafka_settings: KafkaSettings) -> None:
    serde = AvroSerde()
    unknown_id = wire.frame(7, b"\x02\x04")
    inputs = [(b"not avro at all", "undecodable"), (unknown_id, "unknown_schema")]
    before = time.time_ns() // 1_000_000
    with EventProducer(kafka_settings, serde) as producer:
        for value, _ in inputs:
            producer.produce_raw("sensor.readings", value, key="dev-9")
    source = read_topic(kafka_settings, "sensor.readings", expected=2)
    assert len(source) == 2

    with EventProducer(kafka_settings, serde) as producer:
        dlq = DeadLetterProducer(producer)
        for msg in source:
            with pytest.raises(SchemaError) as info:
                serde.decode(msg.value(), catalog.SENSOR_BATCH)
            dlq.send("sensor.readings", msg.value(), msg.key(), info.value.reason, str(info.value),
                     msg.partition(), msg.offset())
    assert dlq.sent == 2 and producer.delivered == 2
    assert dlq.by_reason == {"undecodable": 1, "unknown_schema": 1}

    letters = read_topic(kafka_settings, dlq_topic("sensor.readings"), expected=2)
    assert len(letters) == 2
    by_value = {m.value(): m for m in letters}
    for (value, reason), src in zip(sorted(inputs), sorted(source, key=lambda m: m.value())):
        letter = by_value[value]
        assert letter.topic() == kafka_settings.topic("dlq.sensor.readings")
        assert letter.key() == b"dev-9"
        info = dlq_info(letter.headers())
        assert info["reason"] == reason
        assert info["topic"] == kafka_settings.topic("sensor.readings")
        assert (int(info["partition"]), int(info["offset"])) == (src.partition(), src.offset())
        assert info["error"].startswith("sensor_batch: ")
        assert before <= int(info["time"]) <= time.time_ns() // 1_000_000


def test_invalid_event_reason_and_tombstone(kafka_settings: KafkaSettings) -> None:
    with EventProducer(kafka_settings) as producer:
        dlq = DeadLetterProducer(producer)
        dlq.send("clicks", None, None, "invalid", "click.event_id: must not be empty" + "!" * 5000, 2, 41)
    [letter] = read_topic(kafka_settings, "dlq.clicks", expected=1)
    assert letter.value() is None and letter.key() is None
    info = dlq_info(letter.headers())
    assert info["reason"] == "invalid" and info["offset"] == "41" and info["partition"] == "2"
    assert info["error"].startswith("click.event_id: must not be empty") and len(info["error"]) <= 2000


def test_dlq_info_reads_only_its_own_headers() -> None:
    assert dlq_info(None) == {}
    assert dlq_info([("trace", b"x"), ("eddyline.dlq.reason", b"invalid")]) == {"reason": "invalid"}
    assert dlq_info({"eddyline.dlq.offset": "3"}) == {"offset": "3"}


def test_headers_for_other_producers_round_trip() -> None:
    headers = dlq_headers("prod.clicks", "unknown_schema", "schema id 9", 4, 1200)
    assert all(isinstance(v, bytes) for v in headers.values())
    info = dlq_info(list(headers.items()))
    assert {k: info[k] for k in ("reason", "error", "topic", "partition", "offset")} == {
        "reason": "unknown_schema", "error": "schema id 9", "topic": "prod.clicks", "partition": "4", "offset": "1200",
    }
    assert int(info["time"]) > 0
