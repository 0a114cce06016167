"""``EventProducer`` as a context manager: its client is released on the way out, so it stops reconnecting."""

from __future__ import annotations

import pytest

from connectors.kafka import EventProducer, KafkaSettings
from schemas import AvroSerde


def _unreachable() -> KafkaSettings:
    return KafkaSettings(bootstrap_servers="127.0.0.1:9", namespace="t.")  # port 9 (discard): nothing answers


def test_leaving_the_block_closes_the_client_and_a_second_close_does_nothing() -> None:
    with EventProducer(_unreachable(), AvroSerde()) as producer:
        pass
    with pytest.raises(RuntimeError, match="closed"):
        producer._producer.flush(0)  # librdkafka's handle is gone: no thread left reconnecting
    producer.close()


def test_leaving_the_block_on_an_error_closes_the_client_and_counts_what_it_purged() -> None:
    with pytest.raises(KeyError), EventProducer(_unreachable(), AvroSerde()) as producer:
        producer.produce_raw("sensor.readings", b"never sent", b"pi")
        raise KeyError("the caller's own error leaves the block")
    assert producer.failed == 1  # purged after 5 s without a broker, and said so
    with pytest.raises(RuntimeError, match="closed"):
        producer._producer.flush(0)
