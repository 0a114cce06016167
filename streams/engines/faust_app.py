"""The Faust app every eddyline flow runs on: ``faust.App`` with the two changes its measurements asked for.

- Its stream, outbox and changelog queues are bounded by the bytes they hold (``faust_queue.ByteBoundedQueue``
  of ``QUEUE_BYTES``), not only by their number of events.
- Its consumer lets the broker hold a fetch for ``fetch_wait_ms`` (``faust_transport``; Faust's own 1,500 ms held a
  live flow's input back by about a second).
"""

from __future__ import annotations

from typing import Any

import faust
from mode.utils.queues import ThrowableQueue

from streams.engines.faust_queue import QUEUE_BYTES, ByteBoundedQueue
from streams.engines.faust_transport import FETCH_WAIT_MS


class App(faust.App):
    """``faust.App`` with byte-bounded queues and the fetch wait its consumer is built with.

    Parameters
    ----------
    id
        The app's id (its consumer group).
    fetch_wait_ms
        How long the broker may hold the consumer's fetch (``FETCH_WAIT_MS``).
    options
        Faust's settings.
    """

    def __init__(self, id: str, *, fetch_wait_ms: int = FETCH_WAIT_MS, **options: Any) -> None:
        super().__init__(id, **options)
        self.fetch_wait_ms = fetch_wait_ms

    def FlowControlQueue(self, maxsize: int | None = None, *, clear_on_resume: bool = False) -> ThrowableQueue:
        size = self.conf.stream_buffer_maxsize if maxsize is None else maxsize
        return ByteBoundedQueue(maxsize=size, flow_control=self.flow_control, clear_on_resume=clear_on_resume,
                                unit_bytes=max(1, QUEUE_BYTES // size) if size > 0 else QUEUE_BYTES)
