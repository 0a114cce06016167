"""librdkafka's log lines as Python log records: JSON on stderr at the process's level like every other line,
and a failed (re)connect once a minute, not every backoff.

Without a logger librdkafka writes its own ``%3|...|FAIL|`` lines to stderr, a dozen a second while a broker
is unreachable, above the one line a command prints to say what to do. Light on purpose: the edge agent uses it,
its ``LogLimit`` too.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable


class LogLimit:
    """Says when a repeating problem is due to be logged again: once a minute per key, each still counted by the
    caller. A command printing a header each second would otherwise write 86,400 warnings a day to the journal.

    Only the keys of the last minute are remembered: a process that names each new client anew (the edge sender
    starts a new producer after a minute without an acknowledgement) keeps no entry for each for ever.

    Parameters
    ----------
    clock
        Monotonic seconds (tests pass their own).

    Examples
    --------
    >>> limit = LogLimit()
    >>> limit.due("source cmd"), limit.due("source cmd"), limit.due("source csv")
    (True, False, True)
    """

    every_s = 60.0

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._last: dict[str, float] = {}

    def due(self, key: str) -> bool:
        """True at most once per ``every_s`` for ``key``: the caller logs then, and only counts otherwise.

        Parameters
        ----------
        key
            What repeats: the source, the client and broker, or the part of the program that has the problem.
        """
        now = self._clock()
        if now - self._last.get(key, -math.inf) < self.every_s:
            return False
        for old, at in list(self._last.items()):
            if now - at >= self.every_s:
                del self._last[old]
        self._last[key] = now
        return True


class OncePerMinute(LogLimit, logging.Filter):
    """Lets a librdkafka FAIL line (a connection that failed) through once a minute per client and broker.

    librdkafka logs every failed reconnect; during a long outage one line a minute says enough.

    Parameters
    ----------
    clock
        Monotonic seconds (tests pass their own).
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        logging.Filter.__init__(self)
        LogLimit.__init__(self, clock)

    def filter(self, record: logging.LogRecord) -> bool:
        msg = record.getMessage()
        if " FAIL " not in f" {msg} " and not msg.startswith("FAIL"):
            return True
        return self.due(msg.split("]: ", 1)[0])  # FAIL [client#producer-7] [thrd:host:port/bootstrap]


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
