"""The notify flow (``eddyline run notify``): alerts from Kafka to PagerDuty and Slack, outside every scoring flow.

Scoring flows only emit ``alerts`` events; this flow consumes them in its own consumer group and delivers each
to every configured destination, one HTTP attempt at a time, a bounded number of deliveries at once. A failed
attempt is not retried by sleeping: the alert goes to ``alerts.retry`` with the destination, the next attempt
number and the time it is due (jittered exponential backoff), so nothing waits in memory only. A destination
that keeps failing trips its circuit breaker, and its alerts are rescheduled without calling it until the
breaker lets a trial through. After ``max_attempts`` (or a refusal for good) the alert goes to ``dlq.alerts``
with the reason; ``eddyline alerts redrive`` puts dead letters back on the retry topic.

Offsets are committed only after each alert of a batch is delivered, scheduled on the retry topic or
dead-lettered, so a crash replays at most a batch. Replays are harmless: PagerDuty folds triggers with one
dedup key (the alert key) into one incident, and the flow remembers recently handled event ids (after a
restart it reads them back from before its committed offsets), so a scoring flow's replayed alerts are not
sent again. Slack has no dedup key, so every delivery is also recorded on ``alerts.delivered`` (destination,
event id, status; keyed by alert key) before its source is committed; a flow that restarts or is handed
partitions in a rebalance reads it first (records younger than ``delivered_window_s``) and sends nothing twice.
The flow creates that topic with a retention a day above the window (``schemas.topics.retention_above``), and
warns at start when an existing one keeps less than the window.
A record that a flush could not write is kept: written again with the next batch (which stays uncommitted until
it is in), when partitions are revoked, and at close. So Slack gets an alert once unless the process dies between
Slack's answer and its record reaching Kafka, Kafka still refuses the record when the partitions go to another
member, or an answer lost on the way (a timeout after Slack posted) makes the flow try again.
A trigger that reaches PagerDuty after the same incident was resolved there (its first attempts failed, the
resolve went through) is followed by the resolve again, so the incident does not stay open. An alert key names
one incident (the ``alert`` schema's contract), so the key decides, never a comparison of event times, which
come from different clocks (devices, click streams, an operator's release); which keys were resolved is read
back from ``alerts.delivered`` too, so a restart does not forget them.

A receiver that answers 429 (rate limited) defers the alert without using up one of its ``max_attempts``, at
most ``max_rate_limited`` times; a Retry-After it sends (429 or 5xx) is waited for, up to ``backoff_cap_s``.

Retriable group errors (a commit refused with ``UNKNOWN_MEMBER_ID`` after a broker restart, a consumer call on
a partition just revoked, a flush that timed out while the broker was away) do not stop the flow: it rejoins
its group and goes on from the committed offsets, and the records above keep the repeat from posting again.

The retry topic is read in order per partition: a message not yet due pauses its partition until it is, so
a later message with an earlier due time waits behind it, by at most ``backoff_cap_s + breaker_reset_s``, the
longest wait the flow schedules: a due time further ahead (written where the clock ran ahead) is held that
long only, with a warning.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Hashable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, ClassVar, NamedTuple

from confluent_kafka import Consumer, KafkaException, Message, TopicPartition
from pydantic import Field
from pydantic_settings import SettingsConfigDict

from connectors.alerting import AlertDispatcher
from connectors.delivery import Backoff, CircuitBreaker, DeliveryError, validate_alert
from connectors.config import Section
from connectors.dlq import dlq_headers
from connectors.kafka import (
    DeliveryError as KafkaDeliveryError,
    EventProducer,
    KafkaSettings,
    consumer_config,
    create_topics,
    logged_config,
    make_admin,
    make_consumer,
    read_to_end,
    scan_to_end,
)
from connectors.prometheus import ALERT_BREAKER_STATE, ALERT_DELIVERIES, ALERT_RETRIES, DLQ_EVENTS
from connectors.schema_registry import configured_serde
from schemas import ALERT, AvroSerde, DecodeError, SchemaError, ValidationError
from schemas.retry import ATTEMPT, DESTINATION, retry_headers, retry_info
from schemas.topics import DELIVERED_TOPIC, DELIVERED_WINDOW_S, dlq_topic, retention_above, retry_topic

__all__ = [
    "ALERTS_TOPIC",
    "DELIVERED_TOPIC",
    "DLQ_TOPIC",
    "DeliveredLog",
    "RETRY_TOPIC",
    "Delivery",
    "Recorded",
    "NotifyFlow",
    "NotifySettings",
    "NEVER_PASSING",
    "Notifier",
    "RedriveReport",
    "Result",
    "create_notify_topics",
    "delivered_retention_ms",
    "redrive",
    "run_notify",
]

log = logging.getLogger(__name__)

FLOW = "notify"
ALERTS_TOPIC = "alerts"
RETRY_TOPIC = retry_topic(ALERTS_TOPIC)
DLQ_TOPIC = dlq_topic(ALERTS_TOPIC)
TOPICS = (ALERTS_TOPIC, RETRY_TOPIC, DLQ_TOPIC, DELIVERED_TOPIC)
# Destinations that keep incident state: a trigger that arrives after its resolve re-opens the incident there,
# so the resolve is sent again. A chat message is not state: Slack gets each delivery once.
REOPENING = frozenset({"pagerduty"})
RATE_LIMITED = "eddyline.notify.rate_limited"  # retry header: 429 answers so far (they use no attempt)
MAX_ATTEMPTS = 100_000


class NotifySettings(Section):
    """``[notify]`` / ``EDDYLINE_NOTIFY_*``: how the notify flow delivers, retries and gives up."""

    toml_table: ClassVar[str] = "notify"
    model_config = SettingsConfigDict(env_prefix="EDDYLINE_NOTIFY_", extra="forbid")

    group_id: str = Field("eddyline-notify", description="Consumer group of the notify flow (namespace applied).")
    concurrency: int = Field(8, ge=1, description="Deliveries in flight at once.")
    max_attempts: int = Field(8, ge=1, le=MAX_ATTEMPTS,
                              description="Attempts per destination before an alert is dead-lettered.")
    max_rate_limited: int = Field(
        100, ge=1, le=MAX_ATTEMPTS, description="429 (rate limited) answers per destination before an alert is "
        "dead-lettered; they use none of max_attempts, and the alert waits at least the answer's Retry-After.")
    backoff_s: float = Field(1.0, ge=0, description="Wait before the first retry; doubles per attempt, jittered.")
    backoff_cap_s: float = Field(300.0, ge=0, description="Longest wait between attempts (a longer Retry-After "
                                 "is cut to it).")
    breaker_failures: int = Field(5, ge=1, description="Failures in a row that open a destination's breaker.")
    breaker_reset_s: float = Field(30.0, ge=0, description="Seconds a breaker stays open before a trial call.")
    batch_size: int = Field(200, ge=1, description="Messages per poll; offsets are committed per batch (and by "
                            "redrive every this many letters).")
    remember: int = Field(100_000, ge=1, description="Recent event ids remembered per flow to skip replays.")
    delivered_window_s: float = Field(
        DELIVERED_WINDOW_S, gt=0, description="How far back a (re)started flow reads alerts.delivered to skip "
        "repeats; the topic is created keeping a day more (an existing topic keeps its retention.ms).")
    rejoin_wait_s: float = Field(1.0, ge=0, description="Pause before rejoining the group after a retriable error.")


@dataclass(frozen=True, slots=True)
class Delivery:
    """One alert for one destination, and where its message was read.

    Parameters
    ----------
    destination
        The channel's name (``pagerduty``, ``slack``).
    attempt
        Which attempt this is, from 1.
    alert
        The decoded alert.
    value, key
        The message's bytes, kept to reschedule or dead-letter it unchanged.
    origin
        (full topic, partition, offset) it was read from.
    rate_limited
        429 answers this alert had from the destination before (``max_rate_limited`` bounds them).
    """

    destination: str
    attempt: int
    alert: dict[str, Any]
    value: bytes
    key: bytes | None
    origin: tuple[str, int, int]
    rate_limited: int = 0


DELIVERED, RETRY, DEFERRED, DEAD, DUPLICATE = "delivered", "retry", "deferred", "dead_lettered", "duplicate"


@dataclass(frozen=True, slots=True)
class Result:
    """What became of a delivery: ``delivered``, ``retry`` or ``deferred`` (due at ``due_ms``, as attempt
    ``attempt``, after ``rate_limited`` 429 answers), ``dead_lettered`` (with ``reason``) or ``duplicate``."""

    delivery: Delivery
    outcome: str
    due_ms: int = 0
    attempt: int = 0
    reason: str = ""
    error: str = ""
    rate_limited: int = 0


class _Recent:
    """A bounded set that forgets its oldest members; optionally keeps a value per member."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._items: OrderedDict[Hashable, Any] = OrderedDict()

    def __contains__(self, item: Hashable) -> bool:
        return item in self._items

    def get(self, item: Hashable) -> Any:
        return self._items.get(item)

    def add(self, item: Hashable, value: Any = None) -> None:
        self._items[item] = value
        self._items.move_to_end(item)
        while len(self._items) > self.size:
            self._items.popitem(last=False)

    def discard(self, item: Hashable) -> None:
        self._items.pop(item, None)


