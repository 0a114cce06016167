"""Faust's stream buffers hold a bounded number of bytes, not only of events (``streams.engines.faust_queue``)."""

from __future__ import annotations

from pathlib import Path

from faust.types.tuples import Message

from connectors.kafka import KafkaSettings
from streams.engines.faust_app import App
from streams.engines.faust_queue import QUEUE_BYTES, ByteBoundedQueue, message_bytes

SMALL, LARGE = 2_200, 170_000  # a simulator batch of 150 readings; an MQTT bridge batch of 10,000


class _Event:
    """What Faust queues: an event and the Kafka message it came in."""

    def __init__(self, size: int) -> None:
        self.message = Message("sensor.readings", 0, 0, 0.0, 0, None, b"device-1", b"x" * size, None)


def _fill(queue: ByteBoundedQueue, size: int) -> int:
    """Events of ``size`` bytes put until the queue is full, as Faust's conductor does; how many went in."""
    n = 0
    while not queue.full():
        queue.put_nowait(_Event(size))
        n += 1
    return n


def test_small_events_fill_the_queue_by_count_and_large_ones_by_bytes() -> None:
    app = App("queue-test")
    small = app.FlowControlQueue(clear_on_resume=True)
    assert isinstance(small, ByteBoundedQueue)
    assert _fill(small, SMALL) == app.conf.stream_buffer_maxsize == 4_096  # as Faust's own queue
    large = app.FlowControlQueue(clear_on_resume=True)
    n = _fill(large, LARGE)
    held = n * message_bytes(_Event(LARGE))
    assert 50 < n < 200 and QUEUE_BYTES - LARGE <= held <= QUEUE_BYTES + LARGE  # 4,096 of them: 700 MB
    large.get_nowait()
    assert not large.full() and large.qsize() < large.maxsize
    large.clear()
    assert large.qsize() == 0 and large.empty()


def test_the_fetch_pauses_on_bytes() -> None:
    queue = App("queue-test").FlowControlQueue(clear_on_resume=True)
    paused: list[int] = []
    for i in range(200):
        queue.put_nowait_enhanced(_Event(LARGE), on_pressure_high=lambda i=i: paused.append(i),
                                  on_pressure_drop=lambda: None)
    assert paused and paused[0] < 100  # Faust stops fetching the partition at 80 % of the bound


def test_the_flow_apps_queues_are_byte_bounded(tmp_path: Path) -> None:
    from streams.engines.faust import build_app
    from streams.flows import flow_spec

    app = build_app(flow_spec("anomaly"), KafkaSettings(bootstrap_servers="127.0.0.1:9"), state_dir=tmp_path)
    assert isinstance(app.FlowControlQueue(clear_on_resume=True), ByteBoundedQueue)
