"""Producing, reading and consuming through the real (Tansu) broker with eddyline's Kafka helpers."""

from __future__ import annotations

from typing import Any

import pytest
from confluent_kafka import KafkaError, TopicPartition

import connectors.kafka

from connectors.broker import EmbeddedBroker
from connectors.kafka import (
    DeliveryError,
    EventProducer,
    KafkaSettings,
    create_topics,
    make_admin,
    make_consumer,
    read_latest,
    read_to_end,
    read_topic,
)
from schemas import AvroSerde, ValidationError, catalog, new_id

pytestmark = pytest.mark.integration

T0 = 1_767_225_600_000


def _batch(device: str, seq: int) -> dict:
    return {
        "event_id": new_id(), "event_time": T0 + seq * 1000, "producer": "test", "device_id": device, "seq": seq,
        "series": [{"sensor": "temp", "unit": "degC", "timestamps": [T0 + seq * 1000, T0 + seq * 1000 + 500],
                    "values": [20.0 + seq, 20.5 + seq], "local_flags": None}],
        "local_model": None,
    }


def _partitions(s: KafkaSettings, logical: str) -> int:
    return len(make_admin(s).list_topics(s.topic(logical), timeout=5).topics[s.topic(logical)].partitions)


def test_create_topics_is_idempotent(kafka_settings: KafkaSettings) -> None:
    create_topics(kafka_settings, ["sensor.readings", "scores.anomaly"])
    create_topics(kafka_settings, ["sensor.readings", "scores.anomaly", "alerts"], partitions=1)
    assert _partitions(kafka_settings, "sensor.readings") == 3
    assert _partitions(kafka_settings, "alerts") == 1
    topics = make_admin(kafka_settings).list_topics(timeout=5).topics
    mine = sorted(t for t in topics if t.startswith(kafka_settings.namespace))
    ns = kafka_settings.namespace
    assert mine == [f"{ns}alerts", f"{ns}scores.anomaly", f"{ns}sensor.readings"]


class _LosesItsFirstTopics:
    """A real admin whose first CreateTopics is acknowledged and then lost, as Tansu on S3 loses one of two
    topics two clients create at the same moment: the topics are deleted right after the broker's answer."""

    def __init__(self, admin: object) -> None:
        self.admin, self.requests = admin, 0

    def create_topics(self, new: list, **kw: object) -> dict:
        self.requests += 1
        futures = self.admin.create_topics(new, **kw)
        if self.requests == 1:
            for future in futures.values():
                future.result(10)
            for future in self.admin.delete_topics([t.topic for t in new], operation_timeout=10).values():
                future.result(10)
        return futures

    def __getattr__(self, name: str) -> object:
        return getattr(self.admin, name)


def test_create_topics_asks_again_for_a_topic_the_broker_acknowledged_and_lost(
        kafka_settings: KafkaSettings, monkeypatch: pytest.MonkeyPatch) -> None:
    import connectors.kafka as kafka

    admin = _LosesItsFirstTopics(kafka.make_admin(kafka_settings))
    monkeypatch.setattr(kafka, "make_admin", lambda *_, **__: admin)
    create_topics(kafka_settings, ["alerts.retry"], timeout=10)
    assert admin.requests >= 2
    assert _partitions(kafka_settings, "alerts.retry") == kafka_settings.partitions


