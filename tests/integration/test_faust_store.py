"""The Faust table store's bulk read of a changelog, against the real broker: latest value per key, tombstones,
and how far it read, so that Faust's own recovery goes on from exactly there."""

from __future__ import annotations

import pytest
from confluent_kafka import Producer

from connectors.kafka import KafkaSettings, create_topics, producer_config
from streams.engines.faust import MARKER
from streams.engines.faust_store import read_changelog

pytestmark = pytest.mark.integration


def test_read_changelog_keeps_the_latest_value_per_key_and_the_last_offset_per_partition(kafka_settings: KafkaSettings):
    topic = kafka_settings.topic("processors-changelog")
    create_topics(kafka_settings.model_copy(update={"namespace": ""}), [topic])
    producer = Producer(producer_config(kafka_settings))
    writes = [(0, b"a", b"a1"), (0, b"b", b"b1"), (0, b"a", b"a2"), (0, b"b", None), (0, MARKER, None),
              (1, b"c", b"c1"), (1, MARKER, None), (1, b"c", b"c2" * 5000), (1, MARKER, None)]
    for partition, key, value in writes:
        producer.produce(topic, value=value, key=key, partition=partition)
        producer.flush()  # one record per batch: the broker's reported end is then the true end
    values, last = read_changelog(kafka_settings, topic, [0, 1, 2], timeout_s=60)
    assert values == {0: {b"a": b"a2", b"b": None, MARKER: None}, 1: {b"c": b"c2" * 5000, MARKER: None}, 2: {}}
    assert last == {0: 4, 1: 3}  # partition 2 is empty: Faust's recovery reads it from the start, as before


def test_read_changelog_ends_at_a_partition_whose_last_offset_is_no_record(kafka_settings: KafkaSettings):
    """A transaction's commit marker takes the last offset: the read must end there, not wait for a record."""
    topic = kafka_settings.topic("processors-changelog-txn")
    create_topics(kafka_settings.model_copy(update={"namespace": ""}), [topic])
    producer = Producer(producer_config(kafka_settings, **{"transactional.id": f"{topic}-writer"}))
    producer.init_transactions(30)
    producer.begin_transaction()
    producer.produce(topic, value=b"a1", key=b"a", partition=0)
    producer.commit_transaction(30)
    values, last = read_changelog(kafka_settings, topic, [0], timeout_s=30)
    assert values == {0: {b"a": b"a1"}}
    assert last == {0: 0}


def test_read_changelog_reads_a_last_batch_of_many_records_to_its_end(kafka_settings: KafkaSettings):
    """The end is the one a fetch reports: Tansu's ListOffsets answers a last batch's start plus one (1 for one batch
    of 4), where a reader that trusted it kept the first state of the batch and dropped the rest."""
    topic = kafka_settings.topic("processors-changelog-batched")
    create_topics(kafka_settings.model_copy(update={"namespace": ""}), [topic], partitions=1)
    producer = Producer(producer_config(kafka_settings, **{"linger.ms": 1000}))
    for key, value in [(b"a", b"a1"), (b"b", b"b1"), (b"a", b"a2"), (MARKER, None)]:
        producer.produce(topic, value=value, key=key, partition=0)
    producer.flush()  # the four in one batch
    values, last = read_changelog(kafka_settings, topic, [0], timeout_s=60)
    assert values == {0: {b"a": b"a2", b"b": b"b1", MARKER: None}}
    assert last == {0: 3}
