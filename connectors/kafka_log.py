"""librdkafka's log lines as Python log records: JSON on stderr at the process's level like every other line,
and a failed (re)connect once a minute, not every backoff.

Without a logger librdkafka writes its own ``%3|...|FAIL|`` lines to stderr, a dozen a second while a broker
is unreachable, above the one line a command prints to say what to do. Light on purpose: the edge agent uses it.
"""

from __future__ import annotations

import logging
import time


class OncePerMinute(logging.Filter):
    """Lets a librdkafka FAIL line (a connection that failed) through once a minute per client and broker.

    librdkafka logs every failed reconnect; during a long outage one line a minute says enough.
    """

    def __init__(self) -> None:
        super().__init__()
        self._last: dict[str, float] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        msg = record.getMessage()
        key = msg.split(":", 1)[0] if " FAIL " in f" {msg} " or msg.startswith("FAIL") else ""
        if not key:
            return True
        now = time.monotonic()
        if now - self._last.get(key, -1e9) < 60:
            return False
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