def test_produce_and_read_back_events(kafka_settings: KafkaSettings) -> None:
    create_topics(kafka_settings, ["sensor.readings"])
    serde = AvroSerde()
    sent = {}
    with EventProducer(kafka_settings, serde) as producer:
        for seq in range(30):
            device = f"dev-{seq % 5}"
            rec = _batch(device, seq)
            sent[rec["event_id"]] = rec
            producer.produce("sensor.readings", catalog.SENSOR_BATCH, rec, key=device,
                             headers={"trace": f"t{seq}".encode()})
    assert (producer.delivered, producer.failed) == (30, 0)

    msgs = read_topic(kafka_settings, "sensor.readings", expected=30)
    assert len(msgs) == 30
    got = {}
    for m in msgs:
        assert m.topic() == kafka_settings.topic("sensor.readings")
        rec = serde.decode(m.value(), catalog.SENSOR_BATCH)
        assert m.key() == rec["device_id"].encode()
        assert dict(m.headers())["trace"] == f"t{rec['seq']}".encode()
        got[rec["event_id"]] = rec
    assert got == sent

    # one key, one partition: per-device order survives
    by_device: dict[bytes, set[int]] = {}
    for m in msgs:
        by_device.setdefault(m.key(), set()).add(m.partition())
    assert all(len(p) == 1 for p in by_device.values())
    for device in by_device:
        seqs = [serde.decode(m.value(), catalog.SENSOR_BATCH)["seq"] for m in msgs if m.key() == device]
        assert seqs == sorted(seqs)


def test_read_topic_stops_when_idle_and_on_missing_topic(kafka_settings: KafkaSettings) -> None:
    assert read_topic(kafka_settings, "never.written", timeout=5, idle=0.5) == []
    with EventProducer(kafka_settings) as producer:
        for i in range(3):
            producer.produce_raw("raw", f"v{i}".encode(), key=None)
    msgs = read_topic(kafka_settings, "raw", timeout=10)
    assert sorted(m.value() for m in msgs) == [b"v0", b"v1", b"v2"]


def test_invalid_event_is_refused_before_sending(kafka_settings: KafkaSettings) -> None:
    bad = _batch("dev-1", 1)
    bad["series"][0]["values"] = [float("nan"), 1.0]
    with EventProducer(kafka_settings) as producer:
        with pytest.raises(ValidationError, match="NaN"):
            producer.produce("sensor.readings", catalog.SENSOR_BATCH, bad, key="dev-1")
        assert len(producer) == 0
    assert producer.delivered == 0


def test_message_over_the_size_limit_raises(kafka_settings: KafkaSettings) -> None:
    producer = EventProducer(kafka_settings, **{"message.max.bytes": 10_000})
    with pytest.raises(DeliveryError, match="too large"):
        producer.produce_raw("big", b"x" * 20_000, key="k")
    assert producer.failed == 1
    producer.produce_raw("big", b"x" * 100, key="k")
    producer.close(10)
    assert producer.delivered == 1


def test_flush_raises_when_the_broker_is_gone() -> None:
    with EmbeddedBroker(stop_timeout=0.5) as lonely:
        s = KafkaSettings(bootstrap_servers=lonely.bootstrap, namespace="gone.")
        producer = EventProducer(s, **{"message.timeout.ms": 1500})
        producer.produce_raw("x", b"warm-up", key="k")
        producer.flush(10)
    for i in range(5):
        producer.produce_raw("x", f"lost-{i}".encode(), key="k")
    with pytest.raises(DeliveryError, match="5 messages were not delivered: gone.x"):
        producer.flush(30)
    assert (producer.delivered, producer.failed) == (1, 5)
    producer.close(1)  # reported once; nothing is pending any more


def test_consumer_group_resumes_after_the_last_commit(kafka_settings: KafkaSettings) -> None:
    """At least once: what was processed and committed is not read again, the rest is."""
    create_topics(kafka_settings, ["clicks"], partitions=1)
    with EventProducer(kafka_settings) as producer:
        for i in range(20):
            producer.produce_raw("clicks", str(i).encode(), key="u")
    topic = kafka_settings.topic("clicks")
    group = kafka_settings.topic("group")

    first = make_consumer(kafka_settings, group)
    first.subscribe([topic])
    seen: list[int] = []
    while len(seen) < 20:
        msg = first.poll(15)
        assert msg is not None, "no message from the group consumer"
        assert msg.error() is None or msg.error().code() == KafkaError._PARTITION_EOF
        if msg.error() is None:
            seen.append(int(msg.value()))
            if int(msg.value()) == 11:
                first.commit(message=msg, asynchronous=False)
    first.close()  # 12..19 were read but not committed, as after a crash
    committed = make_consumer(kafka_settings, group).committed([TopicPartition(topic, 0)], timeout=10)
    assert committed[0].offset == 12

    second = make_consumer(kafka_settings, group)
    second.subscribe([topic])
    again: list[int] = []
    while len(again) < 8:
        msg = second.poll(15)
        assert msg is not None, f"got only {again}"
        if msg.error() is None:
            again.append(int(msg.value()))
    second.close()
    assert seen == list(range(20)) and again == list(range(12, 20))


