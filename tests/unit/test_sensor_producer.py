"""The sensor producer lets go of its Kafka client: flushed and closed on close() or at the end of a with block."""

from __future__ import annotations

import pytest

from connectors.broker import free_port
from connectors.kafka import DeliveryError, KafkaSettings
from streams.producers.sensors import SensorProducer


def _settings() -> KafkaSettings:
    return KafkaSettings(bootstrap_servers=f"127.0.0.1:{free_port()}", extra={"log_level": "0"})  # nobody there


def test_a_with_block_flushes_and_closes_the_client() -> None:
    with SensorProducer(_settings(), devices=1) as producer:
        assert not producer.closed
    assert producer.closed
    with pytest.raises(RuntimeError, match="closed"):
        producer.producer._producer.produce("t", b"x")
    producer.close()  # twice is fine


def test_close_says_what_was_not_delivered_and_still_closes() -> None:
    producer = SensorProducer(_settings(), devices=1)
    producer.producer.produce_raw("sensor.readings", b"x", key="d")
    with pytest.raises(DeliveryError, match="unacknowledged"):
        producer.close(0.2)
    with pytest.raises(RuntimeError, match="closed"):
        producer.producer._producer.produce("t", b"x")