class Notifier:
    """Delivers alerts to destinations and decides each one's fate; no Kafka, so it is tested on its own.

    Each delivery is one attempt through the destination's channel, guarded by that destination's circuit
    breaker. Deliveries of one alert key to one destination run in order; the rest run ``concurrency`` at once.

    Parameters
    ----------
    dispatcher
        The channels, by name; they should not retry themselves (``AlertDispatcher.from_settings(max_retries=0)``).
    settings
        Attempts, backoff, breaker and memory sizes.
    clock_ms
        Wall-clock milliseconds, for due times (tests pass their own).
    """

    def __init__(
        self,
        dispatcher: AlertDispatcher,
        settings: NotifySettings | None = None,
        *,
        clock_ms: Any = None,
        backoff: Backoff | None = None,
    ) -> None:
        self.dispatcher = dispatcher
        self.settings = settings or NotifySettings()
        self.clock_ms = clock_ms or (lambda: time.time_ns() // 1_000_000)
        self.backoff = backoff or Backoff(self.settings.backoff_s, self.settings.backoff_cap_s)
        self.breakers = {
            name: CircuitBreaker(self.settings.breaker_failures, self.settings.breaker_reset_s)
            for name in dispatcher.by_name
        }
        self._lock = threading.Lock()
        self._delivered = _Recent(self.settings.remember)  # (destination, event_id)
        self._resolved = _Recent(self.settings.remember)  # (destination, alert_key) -> event id of its resolve
        self._serde = AvroSerde()
        self._pool = ThreadPoolExecutor(self.settings.concurrency, thread_name_prefix="notify")
        for name in self.breakers:
            ALERT_BREAKER_STATE.labels(name).set(0)

    @property
    def destinations(self) -> list[str]:
        return list(self.dispatcher.by_name)

    def deliver(self, deliveries: Sequence[Delivery]) -> list[Result]:
        """Attempt every delivery once; returns a result for each (and for any resolve sent again after it)."""
        groups: dict[tuple[str, str], list[Delivery]] = {}
        for d in deliveries:
            groups.setdefault((d.destination, str(d.alert.get("alert_key"))), []).append(d)
        if len(groups) <= 1:
            return [r for group in groups.values() for r in self._in_order(group)]
        return [r for results in self._pool.map(self._in_order, groups.values()) for r in results]

    def _in_order(self, group: list[Delivery]) -> list[Result]:
        return [r for d in group for r in self._attempt(d)]

    def _attempt(self, d: Delivery) -> list[Result]:
        sink = self.dispatcher.by_name.get(d.destination)
        if sink is None:
            configured = ", ".join(self.destinations) or "none"
            return [self._count(Result(d, DEAD, reason="unknown_destination",
                                       error=f"destination {d.destination!r} is not configured ({configured})"))]
        ident = (d.destination, d.alert["event_id"])
        with self._lock:
            if ident in self._delivered:
                return [self._count(Result(d, DUPLICATE))]
        breaker = self.breakers[d.destination]
        admitted = breaker.admit()
        if admitted is None:
            return [self._count(self._deferred(d, breaker, ""))]
        try:
            sink.deliver(d.alert)
        except DeliveryError as e:
            if e.permanent:  # the destination answered: it is up, and this alert will never pass
                breaker.success()
                return [self._count(Result(d, DEAD, reason="refused", error=str(e)))]
            return [self._count(self._failed(d, breaker, admitted, str(e), e.retry_after, e.status == 429))]
        except ValueError as e:
            breaker.success()
            return [self._count(Result(d, DEAD, reason="invalid_alert", error=str(e)))]
        except Exception as e:  # a bug or an unforeseen client error: retry, never lose the alert
            log.exception("alert delivery raised", extra={"sink": d.destination})
            return [self._count(self._failed(d, breaker, admitted, f"{type(e).__name__}: {e}"))]
        breaker.success()
        results = [self._count(Result(d, DELIVERED))]
        resolve = self._remember(d)
        if resolve is not None:
            results.extend(self._attempt(resolve))
        return results

    def _remember(self, d: Delivery) -> Delivery | None:
        """Note a delivery; a late trigger of an incident already resolved there gets the resolve again (made from
        the trigger: a resolve is its key, and after a restart only the delivery records are left of it)."""
        key = (d.destination, d.alert["alert_key"])
        with self._lock:
            self._note(d.destination, d.alert["event_id"], d.alert["alert_key"], d.alert["status"])
            if d.destination not in REOPENING or d.alert["status"] == "RESOLVED" or key not in self._resolved:
                return None
            resolved_id = self._resolved.get(key)
            self._delivered.discard((d.destination, resolved_id))
        log.info("late trigger of a resolved incident: resolving it again",
                 extra={"sink": d.destination, "alert_key": d.alert["alert_key"]})
        alert = {**d.alert, "status": "RESOLVED", "event_id": resolved_id}
        return Delivery(d.destination, 1, alert, self._serde.encode(ALERT, alert), d.key, d.origin)

    def recall_delivered(self, destination: str, event_id: str, alert_key: str = "", status: str = "") -> None:
        """Note a delivery made before (by this flow before a restart, or by another member of its group).

        Parameters
        ----------
        destination, event_id
            Where it went and what it was.
        alert_key, status
            Its incident and status: a trigger of a resolved incident that comes later (a retry) is followed
            by the resolve again where it would open the incident again.
        """
        with self._lock:
            self._note(destination, event_id, alert_key, status)

    def _note(self, destination: str, event_id: str, alert_key: str, status: str) -> None:
        """``recall_delivered`` with the lock held."""
        self._delivered.add((destination, event_id))
        if status == "RESOLVED" and alert_key and destination in REOPENING:
            self._resolved.add((destination, alert_key), event_id)

    def _due_ms(self, backoff_s: float, retry_after: float | None) -> int:
        """When a retry is due: after ``backoff_s``, or the receiver's Retry-After if longer, cut to
        ``backoff_cap_s`` (the retry topic must not stall behind it)."""
        asked = min(retry_after, self.settings.backoff_cap_s) if retry_after is not None else 0.0
        return self.clock_ms() + int(1000 * max(backoff_s, asked))

    def _deferred(self, d: Delivery, breaker: CircuitBreaker, error: str, retry_after: float | None = None) -> Result:
        """Rescheduled while the destination's breaker is open; the alert keeps its attempt number."""
        return Result(d, DEFERRED, due_ms=self._due_ms(breaker.wait_s() + self.backoff.delay(1), retry_after),
                      attempt=d.attempt,
                      reason="breaker_open", error=error, rate_limited=d.rate_limited)

    def _failed(self, d: Delivery, breaker: CircuitBreaker, admitted: str, error: str,
                retry_after: float | None = None, rate_limited: bool = False) -> Result:
        """A failed attempt: retried later, or dead-lettered after ``max_attempts``. A failed breaker trial
        costs the alert no attempt: the destination is down, not this alert, and an outage must not use
        up the attempts of the alerts that happen to be tried during it. Nor does a 429: the receiver is up
        and asks us to slow down; ``max_rate_limited`` of them dead-letter it, so none retries for ever."""
        breaker.failure()
        if admitted == CircuitBreaker.HALF_OPEN:
            return self._deferred(d, breaker, error, retry_after)
        if rate_limited:
            times = d.rate_limited + 1
            if times >= self.settings.max_rate_limited:
                return Result(d, DEAD, reason="rate_limited", rate_limited=times,
                              error=f"gave up after {times} rate-limited answers; last: {error}")
            return Result(d, DEFERRED, due_ms=self._due_ms(self.backoff.delay(d.attempt + d.rate_limited), retry_after),
                          attempt=d.attempt, reason="rate_limited", error=error, rate_limited=times)
        if d.attempt >= self.settings.max_attempts:
            return Result(d, DEAD, reason="delivery_failed", error=f"gave up after {d.attempt} attempts; last: {error}")
        return Result(d, RETRY, due_ms=self._due_ms(self.backoff.delay(d.attempt), retry_after), attempt=d.attempt + 1,
                      reason="failed", error=error, rate_limited=d.rate_limited)

    def _count(self, r: Result) -> Result:
        name = r.delivery.destination
        ALERT_DELIVERIES.labels(sink=name, outcome=r.outcome).inc()
        if r.outcome in (RETRY, DEFERRED):
            ALERT_RETRIES.labels(name, r.reason).inc()
        breaker = self.breakers.get(name)
        if breaker is not None:
            ALERT_BREAKER_STATE.labels(name).set(CircuitBreaker.LEVELS[breaker.state])
        if r.outcome in (RETRY, DEAD):
            level = logging.ERROR if r.outcome == DEAD else logging.WARNING
            log.log(level, "alert %s: sink=%s alert_key=%s attempt=%d: %s", r.outcome, name,
                    r.delivery.alert.get("alert_key"), r.delivery.attempt, r.error or r.reason,
                    extra={"event": "alert_delivery_failed", "sink": name, "outcome": r.outcome,
                           "reason": r.reason, "alert_key": r.delivery.alert.get("alert_key"),
                           "event_id": r.delivery.alert.get("event_id"), "attempt": r.delivery.attempt})
        return r

    def close(self) -> None:
        self._pool.shutdown(wait=True)
        self.dispatcher.close()


@dataclass
class _Batch:
    deliveries: list[Delivery] = field(default_factory=list)
    letters: list[tuple[Message, str, str, str]] = field(default_factory=list)  # message, reason, error, destination
    done: dict[tuple[str, int], int] = field(default_factory=dict)  # (topic, partition) -> last finished offset
    taken: set[str] = field(default_factory=set)  # event ids from the alerts topic, remembered once in Kafka


class Recorded(NamedTuple):
    """One record of ``alerts.delivered``: a delivery made, its alert key and status (empty where unknown)."""

    destination: str
    event_id: str
    alert_key: str
    status: str


class DeliveredLog:
    """Deliveries made, on ``alerts.delivered``: what a restarted or rebalanced notify flow must not send again.

    Each record is one (destination, event id, status), keyed by the alert key. ``catch_up`` reads from where it
    stopped to the end of every partition, keeping what is younger than ``window_s``.

    Parameters
    ----------
    kafka
        Kafka settings.
    window_s
        Records older than this are not read back (an alert is not replayed after so long).
    """

    def __init__(self, kafka: KafkaSettings, window_s: float) -> None:
        self.kafka = kafka
        self.window_s = window_s
        self.name = kafka.topic(DELIVERED_TOPIC)
        self.positions: dict[int, int] = {}  # partition -> next offset to read
        self.ends: dict[int, int] = {}  # partition -> the position it was read to its end at (not fetched again)

    @staticmethod
    def record(producer: EventProducer, destination: str, alert: dict[str, Any]) -> None:
        """Queue the record of one delivery (the caller flushes before committing the source)."""
        value = json.dumps({"destination": destination, "event_id": alert["event_id"],
                            "status": alert.get("status")}, separators=(",", ":")).encode()
        producer.produce_raw(DELIVERED_TOPIC, value, str(alert["alert_key"]))

    def catch_up(self, timeout: float = 60.0) -> list[Recorded]:
        """The deliveries recorded since the last call, within the window."""
        messages, pending = read_to_end(self.kafka, DELIVERED_TOPIC, self.positions, timeout=timeout,
                                        ends=self.ends)
        if pending:
            log.warning("could not read every delivery record: a repeat may be posted again",
                        extra={"flow": FLOW, "topic": self.name, "partitions": sorted(pending)})
        oldest_ms = time.time_ns() // 1_000_000 - int(self.window_s * 1000)
        found: list[Recorded] = []
        for msg in messages:
            if msg.timestamp()[1] < oldest_ms:
                continue
            try:
                rec = json.loads(msg.value())
                key = (msg.key() or b"").decode("utf-8", "replace")
                found.append(Recorded(str(rec["destination"]), str(rec["event_id"]), key, str(rec.get("status") or "")))
            except (ValueError, TypeError, KeyError, AttributeError):
                log.warning("unreadable record on %s at %d/%d: skipped", self.name, msg.partition(), msg.offset(),
                            extra={"flow": FLOW})
        return found


class NotifyFlow:
    """The Kafka side of the notify flow: consume ``alerts`` and ``alerts.retry``, deliver, reschedule, commit.

    Parameters
    ----------
    kafka
        Kafka settings; every client gets them, ``[kafka] extra`` included.
    notifier
        Does the deliveries (its settings give the consumer group and batch size).
    """

    def __init__(self, kafka: KafkaSettings, notifier: Notifier) -> None:
        self.kafka = kafka
        self.notifier = notifier
        self.settings = notifier.settings
        self.serde = configured_serde(consumer=True)  # the scoring flows write alerts with the configured registry
        self.alerts_name, self.retry_name = kafka.topic(ALERTS_TOPIC), kafka.topic(RETRY_TOPIC)
        self.consumer_config = consumer_config(kafka, kafka.topic(self.settings.group_id),
                                               **{"enable.partition.eof": False})
        self.consumer = Consumer(logged_config(self.consumer_config))
        self.producer = EventProducer(kafka)
        self.paused: dict[tuple[str, int], int] = {}  # retry partitions waiting for their head: -> due ms
        self._held_at: dict[tuple[str, int], tuple[int, int]] = {}  # retry partition -> (offset, ms) of a head
        # whose due time lay beyond any wait the flow schedules: it is taken at that ms
        self._seen = _Recent(self.settings.remember)  # event ids taken from the alerts topic
        # deliveries whose record is not known to be in Kafka: (destination, event id) -> alert
        self._unrecorded: dict[tuple[str, str], dict[str, Any]] = {}
        self.delivered = DeliveredLog(kafka, self.settings.delivered_window_s)
        self.handled = 0  # messages finished (committed or about to be)
        self.rejoins = 0  # retriable errors recovered from by rejoining the group

    def start(self) -> NotifyFlow:
        create_notify_topics(self.kafka, self.settings)
        self._subscribe()
        if not self.notifier.destinations:
            log.warning("no alert destination is configured: alerts are read and committed, nothing is sent; "
                        "set [pagerduty] routing_key or [slack] webhook_url")
        return self

    def _subscribe(self) -> None:
        self.consumer.subscribe([self.alerts_name, self.retry_name], on_assign=self._assigned,
                                on_revoke=self._revoked)

    def _assigned(self, consumer: Any, partitions: list[TopicPartition]) -> None:
        recalled = self.delivered.catch_up()
        for rec in recalled:
            self.notifier.recall_delivered(rec.destination, rec.event_id, rec.alert_key, rec.status)
        log.info("recalled recorded deliveries", extra={"flow": FLOW, "deliveries": len(recalled)})
        alerts = [TopicPartition(tp.topic, tp.partition) for tp in partitions if tp.topic == self.alerts_name]
        if alerts:
            try:
                self._recall(alerts)
            except KafkaException as e:  # the recorded deliveries above still keep repeats from posting
                log.warning("could not read the committed offsets to recall handled alerts",
                            extra={"flow": FLOW, "error": str(e.args[0])})

    def _recall(self, partitions: list[TopicPartition], timeout: float = 30.0) -> None:
        """Remember the event ids of the alerts just before the committed offsets (``remember`` per partition).

        They were all delivered, scheduled or dead-lettered before; a scoring flow that replays them after this
        process restarted is then recognised, and a replayed trigger of a resolved alert opens no new incident.
        """
        committed = {c.partition: c.offset for c in self.consumer.committed(partitions, timeout=timeout)
                     if c.offset > 0}
        if not committed:
            return
        reader = make_consumer(self.kafka, self.consumer_config["group.id"] + "-recall",
                               **{"enable.partition.eof": True})
        try:
            reader.assign([TopicPartition(self.alerts_name, p, max(0, end - self.settings.remember))
                           for p, end in committed.items()])
            pending, deadline, recalled = dict(committed), time.monotonic() + timeout, 0
            while pending and time.monotonic() < deadline:
                for msg in reader.consume(1000, 0.5):
                    p = msg.partition()
                    if msg.error() is not None or msg.offset() >= pending.get(p, -1):
                        pending.pop(p, None)  # end of partition, or at the committed offset
                        continue
                    try:
                        self._seen.add(self.serde.decode(msg.value(), ALERT)["event_id"])
                        recalled += 1
                    except SchemaError:
                        pass  # it was dead-lettered then
                    if msg.offset() == pending[p] - 1:
                        pending.pop(p)
            if pending:
                log.warning("could not recall every handled alert before the committed offsets",
                            extra={"flow": FLOW, "partitions": sorted(pending)})
            log.info("recalled handled alerts", extra={"flow": FLOW, "alerts": recalled})
        finally:
            reader.close()

    def _revoked(self, consumer: Any, partitions: list[TopicPartition]) -> None:
        for tp in partitions:
            self.paused.pop((tp.topic, tp.partition), None)
            self._held_at.pop((tp.topic, tp.partition), None)
        if self._unrecorded:  # before the partitions' next owner reads the records and replays the batch
            try:
                self._flush()
            except KafkaDeliveryError as e:
                log.error("%d delivery records are still not in Kafka as partitions are given up: "
                          "whoever reads those alerts again may post them again", len(self._unrecorded),
                          extra={"flow": FLOW, "error": str(e)})

    def run(self, stop: threading.Event | None = None) -> None:
        """Poll, deliver and commit until ``stop`` is set (or forever)."""
        stop = stop or threading.Event()
        self.start()
        try:
            while not stop.is_set():
                try:
                    self.step()
                except KafkaException as e:
                    if e.args[0].fatal():
                        raise
                    self._rejoin(str(e.args[0]), stop)
                except KafkaDeliveryError as e:  # retries or records not in Kafka: the batch stays uncommitted
                    self._rejoin(str(e), stop)
        finally:
            self.close()

    def _rejoin(self, error: str, stop: threading.Event) -> None:
        """Leave and rejoin the group, so every partition is read again from its committed offset.

        The consumer's position may be past messages of a batch that was not finished; rejoining is the one
        way back to the committed offsets that holds whoever owns the partitions next.
        """
        self.rejoins += 1
        log.warning("retriable Kafka error: rejoining the group from the committed offsets",
                    extra={"flow": FLOW, "error": error, "rejoins": self.rejoins})
        self.paused.clear()
        stop.wait(self.settings.rejoin_wait_s)
        try:
            self.consumer.unsubscribe()
        except KafkaException as e:
            log.warning("unsubscribe failed; subscribing again anyway", extra={"flow": FLOW, "error": str(e.args[0])})
        if not stop.is_set():  # closed just after unsubscribe and subscribe, librdkafka may abort (!rkcg_subscription)
            self._subscribe()

    def step(self, timeout: float = 0.2) -> int:
        """One poll: resume retry partitions that are due, handle what came; returns messages finished."""
        now = self.notifier.clock_ms()
        due = [tp for tp, at in self.paused.items() if at <= now]
        if due:
            self.consumer.resume([TopicPartition(t, p) for t, p in due])
            for tp in due:
                del self.paused[tp]
        if self.paused:
            timeout = max(0.01, min(timeout, (min(self.paused.values()) - now) / 1000))
        messages = self.consumer.consume(self.settings.batch_size, timeout)
        return self.handle(messages) if messages else 0

    def handle(self, messages: Sequence[Message]) -> int:
        """Deliver a polled batch, write its retries and dead letters, then commit it."""
        batch = _Batch()
        now = self.notifier.clock_ms()
        held: set[tuple[str, int]] = set()
        finished = 0
        for msg in messages:
            if msg.error() is not None:
                log.warning("kafka consumer error", extra={"flow": FLOW, "error": str(msg.error())})
                continue
            tp = (msg.topic(), msg.partition())
            if tp in held:
                continue
            if msg.topic() == self.retry_name and not self._take_retry(msg, now, batch, held):
                continue
            if msg.topic() == self.alerts_name:
                self._take_alert(msg, batch)
            batch.done[tp] = msg.offset()
            finished += 1
        results = self.notifier.deliver(batch.deliveries)
        for r in results:
            self._write(r)
        for msg, reason, error, destination in batch.letters:
            self._dead_letter(msg.value(), msg.key(), (msg.topic(), msg.partition(), msg.offset()),
                              reason, error, destination, 0)
        self._flush()  # retries, dead letters and delivery records are in Kafka before the source is committed
        for event_id in batch.taken:  # only now: a batch whose flush failed is read again, and must not be skipped
            self._seen.add(event_id)
        if batch.done:
            try:
                self.consumer.commit(offsets=[TopicPartition(t, p, o + 1) for (t, p), o in batch.done.items()],
                                     asynchronous=False)
            except KafkaException as e:  # a rebalance took the partitions: their next owner repeats the batch
                log.warning("commit failed; the batch will be handled again (harmless: deliveries are deduplicated)",
                            extra={"flow": FLOW, "error": str(e.args[0])})
        self.handled += finished
        return finished

    def _decode(self, msg: Message, batch: _Batch, destination: str) -> dict[str, Any] | None:
        try:
            alert = self.serde.decode(msg.value(), ALERT)
            validate_alert(alert)
        except SchemaError as e:
            batch.letters.append((msg, e.reason, str(e), destination))
            return None
        except ValueError as e:
            batch.letters.append((msg, "invalid_alert", str(e), destination))
            return None
        return alert

    def _take_alert(self, msg: Message, batch: _Batch) -> None:
        alert = self._decode(msg, batch, "")
        if alert is None:
            return
        if alert["event_id"] in self._seen or alert["event_id"] in batch.taken:  # a replay: already on its way
            for name in self.notifier.destinations:
                ALERT_DELIVERIES.labels(sink=name, outcome=DUPLICATE).inc()
            return
        batch.taken.add(alert["event_id"])
        origin = (msg.topic(), msg.partition(), msg.offset())
        batch.deliveries.extend(Delivery(name, 1, alert, msg.value(), msg.key(), origin)
                                for name in self.notifier.destinations)

    def _take_retry(self, msg: Message, now: int, batch: _Batch, held: set[tuple[str, int]]) -> bool:
        """Queue a due retry (True), or hold its partition until it is due (False)."""
        try:
            info = retry_info(msg.headers())
        except ValueError as e:
            batch.letters.append((msg, "bad_retry_headers", str(e), ""))
            return True
        due = self._due(msg, info.due_ms, now)
        if due > now:
            tp = TopicPartition(msg.topic(), msg.partition(), msg.offset())
            self.consumer.pause([tp])
            self.consumer.seek(tp)
            self.paused[(msg.topic(), msg.partition())] = due
            held.add((msg.topic(), msg.partition()))
            return False
        self._held_at.pop((msg.topic(), msg.partition()), None)
        alert = self._decode(msg, batch, info.destination)
        if alert is not None:
            origin = (msg.topic(), msg.partition(), msg.offset())
            names = [info.destination] if info.destination else self.notifier.destinations
            limited = _count_header(msg.headers(), RATE_LIMITED)
            batch.deliveries.extend(Delivery(n, info.attempt, alert, msg.value(), msg.key(), origin, limited)
                                    for n in names)
        return True

    def _due(self, msg: Message, due_ms: int, now: int) -> int:
        """When a retry is taken: its due time, or at the latest the longest wait the flow schedules from when it
        was first found at the head of its partition. A due time beyond that was written by a clock ahead of
        ours, and would hold every retry behind it for as long."""
        tp = (msg.topic(), msg.partition())
        held = self._held_at.get(tp)
        if held is not None and held[0] == msg.offset():
            return min(due_ms, held[1])
        longest_ms = int(1000 * (self.settings.backoff_cap_s + self.settings.breaker_reset_s))
        if due_ms <= now + longest_ms:
            return due_ms
        self._held_at[tp] = (msg.offset(), now + longest_ms)
        log.warning("retry at %s[%d]@%d is due in %.0f s, beyond the longest wait the flow schedules (%.0f s): "
                    "written where the clock ran ahead? taken in %.0f s", msg.topic(), msg.partition(), msg.offset(),
                    (due_ms - now) / 1000, longest_ms / 1000, longest_ms / 1000,
                    extra={"flow": FLOW, "due_ms": due_ms})
        return now + longest_ms

    def _flush(self) -> None:
        """Write the record of every delivery not yet known to be in Kafka, then flush everything.

        A record is forgotten only after a flush that succeeded: one lost with a failed flush is written again
        with the next batch (whose replay of the same alerts the notifier skips, and would not record again),
        when partitions are revoked, and at close.
        """
        self._queue_records()
        self.producer.flush()
        self._unrecorded.clear()

    def _queue_records(self) -> None:
        for (destination, _), alert in self._unrecorded.items():
            self.delivered.record(self.producer, destination, alert)

    def _write(self, r: Result) -> None:
        d = r.delivery
        if r.outcome == DELIVERED:
            self._unrecorded[(d.destination, d.alert["event_id"])] = d.alert
        elif r.outcome in (RETRY, DEFERRED):
            headers = retry_headers(d.destination, r.attempt, r.due_ms, r.error or r.reason)
            if r.rate_limited:
                headers[RATE_LIMITED] = str(r.rate_limited).encode()
            self.producer.produce_raw(RETRY_TOPIC, d.value, d.key, headers)
        elif r.outcome == DEAD:
            self._dead_letter(d.value, d.key, d.origin, r.reason, r.error, d.destination, d.attempt)

    def _dead_letter(self, value: bytes | None, key: bytes | None, origin: tuple[str, int, int], reason: str,
                     error: str, destination: str, attempts: int) -> None:
        topic, partition, offset = origin
        headers = dlq_headers(topic, reason, error, partition, offset)
        headers.update({DESTINATION: destination.encode(), ATTEMPT: str(attempts).encode()})
        self.producer.produce_raw(DLQ_TOPIC, value, key, headers)
        DLQ_EVENTS.labels(FLOW, ALERTS_TOPIC, reason).inc()

    def close(self) -> None:
        try:
            self.consumer.close()  # revokes its partitions: the delivery records still missing are written first
        finally:
            try:
                self._queue_records()  # any still missing: a restart reads them back
                self.producer.close(10.0)  # flushed, then closed: its threads and connections end with the flow
            finally:
                self.notifier.close()


def run_notify(kafka: KafkaSettings, stop: threading.Event | None = None) -> None:
    """``eddyline run notify``: deliver to the destinations configured in ``[pagerduty]`` and ``[slack]``.

    Refuses to start with none configured: it would commit alerts that reach nobody.

    Parameters
    ----------
    kafka
        Kafka settings.
    stop
        Set it to stop the flow (from another thread); None runs until interrupted.
    """
    dispatcher = AlertDispatcher.from_settings(max_retries=0)
    if not dispatcher.sinks:
        raise ValueError("no alert destination is configured: set [pagerduty] routing_key "
                         "(EDDYLINE_PAGERDUTY_ROUTING_KEY) or [slack] webhook_url (EDDYLINE_SLACK_WEBHOOK_URL)")
    notifier = Notifier(dispatcher, NotifySettings())
    NotifyFlow(kafka, notifier).run(stop)


def create_notify_topics(kafka: KafkaSettings, settings: NotifySettings, partitions: int | None = None) -> None:
    """Create the notify flow's topics, ``alerts.delivered`` keeping a day more than ``delivered_window_s``.

    An existing ``alerts.delivered`` keeps its retention; one shorter than the window is warned about, with the
    setting to change.

    Parameters
    ----------
    kafka
        Kafka settings.
    settings
        The notify settings (their window sets the retention).
    partitions
        Partitions per new topic (default: ``kafka.partitions``).
    """
    create_topics(kafka, TOPICS, partitions=partitions,
                  configs={DELIVERED_TOPIC: retention_above(settings.delivered_window_s)})
    kept = delivered_retention_ms(kafka)
    if kept is not None and 0 <= kept < settings.delivered_window_s * 1000:
        log.warning(
            "%s keeps records %.1f h but [notify] delivered_window_s reads back %.1f h: a restart may post a Slack "
            "message again; set the topic's retention.ms to at least %s (kafka-configs --alter --entity-type topics "
            "--entity-name %s --add-config retention.ms=...) or lower the window",
            kafka.topic(DELIVERED_TOPIC), kept / 3_600_000, settings.delivered_window_s / 3600,
            retention_above(settings.delivered_window_s)["retention.ms"], kafka.topic(DELIVERED_TOPIC),
            extra={"flow": FLOW})


def delivered_retention_ms(kafka: KafkaSettings, timeout: float = 10.0) -> int | None:
    """The ``retention.ms`` of ``alerts.delivered`` as the broker reports it (-1: forever); None if it does not say.

    Parameters
    ----------
    kafka
        Kafka settings.
    timeout
        Seconds to wait for the broker.
    """
    from confluent_kafka.admin import ConfigResource

    resource = ConfigResource(ConfigResource.Type.TOPIC, kafka.topic(DELIVERED_TOPIC))
    admin = make_admin(kafka)  # kept until the answer is in: a dropped client cancels its requests
    try:
        [future] = admin.describe_configs([resource], request_timeout=timeout).values()
        entry = future.result(timeout).get("retention.ms")
        return int(entry.value) if entry is not None and entry.value is not None else None
    except (KafkaException, TimeoutError, ValueError) as e:  # a broker that does not describe configs
        log.debug("could not read the retention of %s: %s", resource.name, e, extra={"flow": FLOW})
        return None


def _count_header(headers: Any, name: str) -> int:
    """A count in a message header (0 when it is absent or not a count)."""
    for k, v in headers or []:
        if k == name:
            try:
                return max(0, int((v or b"0").decode(errors="replace")))
            except ValueError:
                return 0
    return 0


def _committed_positions(consumer: Any, topic: str) -> dict[int, int]:
    """Partition -> the group's committed offset in ``topic``, for the partitions it committed in."""
    meta = consumer.list_topics(topic, timeout=30).topics[topic]
    committed = consumer.committed([TopicPartition(topic, p) for p in sorted(meta.partitions)], timeout=30)
    return {c.partition: c.offset for c in committed if c.offset >= 0}


# Reasons a letter's own bytes were refused for: sent again, it comes back to dlq.alerts, and each redrive repeats it.
NEVER_PASSING = frozenset({DecodeError.reason, ValidationError.reason, "invalid_alert"})


@dataclass
class RedriveReport:
    """What ``redrive`` did: letters put back on the retry topic, by reason and destination; letters skipped as
    ``NEVER_PASSING``, by reason; the DLQ partitions not read to their end within the time limit."""

    redriven: int = 0
    by_reason: dict[str, int] = field(default_factory=dict)
    by_destination: dict[str, int] = field(default_factory=dict)
    skipped: dict[str, int] = field(default_factory=dict)
    unfinished: list[int] = field(default_factory=list)


def redrive(kafka: KafkaSettings, *, timeout_s: float = 120.0, dry_run: bool = False,
            settings: NotifySettings | None = None) -> RedriveReport:
    """Put every dead-lettered alert not redriven before back on ``alerts.retry``, due now, as attempt 1.

    The notify flow delivers them to the destination each letter names (all, where it names none). Letters are
    read from where the redrive consumer group committed last up to the end of ``dlq.alerts`` as of the call
    (``scan_to_end``: letters the flow writes meanwhile, redriven ones failing again among them, wait for the next
    run), and committed every ``settings.batch_size`` letters once their retries are in Kafka, so each is redriven
    once, and a run that dies half-way sends again at most the letters since its last commit; with ``dry_run``
    nothing is written or committed. A letter whose reason is ``NEVER_PASSING`` is skipped, counted, and stays on the
    DLQ. Partitions not read to their end within ``timeout_s`` are committed as far as they were read and reported.

    Parameters
    ----------
    kafka
        The Kafka settings.
    timeout_s
        Seconds to read for; what is left is reported in ``unfinished`` and taken by the next run.
    dry_run
        Count only.
    settings
        The notify flow's settings (its consumer group names the redrive group).
    """
    from connectors.dlq import dlq_info

    settings = settings or NotifySettings()
    create_notify_topics(kafka, settings)
    dlq = kafka.topic(DLQ_TOPIC)
    consumer = make_consumer(kafka, kafka.topic(f"{settings.group_id}-redrive"), **{"enable.partition.eof": False})
    producer = EventProducer(kafka)
    report = RedriveReport()
    positions: dict[int, int] = {}
    committed: dict[int, int] = {}
    taken = 0

    def commit() -> None:
        moved = [TopicPartition(dlq, p, o) for p, o in sorted(positions.items()) if committed.get(p) != o]
        if moved and not dry_run:
            producer.flush()  # the retries are in Kafka before their letters are marked redriven
            consumer.commit(offsets=moved, asynchronous=False)
            committed.update(positions)

    def take(msg: Message) -> None:
        nonlocal taken
        if taken and taken % settings.batch_size == 0:
            commit()  # the letters before this one (``positions`` is not past it yet)
        taken += 1
        info = dlq_info(msg.headers())
        reason = info.get("reason", "unknown")
        if reason in NEVER_PASSING:
            report.skipped[reason] = report.skipped.get(reason, 0) + 1
            return
        destination = dict(msg.headers() or []).get(DESTINATION, b"").decode(errors="replace")
        report.redriven += 1
        report.by_reason[reason] = report.by_reason.get(reason, 0) + 1
        report.by_destination[destination or "all"] = report.by_destination.get(destination or "all", 0) + 1
        if not dry_run:
            producer.produce_raw(RETRY_TOPIC, msg.value(), msg.key(), retry_headers(
                destination, 1, time.time_ns() // 1_000_000, f"redriven after {reason}: {info.get('error', '')}"),
                serve=False)

    try:
        positions.update(_committed_positions(consumer, dlq))
        committed.update(positions)
        report.unfinished = sorted(scan_to_end(kafka, dlq, take, positions, timeout=timeout_s))
        commit()
    finally:
        consumer.close()
        producer.flush(10.0)
    return report
