"""Acknowledgements that do not prove a record was stored: "delivered" without an offset.

librdkafka reports a batch the broker answered DUPLICATE_SEQUENCE_NUMBER as delivered, with no offset: the
broker says it stored that sequence before. Tansu's object-store engine (0.6.0) says so for a batch it never
stored (it advances the producer's sequence before it writes the record, and nothing rolls that back when the
write fails), so such an acknowledgement proves nothing and the record is sent again. With ``acks=0`` no
acknowledgement carries an offset, and none is checked.

Only ``confluent_kafka`` is imported here: the edge agent shares this module and must stay light.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Mapping
from typing import Any

from confluent_kafka import KafkaError, Message

LOG_EVERY_S = 60.0  # repeats of the warning are held back this long


def offsets_reported(conf: Mapping[str, Any]) -> bool:
    """Whether a producer with this librdkafka configuration gets an offset with every acknowledgement.

    Parameters
    ----------
    conf
        The producer's librdkafka configuration (``acks`` or its alias ``request.required.acks``; ``all`` by
        default). The client sets properties in the mapping's order, so where both are there the later wins, as
        ``[kafka] extra``'s ``request.required.acks`` wins over ``producer_config``'s ``acks``: reading the other
        one would take every acks=0 report for an unconfirmed one and send the record again, without end.

    Examples
    --------
    >>> from connectors.kafka_acks import offsets_reported
    >>> offsets_reported({"acks": "all"}), offsets_reported({"acks": 0}), offsets_reported({})
    (True, False, True)
    >>> offsets_reported({"acks": "all", "request.required.acks": "0"})
    False
    """
    acks = [v for k, v in conf.items() if k in ("acks", "request.required.acks")]
    return str(acks[-1] if acks else "all") != "0"


class UnconfirmedAcks:
    """Spots delivery reports without an error and without an offset, counts them and says so once a minute.

    The caller sends such a record again; whether the broker held a copy after all is for the consumer to
    settle (the caller's docstring says how).

    Parameters
    ----------
    conf
        The producer's librdkafka configuration; with ``acks=0`` nothing is ever unconfirmed.
    logger
        Where the warning goes.
    """

    def __init__(self, conf: Mapping[str, Any], logger: logging.Logger) -> None:
        self.expected = offsets_reported(conf)
        self.count = 0
        self._log = logger
        self._logged = -math.inf

    def __call__(self, err: KafkaError | None, msg: Message, what: str = "a record") -> bool:
        """True (counted, and logged at most once a minute) when ``msg`` was reported delivered with no offset.

        Parameters
        ----------
        err, msg
            The delivery report's arguments.
        what
            Names the record in the warning (``batch seq 12``).
        """
        if err is not None or not self.expected:
            return False
        offset = msg.offset()
        if offset is not None and offset >= 0:
            return False
        self.count += 1
        now = time.monotonic()
        if now - self._logged >= LOG_EVERY_S:
            self._logged = now
            self._log.warning(
                "%s to %s[%s] was acknowledged as a duplicate with no offset (the broker answered "
                "DUPLICATE_SEQUENCE_NUMBER, which Tansu gives for a record it may not have stored): sending it "
                "again; %d such acknowledgements so far, repeats are logged once a minute",
                what, msg.topic(), msg.partition(), self.count,
            )
        return True
