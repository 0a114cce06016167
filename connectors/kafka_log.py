"""librdkafka's log lines as Python log records: JSON on stderr at the process's level like every other line,
and a failed (re)connect once a minute, not every backoff.

Without a logger librdkafka writes its own ``%3|...|FAIL|`` lines to stderr, a dozen a second while a broker
is unreachable, above the one line a command prints to say what to do. Light on purpose: the edge agent uses it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable


class OncePerMinute(logging.Filter):
    """Lets a librdkafka FAIL line (a connection that failed) through once a minute per client and broker.

    librdkafka logs every failed reconnect; during a long outage one line a minute says enough. Only the clients
    and brokers of the last minute are remembered: a process that makes new clients while its broker is away (the
    edge sender starts a new producer after a minute without an acknowledgement) names each one anew.

    Parameters
    ----------
    clock
        Monotonic seconds (tests pass their own).
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        self._clock = clock
        self._last: dict[str, float] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        msg = record.getMessage()
        if " FAIL " not in f" {msg} " and not msg.startswith("FAIL"):
            return True
        key = msg.split("]: ", 1)[0]  # FAIL [client#producer-7] [thrd:host:port/bootstrap]
        now = self._clock()
        if now - self._last.get(key, -1e9) < 60:
            return False
        for old, at in list(self._last.items()):
            if now - at >= 60:
                self._last.pop(old, None)
        self._last[key] = now
        return True


def librdkafka_logger(name: str = "librdkafka") -> logging.Logger:
    """The logger to pass as a client's ``logger`` property: librdkafka's lines reach it when the client polls.

    Parameters
    ----------
    name
        The logger's name (the ``logger`` key of each JSON line).
    """
    logger = logging.getLogger(name)
    if not any(isinstance(f, OncePerMinute) for f in logger.filters):
        logger.addFilter(OncePerMinute())
    return logger