def test_read_latest_gives_a_compacted_topic_s_last_value_per_key_and_drops_tombstoned_keys(
        kafka_settings: KafkaSettings) -> None:
    create_topics(kafka_settings, ["edge.rollouts"])  # compacted (TOPIC_CONFIGS)
    with EventProducer(kafka_settings) as producer:
        for key, value in [("rpi4", b"v1"), ("jetson", b"v1"), ("rpi4", b"v2"), ("gone", b"v1"), ("gone", None)]:
            producer.produce_raw("edge.rollouts", value, key=key)
    assert read_latest(kafka_settings, "edge.rollouts", timeout=20) == {b"rpi4": b"v2", b"jetson": b"v1"}


class _CountedConsumer:
    """A real consumer whose fetches (``consume`` calls, each up to a fetch wait) and assignments are counted."""

    def __init__(self, consumer: Any) -> None:
        self._consumer = consumer
        self.consumes = 0
        self.assigned: list[int] = []

    def consume(self, *args: Any) -> Any:
        self.consumes += 1
        return self._consumer.consume(*args)

    def assign(self, partitions: list[TopicPartition]) -> None:
        self.assigned.extend(tp.partition for tp in partitions)
        self._consumer.assign(partitions)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._consumer, name)


def test_read_to_end_fetches_only_partitions_with_something_to_read(kafka_settings: KafkaSettings, monkeypatch) -> None:
    """A fetch at a partition's end waits 500 ms (``READ_TO_END_FETCH``) for records before it reports the end:
    an idle topic read again, or an empty partition, is not fetched. The records are written in batches of
    several, whose start the broker (Tansu) reports as the partition's end: they are read all the same."""
    readers: list[_CountedConsumer] = []
    make = connectors.kafka.make_consumer
    monkeypatch.setattr(connectors.kafka, "make_consumer", lambda *a, **k: readers.append(_CountedConsumer(
        make(*a, **k))) or readers[-1])
    create_topics(kafka_settings, ["records"], partitions=3)

    def write(values: list[bytes]) -> None:
        with EventProducer(kafka_settings, **{"linger.ms": 200}) as out:  # one batch
            for v in values:
                out.produce_raw("records", v, key=b"one-key")

    def read(positions: dict[int, int], ends: dict[int, int]) -> list[bytes]:
        messages, pending = read_to_end(kafka_settings, "records", positions, timeout=60, ends=ends)
        assert not pending
        return [m.value() for m in messages]

    assert read({}, {}) == [] and readers[-1].consumes == 0  # three empty partitions
    write([b"first-%d" % i for i in range(5)])
    positions: dict[int, int] = {}
    ends: dict[int, int] = {}
    assert read(positions, ends) == [b"first-%d" % i for i in range(5)]
    [partition] = readers[-1].assigned  # the two empty ones were not fetched
    assert positions[partition] == ends[partition] == 5
    assert read(positions, ends) == [] and readers[-1].consumes == 0  # nothing came: no fetch
    write([b"then-0", b"then-1"])
    assert read(positions, ends) == [b"then-0", b"then-1"] and readers[-1].assigned == [partition]
    assert read(positions, ends) == [] and readers[-1].consumes == 0
    # a position no call read to the end at may lie inside the last batch, where ListOffsets says the end is
    assert read({partition: 6}, {}) == [b"then-1"] and readers[-1].consumes > 0
