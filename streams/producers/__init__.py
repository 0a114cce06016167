"""Producers that publish simulated or recorded events for demos, tests and replays."""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any


@contextmanager
def stop_on_signal() -> Iterator[threading.Event]:
    """An event the first Ctrl-C (SIGINT) or SIGTERM sets: a producer without a count is meant to end that way, so it
    stops between two sends, then flushes and reports what it sent, where an interrupt in the middle of a send lost
    the queued events, the count and the truth. A second signal acts as before (a flush that cannot finish).

    Only the main thread receives signals; in another thread the event is simply never set by one.
    """
    stop = threading.Event()
    previous: dict[int, Any] = {}

    def stopping(signum: int, _frame: FrameType | None) -> None:
        stop.set()
        signal.signal(signum, previous[signum])

    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGINT, signal.SIGTERM):
            previous[sig] = signal.getsignal(sig) or signal.SIG_DFL
            signal.signal(sig, stopping)
    try:
        yield stop
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
