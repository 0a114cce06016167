"""The gateway's producer, and its replacement when librdkafka declares it fatal.

An idempotent producer can fail for good (after a broker restart that lost its producer state, a sequence
number the broker no longer accepts): every later produce is refused. A gateway that kept it would answer
503 until someone restarted it. So the gateway replaces a fatal producer with a new one, and sends again on
the new one every event it had accepted (202) that the old one still held: a 202 keeps its promise. An event
the old producer had in flight may then reach the topic twice, with one event id; consumers drop repeats.

confluent-kafka (2.16) reports a fatal error by raising it from ``poll``/``flush`` (not through ``error_cb``)
and refuses later produces with ``_FATAL``; librdkafka then purges its queue, each purged event's delivery
report coming on the next poll. ``_FatalGuard`` notes the error wherever it surfaces, so no caller (the
gateway's delivery poller above all) dies of it.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Message, Producer

from connectors.kafka import EventProducer, KafkaSettings
from schemas import AvroSerde

PURGE_REPORTS_S = 10.0  # how long a failed producer may take to report the events it purged

log = logging.getLogger("eddyline.gateway")


class _FatalGuard:
    """The confluent-kafka producer, with a fatal error noted on its owner instead of raised from poll or flush."""

    def __init__(self, client: Producer, owner: GatewayProducer) -> None:
        self.client = client
        self._owner = owner

    def _fatal(self, exc: KafkaException) -> bool:
        err = exc.args[0] if exc.args and isinstance(exc.args[0], KafkaError) else None
        if err is None or not (err.fatal() or err.code() == KafkaError._FATAL):
            return False
        if self._owner.fatal_error is None or err.fatal():  # keep the error that says why over a bare _FATAL
            self._owner.fatal_error = err
        return True

    def produce(self, *args: Any, **kwargs: Any) -> None:
        try:
            self.client.produce(*args, **kwargs)
        except BufferError:
            self._owner.queue_full = True
            raise
        except KafkaException as exc:
            self._fatal(exc)
            raise  # refused: the caller says so (503) or replaces the producer and tries again

    def poll(self, timeout: float = -1) -> int:
        return self._noting_fatal(self.client.poll, timeout)

    def flush(self, timeout: float = -1) -> int:
        self._noting_fatal(self.client.flush, timeout)
        return len(self.client)  # what flush returns: events still unacknowledged

    def _noting_fatal(self, call: Any, timeout: float) -> int:
        try:
            return call(timeout)
        except KafkaException as exc:
            if not self._fatal(exc):
                raise
            return self.client.poll(0)  # the purged events' reports, now marked stranded

    def purge(self, *args: Any, **kwargs: Any) -> None:
        self.client.purge(*args, **kwargs)

    def close(self) -> None:
        self.client.close()

    def __len__(self) -> int:
        return len(self.client)


class GatewayProducer(EventProducer):
    """An ``EventProducer`` that notices a fatal error and keeps the events it strands.

    An event acknowledged without an offset is sent again as ``EventProducer`` does (its ``_send_again``, which
    the replacement uses for the stranded events too); refused by a fatal producer, it is stranded like them.

    Parameters
    ----------
    settings
        Kafka settings.
    serde
        Encodes records (shared with the producer it replaces).
    overrides
        librdkafka producer properties.
    """

    # The gateway produces on its event loop. Backpressure (``max_queue``) counts events, and the queue is bounded in
    # bytes too (``queue.buffering.max.kbytes``), which large audio chunks reach first: a full queue is a 503.
    waits_for_room = False

    def __init__(self, settings: KafkaSettings, serde: AvroSerde | None = None, **overrides: Any) -> None:
        self.fatal_error: KafkaError | None = None
        # the queue refused an event for want of room (bytes, most often), and no delivery report has freed any since:
        # ``waiting`` counts events only, so without this /health said ok while every large event got 503
        self.queue_full = False
        self.stranded: list[Message] = []
        self._overrides = overrides
        super().__init__(settings, serde, error_cb=self._on_error, **overrides)
        self._producer: Any = _FatalGuard(self._producer, self)

    @property
    def client(self) -> Producer:
        """The confluent-kafka producer underneath."""
        return self._producer.client

    def _on_error(self, err: KafkaError) -> None:
        if err.fatal():
            self.fatal_error = err

    def _on_delivery(self, err: KafkaError | None, msg: Message) -> None:
        self.queue_full = False
        if err is not None and (self.fatal_error is not None or err.fatal()):
            self.stranded.append(msg)
            return  # not failed: the replacement sends it
        super()._on_delivery(err, msg)

    def replacement(self) -> GatewayProducer:
        """A new producer that sends again every event this fatal one still held (those its queue cannot take at
        once on its next poll), and every event acknowledged without an offset; counters carry over."""
        self._producer.purge(in_queue=True, in_flight=True)
        deadline = time.monotonic() + PURGE_REPORTS_S
        while len(self.client) and time.monotonic() < deadline:  # reports of purged in-flight events come later
            self._producer.poll(0.05)  # their delivery reports land in ``stranded``
        if len(self.client):
            log.error("%d events of the failed producer were neither acknowledged nor purged within %.0f s: "
                      "they count as waiting", len(self.client), PURGE_REPORTS_S)
        new = GatewayProducer(self.settings, self.serde, **self._overrides)
        new.delivered, new.failed = self.delivered, self.failed
        again, self._resend = self.stranded + self._resend, []  # with those acknowledged without an offset
        new._resend = again
        new._send_again()  # what its queue cannot take now goes on its next poll
        log.error("the Kafka producer failed for good (%s): replaced by a new one; %d accepted events sent again",
                  self.fatal_error.str() if self.fatal_error else "fatal", len(again))
        try:
            self.client.close()  # its threads and connections go now, not when a garbage collection finds it
        except KafkaException as exc:
            log.warning("closing the failed producer: %s", exc)
        return new
