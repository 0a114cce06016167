"""bench scale's Faust changelog statistics, read back from the real broker: what was written, the latest size
per key, and what one record per key and second would have written."""

from __future__ import annotations

import pytest
from confluent_kafka import Producer

from benchmarks.scale import _changelog
from connectors.kafka import KafkaSettings, create_topics, producer_config
from streams.engines.faust import MARKER, TABLE

pytestmark = pytest.mark.integration


def test_changelog_statistics_count_every_record_of_a_last_batch_of_many(kafka_settings: KafkaSettings) -> None:
    topic = f"{kafka_settings.topic('eddyline-sensor-anomaly')}-{TABLE}-changelog"
    create_topics(kafka_settings.model_copy(update={"namespace": ""}), [topic], partitions=2)
    producer = Producer(producer_config(kafka_settings, **{"linger.ms": 1000}))
    second = 1_700_000_000_000
    for partition, key, value, ms in [(0, b"a", b"x" * 10, second), (0, b"a", b"x" * 30, second + 500),
                                      (0, b"b", b"x" * 20, second + 1500), (0, MARKER, None, second + 1600),
                                      (1, b"c", b"x" * 5, second)]:
        producer.produce(topic, value=value, key=key, partition=partition, timestamp=ms)
    producer.flush()  # partition 0's four records in one batch
    written, state_bytes, keys, counts = _changelog(kafka_settings)
    assert (written, state_bytes, keys) == (65, 55, 3)
    assert {k: counts[k] for k in ("records", "bytes", "markers", "coalesced_records", "coalesced_bytes", "complete")
            } == {"records": 4, "bytes": 65, "markers": 1, "coalesced_records": 3, "coalesced_bytes": 55,
                  "complete": 1}
