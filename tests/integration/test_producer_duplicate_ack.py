"""``EventProducer`` (every flow's sink to Kafka, the gateway's producer) against a real broker that acknowledges a
record it never stored: the record is sent again and ``flush`` returns once the copy is acknowledged.

The broker's answer is brought about as in ``test_edge_duplicate_ack``: a second writer with the producer's id puts
its sequence ahead, so the next record gets DUPLICATE_SEQUENCE_NUMBER, which librdkafka reports as delivered
without an offset.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Iterator

import pytest

from connectors.gateway.producer import GatewayProducer
from connectors.kafka import EventProducer, KafkaSettings, create_topics, read_topic
from tests.integration.test_edge_duplicate_ack import LogLines, acquired_producer_id, advance_sequence

pytestmark = pytest.mark.integration


@pytest.fixture
def librdkafka() -> Iterator[tuple[logging.Logger, LogLines]]:
    """A logger of its own for the producer's librdkafka, and the lines it gets."""
    logger = logging.getLogger(f"tests.librdkafka.{uuid.uuid4().hex}")
    handler = LogLines()
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    yield logger, handler
    logger.removeHandler(handler)


@pytest.mark.parametrize("kind", [EventProducer, GatewayProducer])
def test_a_record_acknowledged_as_a_duplicate_without_an_offset_is_stored_before_flush_returns(
    kafka_settings: KafkaSettings, librdkafka: tuple[logging.Logger, LogLines], kind: type[EventProducer]
) -> None:
    create_topics(kafka_settings, ["sensor.readings"], partitions=1)
    topic = kafka_settings.topic("sensor.readings")
    logger, lines = librdkafka
    with kind(kafka_settings, debug="eos", logger=logger) as producer:
        producer.produce_raw("sensor.readings", b"record 0", b"pi-dup")
        producer.flush()
        producer_id = acquired_producer_id(lines)
        assert asyncio.run(advance_sequence(kafka_settings.bootstrap_servers, topic, producer_id, 1)) == 0

        producer.produce_raw("sensor.readings", b"record 1", b"pi-dup", serve=False)  # as a flow's sink does
        producer.poll()
        producer.flush()  # sent at sequence 1, which the broker has: answered DUPLICATE_SEQUENCE_NUMBER
        assert any("duplicate sequence" in line for line in lines.lines)
        assert (producer.unconfirmed_acks, producer.delivered, producer.failed, len(producer)) == (1, 2, 0, 0)
    values = [m.value() for m in read_topic(kafka_settings, "sensor.readings", idle=1.0, timeout=30)]
    assert values == [b"record 0", b"other writer", b"record 1"]  # record 1 sent again, not lost


def test_acks_0_set_by_librdkafkas_own_name_sends_each_record_once(kafka_settings: KafkaSettings) -> None:
    """``request.required.acks`` in ``[kafka] extra`` wins over ``producer_config``'s ``acks=all``: its reports carry
    no offset, and reading ``acks`` instead took each for an unconfirmed one (10 records became 874,130 in 5 s)."""
    acks_0 = {"enable.idempotence": "false", "request.required.acks": "0"}
    settings = kafka_settings.model_copy(update={"extra": acks_0})
    create_topics(settings, ["raw"], partitions=1)
    with EventProducer(settings) as producer:
        for i in range(10):
            producer.produce_raw("raw", b"record %d" % i, b"k")
        producer.flush(2.0)
        assert (producer.unconfirmed_acks, producer.delivered) == (0, 10)
    assert len(read_topic(settings, "raw", idle=1.0, timeout=30)) == 10
