"""The agent's sender against a real broker that acknowledges a batch it never stored.

The edge-rollout CI failure ("pi-a: gaps in seq": an agent's first batches missing from the topic while it went on)
has this shape. Tansu's object-store engine (``memory://`` included) advances an idempotent producer's sequence
before it writes the record; a produce that stops between the two leaves the sequence ahead of the log, and the
client's retry is answered DUPLICATE_SEQUENCE_NUMBER, which librdkafka reports as delivered, without an offset.
Here the sequence is put ahead the way a second writer with the producer's id would, so the next batch gets that
answer from the real broker.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from connectors.kafka import KafkaSettings, create_topics, producer_config, read_topic
from edge_agent.buffer import DiskBuffer
from edge_agent.sender import Sender

pytestmark = pytest.mark.integration


class LogLines(logging.Handler):
    """The messages of the records it is given."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


@pytest.fixture
def librdkafka_lines() -> Iterator[LogLines]:
    """What the sender's librdkafka logs (its ``debug`` contexts), for the producer id it was given."""
    logger = logging.getLogger("edge_agent.librdkafka")
    handler, level = LogLines(), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    yield handler
    logger.removeHandler(handler)
    logger.setLevel(level)


async def advance_sequence(bootstrap: str, topic: str, producer_id: int, base_sequence: int) -> int:
    """One record written as producer ``producer_id`` (epoch 0) at ``base_sequence`` to partition 0; its error code."""
    from aiokafka.client import AIOKafkaClient
    from aiokafka.protocol.produce import ProduceRequest
    from aiokafka.record.default_records import DefaultRecordBatchBuilder

    client = AIOKafkaClient(bootstrap_servers=bootstrap)
    await client.bootstrap()
    try:
        batch = DefaultRecordBatchBuilder(magic=2, compression_type=0, is_transactional=0, producer_id=producer_id,
                                          producer_epoch=0, base_sequence=base_sequence, batch_size=1 << 20)
        batch.append(0, timestamp=None, key=b"other", value=b"other writer", headers=[])
        request = ProduceRequest(transactional_id=None, required_acks=-1, timeout=10_000,
                                 topics=[(topic, [(0, bytes(batch.build()))])])
        node = next(iter(client.cluster.brokers())).nodeId
        response = await client.send(node, request)
        return response.topics[0][1][0][1]
    finally:
        await client.close()


def acquired_producer_id(lines: LogLines) -> int:
    """The one idempotent producer id librdkafka (``debug="eos"``) says it acquired."""
    ids = {int(m) for line in lines.lines for m in re.findall(r"Acquired PID\{Id:(\d+),Epoch:0\}", line)}
    assert len(ids) == 1, lines.lines
    return ids.pop()


def _drain(sender: Sender, buffer: DiskBuffer, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while buffer.depth and time.monotonic() < deadline:
        sender.pump()
        sender.poll(0.1)
    assert buffer.depth == 0, f"{buffer.depth} batches still unacknowledged after {timeout:.0f} s"


def test_a_batch_acknowledged_as_a_duplicate_without_an_offset_is_sent_again(
    kafka_settings: KafkaSettings, tmp_path: Path, librdkafka_lines: LogLines
) -> None:
    create_topics(kafka_settings, ["sensor.readings"], partitions=1)
    topic = kafka_settings.topic("sensor.readings")
    buffer = DiskBuffer(tmp_path / "buffer.sqlite", "pi-dup", sync="normal")
    sender = Sender(buffer, producer_config(kafka_settings, debug="eos"), topic, b"pi-dup")
    try:
        buffer.append(0, b"batch 0", 1, 0)
        _drain(sender, buffer)
        producer_id = acquired_producer_id(librdkafka_lines)
        assert asyncio.run(advance_sequence(kafka_settings.bootstrap_servers, topic, producer_id, 1)) == 0

        buffer.append(1, b"batch 1", 1, 0)  # sent at sequence 1, which the broker has: DUPLICATE_SEQUENCE_NUMBER
        _drain(sender, buffer)
        assert any("duplicate sequence" in line for line in librdkafka_lines.lines)
    finally:
        sender.close()
        buffer.close()
    values = [m.value() for m in read_topic(kafka_settings, "sensor.readings", idle=1.0, timeout=30)]
    assert values == [b"batch 0", b"other writer", b"batch 1"]  # batch 1 sent again, not lost
    assert sender.counters.unconfirmed_acks == 1
