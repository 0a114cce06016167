"""Faust's commit never passes an offset the flow has not processed, with real Faust bookkeeping.

The scenario of the rebalance window, replayed on Faust's own consumer: offset 10 is in the agent's
buffer (tracked, not yet processed) when the rebalance starts; the stream skips 11..15 and Faust
acknowledges them. Faust alone would commit 16, past the unprocessed 10; with the adapter's guard it
commits nothing until 10 is processed, and then only 11, so 11..15 are fetched again after the seek.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from streams.engines.faust import _ack_only_processed


def _consumer(guarded: bool) -> tuple[Any, Any]:
    import faust
    from faust.types import TP

    async def build() -> Any:
        app = faust.App("eddyline-guard-test", broker="kafka://127.0.0.1:9", web_enabled=False, autodiscover=False)
        topic = app.topic("in", key_serializer="raw", value_serializer="raw")
        app.topics.add(topic)
        await app.topics._update_indices()  # what the worker does at start: "in" is an acking topic
        if guarded:
            _ack_only_processed(app.consumer, "test")
        return app.consumer

    return asyncio.run(build()), TP("in", 0)


def _message(offset: int, processed: bool) -> Any:
    from faust.types.tuples import ConsumerMessage

    m = ConsumerMessage("in", 0, offset, 0.0, 0, None, b"k", b"v", None)
    m.tracked = processed  # a stream tracks what it hands to the agent; a skipped event is never tracked
    return m


@pytest.mark.parametrize("committed", [10, None], ids=["after-a-commit", "before-the-first-commit"])
def test_skipped_events_do_not_move_the_commit_past_an_unprocessed_one(committed: int | None) -> None:
    unguarded, tp = _consumer(guarded=False)
    guarded, _ = _consumer(guarded=True)
    for consumer in (unguarded, guarded):
        consumer._committed_offset[tp] = committed
        in_flight = _message(10, processed=True)
        for offset in range(11, 16):
            _message(offset, processed=False).ack(consumer)  # skipped during the rebalance
        consumer.in_flight = in_flight
    assert unguarded._filter_committable_offsets({tp}) == {tp: 16}  # Faust alone: 10 would be lost
    assert guarded._filter_committable_offsets({tp}) == {}
    guarded.in_flight.ack(guarded)  # the agent processed 10
    assert guarded._filter_committable_offsets({tp}) == {tp: 11}
