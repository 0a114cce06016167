"""Consumer lag against the real broker: a known number of messages produced, consumed and committed.

The embedded broker answers ListOffsets with a wrong end offset once a partition holds more than one
record batch (the start of its last batch), so each partition here is written in several flushed batches:
lag computed from ListOffsets would come out wrong and these tests would fail.
"""

from __future__ import annotations

import pytest
from confluent_kafka import OFFSET_BEGINNING, KafkaException, TopicPartition
from prometheus_client import REGISTRY

from connectors.kafka import KafkaSettings, create_topics, make_consumer, make_producer
from connectors.lag import LagMonitor, LagReader

pytestmark = pytest.mark.integration
PRODUCED = {0: 5_000, 1: 37}  # messages per partition
BATCH = 700


def produce(settings: KafkaSettings, topic: str) -> None:
    producer = make_producer(settings)
    for partition, count in PRODUCED.items():
        for i in range(count):
            producer.produce(settings.topic(topic), value=b"x" * 64, partition=partition)
            if (i + 1) % BATCH == 0:
                producer.flush(30)
    assert producer.flush(30) == 0
    producer.close()


def consume_and_commit(settings: KafkaSettings, group: str, topic: str, partition: int, count: int) -> None:
    """Consume exactly ``count`` messages of one partition from its start and commit after them."""
    consumer = make_consumer(settings, group)
    consumer.assign([TopicPartition(settings.topic(topic), partition, OFFSET_BEGINNING)])
    taken = []
    while len(taken) < count:
        taken += [m for m in consumer.consume(count - len(taken), 5.0) if m.error() is None]
    assert [m.offset() for m in taken] == list(range(count))
    consumer.commit(message=taken[-1], asynchronous=False)
    consumer.close()


def test_lag_is_high_watermark_minus_committed_offset(kafka_settings) -> None:
    create_topics(kafka_settings, ["lagged"], partitions=2)
    produce(kafka_settings, "lagged")
    group = kafka_settings.topic("lag-probe")
    consume_and_commit(kafka_settings, group, "lagged", 0, 1_234)
    reader = LagReader(kafka_settings)
    try:
        lags = {p.partition: p for p in reader.lag(group, [kafka_settings.topic("lagged")])}
    finally:
        reader.close()
    assert {p: (x.committed, x.high, x.lag) for p, x in lags.items()} == {
        0: (1_234, 5_000, 5_000 - 1_234),
        1: (None, 37, 37),  # nothing committed: the group starts at the log start
    }


def test_monitor_commits_engine_positions_and_sets_the_gauge(kafka_settings) -> None:
    create_topics(kafka_settings, ["lagged"], partitions=2)
    produce(kafka_settings, "lagged")
    group = kafka_settings.topic("bytewax-like")
    positions = {("lagged", 0): 4_000, ("lagged", 1): 37}
    monitor = LagMonitor(kafka_settings, "probe-flow", group, ["lagged"], positions=lambda: positions)
    try:
        assert sorted((p.partition, p.lag) for p in monitor.refresh()) == [(0, 1_000), (1, 0)]
        positions[("lagged", 0)] = 4_900  # the engine moved on
        assert sorted((p.partition, p.lag) for p in monitor.refresh()) == [(0, 100), (1, 0)]
    finally:
        monitor.stop()
        monitor._close()
    for partition, lag in ((0, 100), (1, 0)):
        labels = {"flow": "probe-flow", "topic": "lagged", "partition": str(partition)}
        assert REGISTRY.get_sample_value("eddyline_consumer_lag", labels) == lag
    reader = LagReader(kafka_settings)  # the commits are in Kafka, for any tool to read
    try:
        assert reader.committed(group, [(kafka_settings.topic("lagged"), 0)]) == {
            (kafka_settings.topic("lagged"), 0): 4_900
        }
    finally:
        reader.close()


def test_a_partition_without_a_current_reading_loses_its_series(kafka_settings, monkeypatch) -> None:
    """An old value exported as current hides a lag that grows while the broker does not answer."""
    create_topics(kafka_settings, ["lagged"], partitions=2)
    produce(kafka_settings, "lagged")
    positions = {("lagged", 0): 4_000, ("lagged", 1): 30}
    monitor = LagMonitor(kafka_settings, "stale-flow", kafka_settings.topic("stale"), ["lagged"],
                         positions=lambda: positions)

    def gauge() -> dict[int, float | None]:
        return {partition: REGISTRY.get_sample_value("eddyline_consumer_lag", {
            "flow": "stale-flow", "topic": "lagged", "partition": str(partition)}) for partition in PRODUCED}

    try:
        monitor.refresh()
        assert gauge() == {0: 1_000, 1: 7}
        reader = monitor._reader
        answered = reader.watermarks
        monkeypatch.setattr(reader, "watermarks", lambda starts: {  # no fetch answer for partition 1 in time
            key: marks for key, marks in answered(starts).items() if key[1] != 1})
        assert [p.partition for p in monitor.refresh()] == [0]
        assert gauge() == {0: 1_000, 1: None}
        monkeypatch.undo()
        monitor.refresh()
        assert gauge() == {0: 1_000, 1: 7}
        monitor._reader = LagReader(KafkaSettings(bootstrap_servers="127.0.0.1:1"), timeout_s=0.5)  # broker away
        reader.close()
        with pytest.raises(KafkaException):
            monitor.refresh()
        assert gauge() == {0: None, 1: None} and monitor.last == []
    finally:
        monitor.stop()
        monitor._close()


def test_a_caught_up_group_has_no_lag(kafka_settings) -> None:
    create_topics(kafka_settings, ["lagged"], partitions=2)
    produce(kafka_settings, "lagged")
    group = kafka_settings.topic("caught-up")
    for partition, count in PRODUCED.items():
        consume_and_commit(kafka_settings, group, "lagged", partition, count)
    reader = LagReader(kafka_settings)
    try:
        assert [(p.partition, p.high, p.lag) for p in reader.lag(group, [kafka_settings.topic("lagged")])] == [
            (0, 5_000, 0),
            (1, 37, 0),
        ]
    finally:
        reader.close()


def test_watermarks_fetch_from_the_end_not_the_committed_offset(kafka_settings) -> None:
    create_topics(kafka_settings, ["far"], partitions=1)
    name = kafka_settings.topic("far")
    producer = make_producer(kafka_settings)
    for _ in range(3_000):  # one big batch, far behind the group
        producer.produce(name, value=b"x" * 64, partition=0)
    producer.flush(30)
    producer.produce(name, value=b"last", partition=0)  # a batch of its own: the end ListOffsets may report
    assert producer.flush(30) == 0
    producer.close()
    reader = LagReader(kafka_settings)
    try:
        assert reader.watermarks({(name, 0): None}) == {(name, 0): (0, 3_001)}
        assert reader.watermarks({(name, 0): 10}) == {(name, 0): (0, 3_001)}
        assert reader.messages_read <= 2  # at most the last batch each time, not the backlog behind the group
    finally:
        reader.close()
