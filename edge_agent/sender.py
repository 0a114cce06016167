"""Moves batches from the disk buffer to Kafka and removes them once the broker has acknowledged them.

The buffer is the source of truth: the producer may be torn down and rebuilt at any time (a fatal
idempotence error after the broker lost its state, for instance) and whatever it had in flight is simply
sent again from disk. While a backlog drains, oldest first, a share of the send slots goes to the newest
batches so that fresh data is not held back behind hours of history. A batch refused for good, by the producer
(larger than ``message.max.bytes``) or by the broker (a record it will not store, a topic's smaller size limit),
goes to the dead letters and leaves the buffer, counted as dropped: sending it again could never succeed, and it
would hold back every batch after it. A broker refuses a whole request, so a batch refused in company goes again
alone first, and only a refusal of its own sends it to the dead letters.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Message, Producer

from connectors.kafka_acks import UnconfirmedAcks
from connectors.kafka_log import librdkafka_logger
from edge_agent.buffer import DiskBuffer
from edge_agent.health import ClockOffset

log = logging.getLogger(__name__)


@dataclass
class SendCounters:
    sent_batches: int = 0
    acked_batches: int = 0
    acked_readings: int = 0
    failed_sends: int = 0
    producer_restarts: int = 0
    last_error: str = ""
    health_sent: int = 0
    health_skipped: int = 0  # due while the previous one was unacknowledged (link down): never queued
    health_failed: int = 0
    unconfirmed_acks: int = 0  # acknowledged as a duplicate, without an offset: sent again
    dead_letters: int = 0  # refused by the producer or the broker for good: moved to the dead letters


_LIBRDKAFKA_LOG = librdkafka_logger("edge_agent.librdkafka")
MESSAGE_MAX_BYTES = 1_000_000  # librdkafka's default message.max.bytes
_RECORD_OVERHEAD = 64  # what librdkafka adds to key and value when it checks message.max.bytes (36 today)
# The same bytes can never be sent: too large (for the producer, the topic, or the broker's log), or not valid.
_REFUSED_FOR_GOOD = {KafkaError.MSG_SIZE_TOO_LARGE, KafkaError.RECORD_LIST_TOO_LARGE, KafkaError.INVALID_RECORD}


class Sender:
    def __init__(
        self,
        buffer: DiskBuffer,
        producer_conf: dict[str, Any],
        topic: str,
        key: bytes,
        *,
        max_in_flight: int = 500,
        fresh_share: float = 0.25,
        stall_s: float = 60.0,
        dead_letter: Callable[[int, bytes, str], None] | None = None,
    ) -> None:
        """``dead_letter(seq, payload, reason)`` keeps a batch the producer refuses for good before it leaves
        the buffer (without one, it is only logged and counted)."""
        self.buffer = buffer
        self.topic = topic
        self.key = key
        self.max_in_flight = max_in_flight
        self.fresh_share = fresh_share
        self.counters = SendCounters()
        self._conf = producer_conf
        self._in_flight = buffer.protected  # seq -> shared with the buffer so eviction skips them
        self._cursor = 0  # the oldest lane resumes here
        self._fresh_above = -1  # the fresh lane has taken everything above this
        self._credit = 0.0
        self._acked: list[int] = []
        self.stall_s = stall_s
        self._fails_since_ack = 0
        self._progress = time.monotonic()  # last acknowledgement or new producer
        self.clock = ClockOffset()
        self._health_in_flight = False
        self._unconfirmed = UnconfirmedAcks(producer_conf, log)
        self._dead_letter = dead_letter
        self._suspects: set[int] = set()  # refused for good in a request shared with others: each goes again alone
        self._producer = self._new_producer()

    _fatal = False
    _link_down = False

    def _new_producer(self) -> Producer:
        conf = dict(self._conf)
        conf["error_cb"] = self._on_error
        conf["logger"] = _LIBRDKAFKA_LOG
        return Producer(conf)

    def _on_error(self, err: KafkaError) -> None:
        self.counters.last_error = err.str()
        if err.fatal():
            self._fatal_error(err)
        elif not self._link_down and err.code() in (KafkaError._ALL_BROKERS_DOWN, KafkaError._TRANSPORT):
            self._link_down = True
            log.warning("broker unreachable (%s); buffering to disk until it returns", err.str())

    def _fatal_error(self, err: KafkaError) -> None:
        # e.g. UNKNOWN_PRODUCER_ID after the broker lost its state: this producer can't go on, a new one can.
        if not self._fatal:
            log.error(
                "producer fatal error: %s; starting a new producer, unacknowledged batches stay on disk", err.str()
            )
        self._fatal = True

    @property
    def in_flight(self) -> int:
        return len(self._in_flight)

    @property
    def max_payload(self) -> int:
        """The largest batch this producer accepts (``message.max.bytes`` less the record's overhead)."""
        limit = int(self._conf.get("message.max.bytes", MESSAGE_MAX_BYTES))
        return limit - len(self.key) - _RECORD_OVERHEAD

    def pump(self) -> int:
        """Hand batches to the producer up to the in-flight bound; returns how many were handed over."""
        if self._fatal:
            self._restart()
        elif self._fails_since_ack and time.monotonic() - self._progress > self.stall_s:
            # Sends keep failing and nothing is acknowledged: a producer can wedge after its broker lost
            # all state (waiting on a producer id the broker no longer knows). A new one costs nothing.
            log.warning(
                "no acknowledgement for %.0f s and %d failed sends; starting a new producer",
                time.monotonic() - self._progress,
                self._fails_since_ack,
            )
            self._restart()
        if self._suspects:
            return self._send_alone()
        free = self.max_in_flight - len(self._in_flight)
        if free <= 0 or self.buffer.depth == len(self._in_flight):
            return 0
        backlog = self.buffer.depth - len(self._in_flight) > free
        fresh = 0
        if backlog and self.fresh_share > 0:
            self._credit += free * self.fresh_share
            fresh = int(self._credit)
            self._credit -= fresh
        picked = self.buffer.oldest(self._cursor, free - fresh)
        if picked:
            self._cursor = picked[-1][0] + 1
        if fresh:
            newest = self.buffer.newest(max(self._fresh_above, self._cursor - 1), fresh)
            if newest:
                self._fresh_above = newest[0][0]
                picked.extend(newest)
        for seq, payload in picked:
            if not self._produce(seq, payload):
                break
        return len(picked)

    def _send_alone(self) -> int:
        """The oldest suspect, by itself once nothing else is in flight, so that a refusal can only be its own."""
        if self._in_flight:
            return 0
        seq = min(self._suspects)
        picked = self.buffer.oldest(seq, 1)
        if not picked or picked[0][0] != seq:  # evicted by the size policy meanwhile
            self._suspects.discard(seq)
            return 0
        self._produce(seq, picked[0][1])
        return 1

    def _produce(self, seq: int, payload: bytes) -> bool:
        """Hand one batch to the producer; False when nothing more should be handed over this round."""
        try:
            self._producer.produce(self.topic, payload, self.key, on_delivery=self._delivered(seq, time.time()))
        except BufferError:
            self._requeue(seq)
            return False
        except KafkaException as exc:
            err = exc.args[0] if exc.args and isinstance(exc.args[0], KafkaError) else None
            if err is not None and err.code() in _REFUSED_FOR_GOOD:
                self._refused(seq, payload, f"the producer refused the batch: {err.str()}")
                return True
            self._requeue(seq)
            self.counters.last_error = str(exc)
            if err is not None and (err.fatal() or err.code() == KafkaError._FATAL):
                self._fatal_error(err)
            else:
                log.error("cannot produce to %s: %s", self.topic, exc)
            return False
        self._in_flight.add(seq)
        self.counters.sent_batches += 1
        return True

    def _requeue(self, seq: int) -> None:
        self._cursor = min(self._cursor, seq)

    def _refused(self, seq: int, payload: bytes, reason: str) -> None:
        self._suspects.discard(seq)
        self.counters.dead_letters += 1
        self.counters.last_error = reason
        if self._dead_letter is not None:
            self._dead_letter(seq, payload, reason)
        readings = self.buffer.discard(seq)
        log.error("batch seq %d (%d bytes, %d readings): %s; it leaves the buffer, counted as dropped", seq,
                  len(payload), readings, reason)

    def _delivered(self, seq: int, sent: float) -> Any:
        def cb(err: KafkaError | None, msg: Message) -> None:
            self._in_flight.discard(seq)
            if self._unconfirmed(err, msg, f"batch seq {seq}"):
                # The broker may not hold it (connectors.kafka_acks): it goes again; a flow drops a stored copy by
                # its seq.
                self.counters.unconfirmed_acks += 1
                self._requeue(seq)
                return
            if err is None:
                self._suspects.discard(seq)
                self.clock.observe(sent * 1000, time.time() * 1000, *msg.timestamp())
                self._acked.append(seq)
                self._fails_since_ack = 0
                self._progress = time.monotonic()
                if self._link_down:
                    self._link_down = False
                    log.info("broker reachable again; draining %d batches from disk", self.buffer.depth)
                return
            if err.code() in _REFUSED_FOR_GOOD:
                if seq in self._suspects:  # refused alone: for good
                    self._refused(seq, msg.value(), f"the broker refused the batch: {err.name()} ({err.str()})")
                    return
                self._suspects.add(seq)
            self.counters.failed_sends += 1
            self._fails_since_ack += 1
            self.counters.last_error = err.str()
            self._requeue(seq)
            # A fenced idempotent producer stays fenced (Tansu fences the epoch librdkafka bumps after a refusal).
            if err.fatal() or err.code() == KafkaError.PRODUCER_FENCED:
                self._fatal_error(err)

        return cb

    def send_health(self, topic: str, payload: bytes) -> bool:
        """Publish one health event beside the readings; False (and counted) when the previous one is still
        unacknowledged or the producer's queue is full: health is droppable, readings are not."""
        if self._health_in_flight:
            self.counters.health_skipped += 1
            return False
        sent = time.time()

        def cb(err: KafkaError | None, msg: Message) -> None:
            self._health_in_flight = False
            if err is None:
                self.counters.health_sent += 1
                self.clock.observe(sent * 1000, time.time() * 1000, *msg.timestamp())
            else:
                self.counters.health_failed += 1

        try:
            self._producer.produce(topic, payload, self.key, on_delivery=cb)
        except (BufferError, KafkaException):
            self.counters.health_skipped += 1
            return False
        self._health_in_flight = True
        return True

    def flush_health(self, timeout: float) -> None:
        """Wait up to ``timeout`` for the last health event (the one a stopping agent sends)."""
        deadline = time.monotonic() + timeout
        while self._health_in_flight and time.monotonic() < deadline:
            self.poll(0.05)

    def poll(self, timeout: float) -> None:
        """Wait up to ``timeout`` for delivery reports and forget the acknowledged batches."""
        try:
            self._producer.poll(timeout)
        except KafkaException as exc:
            err = exc.args[0] if exc.args and isinstance(exc.args[0], KafkaError) else None
            if err is None or not err.fatal():
                raise
            self._fatal_error(err)
        self._commit_acks()

    def _commit_acks(self) -> None:
        if not self._acked:
            return
        acked, self._acked = self._acked, []
        batches, readings = self.buffer.ack(acked)
        self.counters.acked_batches += batches
        self.counters.acked_readings += readings

    def _restart(self) -> None:
        self._fatal = False
        self.counters.producer_restarts += 1
        old = self._producer
        old.purge(in_queue=True, in_flight=True)
        old.poll(0)
        old.flush(0)
        old.close()  # its threads and connections go now: it holds this sender (error_cb), a cycle gc cannot see
        self._commit_acks()
        for seq in list(self._in_flight):
            self._requeue(seq)
        self._in_flight.clear()
        self._fails_since_ack = 0
        self._progress = time.monotonic()
        self._health_in_flight = False  # purged with the old producer
        self._producer = self._new_producer()

    def flush(self, timeout: float) -> int:
        """Wait until nothing is in flight or ``timeout`` passes; returns the batches still unacknowledged."""
        deadline = time.monotonic() + timeout
        while self._in_flight and time.monotonic() < deadline:
            self.poll(min(0.1, max(0.0, deadline - time.monotonic())))
        return len(self._in_flight)

    def close(self) -> None:
        try:
            self._producer.purge(in_queue=True, in_flight=False)
            self._producer.poll(0)
            self._commit_acks()  # may fail on a disk gone bad: the batches are then sent again after a restart
        finally:
            self._producer.close()  # else it outlives the agent, retrying the broker until the process exits
