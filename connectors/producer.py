"""A small client for services that publish events to eddyline: readings, clicks, predictions, feedback.

Built on ``EventProducer`` (idempotent, ``acks=all``, compressed): every event is checked against its
schema before it leaves, carries a stable ``event_id`` (a retry of the same call sends the same id, so
the flows drop the duplicate), and readings are batched per device into ``sensor_batch`` events whose
``seq`` counts each device's batches one by one from a time-based start. Everything still buffered is sent
on ``flush()``, when the ``with`` block ends and when the interpreter exits.

    from connectors.producer import Producer

    with Producer("line-3") as p:
        p.send_reading("press-7", "temperature", 21.5)
        pid = p.send_prediction("churn", "v3", subject_id="u42", score=0.81, features={"tenure": 7.0})
        p.send_feedback("churn", pid, label=1.0)
"""

from __future__ import annotations

import atexit
import json
import logging
import math
import threading
import time
import weakref
from collections import OrderedDict
from collections.abc import Sequence
from types import TracebackType
from typing import Any, Literal

from connectors import kafka
from connectors.kafka import EventProducer, KafkaSettings
from schemas import CLICK, FEEDBACK, PREDICTION, SENSOR_BATCH, derive_id
from schemas.catalog import MAX_BATCH_READINGS

__all__ = ["Producer"]

log = logging.getLogger(__name__)

TOPICS = {SENSOR_BATCH: "sensor.readings", CLICK: "clicks", PREDICTION: "predictions", FEEDBACK: "feedback"}
SEQ_START_SHIFT = 20  # a device's first seq is milliseconds since the epoch << this (streams.sequence.RESET_JUMP)
SEQ_FORGET_S = 24 * 3600.0  # a device without a batch for this long is forgotten; back, it numbers from the time


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


class _DeviceBatch:
    __slots__ = ("opened", "series", "count")

    def __init__(self) -> None:
        self.opened = time.monotonic()
        self.series: dict[tuple[str, str | None], tuple[list[int], list[float]]] = {}
        self.count = 0


class Producer:
    """Publishes eddyline events from a Python service.

    Parameters
    ----------
    name
        Who publishes: the ``producer`` field of every event, and part of every derived id.
    settings
        Where Kafka is; by default ``[kafka]`` in ``eddyline.toml`` and ``EDDYLINE_KAFKA_*``.
    max_readings
        Readings of one device sent together as one ``sensor_batch``; at most
        ``schemas.catalog.MAX_BATCH_READINGS``, so that the batch fits one Kafka message.
    linger_s
        The longest a reading waits for its batch to fill; a background thread sends older batches.
    delivery_timeout_s
        How long the client retries a message the broker does not acknowledge before ``flush`` reports it.
    create_topics
        Create the four input topics if they do not exist.
    """

    def __init__(
        self, name: str, settings: KafkaSettings | None = None, *, max_readings: int = 1000,
        linger_s: float = 1.0, delivery_timeout_s: float = 120.0, create_topics: bool = True,
    ) -> None:
        if not name:
            raise ValueError("name the producer (e.g. the service's name): it goes into every event")
        if not 1 <= max_readings <= MAX_BATCH_READINGS or linger_s <= 0:
            raise ValueError(f"max_readings must be from 1 to {MAX_BATCH_READINGS} (a batch must fit one Kafka "
                             "message) and linger_s positive")
        self.name = name
        self.settings = settings or KafkaSettings()
        self.max_readings = max_readings
        self.linger_s = linger_s
        if create_topics:
            kafka.create_topics(self.settings, list(TOPICS.values()))
        self._producer = EventProducer(self.settings, **{"message.timeout.ms": int(delivery_timeout_s * 1000)})
        self._batches: dict[str, _DeviceBatch] = {}
        # Each device's batches are numbered one after another: the flows count a missing number as a lost batch.
        # The start is the time, so a restarted process, or a device forgotten after SEQ_FORGET_S, numbers above
        # all it used before, by far enough (2**20 a millisecond, twice streams.sequence.RESET_JUMP) for the flows
        # to see a new sequence, not lost batches.
        self._next_seq: OrderedDict[str, tuple[int, float]] = OrderedDict()  # device -> (seq, last batch), oldest first
        self._lock = threading.RLock()
        self._closed = threading.Event()
        self._sender = threading.Thread(target=_send_due_loop, args=(weakref.ref(self), self._closed), daemon=True)
        self._sender.start()
        atexit.register(self.close)

    # -- readings --------------------------------------------------------------------------------------
    def send_reading(self, device_id: str, sensor: str, value: float, time_ms: int | None = None,
                     unit: str | None = None) -> None:
        """One reading; it waits in the device's batch for ``max_readings`` or ``linger_s``."""
        self.send_readings(device_id, sensor, [_now_ms() if time_ms is None else time_ms], [value], unit)

    def send_readings(self, device_id: str, sensor: str, timestamps: Sequence[int], values: Sequence[float],
                      unit: str | None = None) -> None:
        """Many readings of one sensor; ``timestamps`` are milliseconds since the Unix epoch, UTC.

        Readings the schema refuses (a value that is NaN or infinite, a time that is no integer) raise here, before
        they join the device's batch: found when the batch is sent, they took the device's good readings with them.
        """
        if not device_id or not sensor:
            raise ValueError("device_id and sensor must be non-empty")
        if len(timestamps) != len(values):
            raise ValueError(f"{len(values)} values but {len(timestamps)} timestamps")
        new_ts, new_vs = [int(t) for t in timestamps], [float(v) for v in values]
        if not all(map(math.isfinite, new_vs)):
            raise ValueError(f"a value of {device_id}/{sensor} is NaN or infinite; leave out readings a sensor failed "
                             "to take")
        with self._lock:
            self._check_open()
            if not new_vs:
                return
            batch = self._batches.setdefault(device_id, _DeviceBatch())
            ts, vs = batch.series.setdefault((sensor, unit), ([], []))
            ts.extend(new_ts)
            vs.extend(new_vs)
            batch.count += len(new_vs)
            if batch.count >= self.max_readings:
                self._send_batch(device_id)

    def _send_batch(self, device_id: str) -> None:
        batch = self._batches.pop(device_id)
        now = time.monotonic()
        while self._next_seq and now - next(iter(self._next_seq.values()))[1] > SEQ_FORGET_S:
            self._next_seq.popitem(last=False)  # devices come and go over months: memory follows the active ones
        seq = self._next_seq.pop(device_id, (_now_ms() << SEQ_START_SHIFT, now))[0]
        self._next_seq[device_id] = (seq + 1, now)
        series = [{"sensor": s, "unit": u, "timestamps": ts, "values": vs} for (s, u), (ts, vs) in batch.series.items()]
        record = {
            "event_id": derive_id(self.name, device_id, seq),
            "event_time": min(min(s["timestamps"]) for s in series),
            "producer": self.name,
            "device_id": device_id,
            "seq": seq,
            "series": series,
        }
        self._producer.produce(TOPICS[SENSOR_BATCH], SENSOR_BATCH, record, key=device_id)

    def send_due(self) -> None:
        """Send the batches older than ``linger_s`` (the background thread calls this)."""
        with self._lock:
            if self._closed.is_set():  # close sent them all and released the client
                return
            now = time.monotonic()
            for device_id in [d for d, b in self._batches.items() if now - b.opened >= self.linger_s]:
                self._send_batch(device_id)
            self._producer.poll(0)

    # -- single events ---------------------------------------------------------------------------------
    def send_click(self, user_id: str, item_id: str, action: Literal["CLICK", "IMPRESSION"] = "CLICK", *,
                   impression_id: str | None = None, position: int | None = None,
                   context: dict[str, str] | None = None, time_ms: int | None = None,
                   event_id: str | None = None) -> str:
        """An impression of an item to a user, or the user's click on it; returns the event id."""
        return self._send(CLICK, user_id, event_id, time_ms, {
            "user_id": user_id, "item_id": item_id, "action": action, "impression_id": impression_id,
            "position": position, "rating": None, "context": dict(context or {}),
        })

    def send_prediction(self, model_name: str, model_version: str, subject_id: str, score: float, *,
                        features: dict[str, float] | None = None, item_id: str | None = None,
                        label: str | None = None, latency_ms: float = 0.0, error: str | None = None,
                        time_ms: int | None = None, event_id: str | None = None) -> str:
        """A model's output; returns the prediction id that ``send_feedback`` refers to."""
        feats = {k: float(v) for k, v in (features or {}).items()}
        digest = derive_id("features", json.dumps(feats, sort_keys=True))
        return self._send(PREDICTION, model_name, event_id, time_ms, {
            "model_name": model_name, "model_version": model_version, "subject_id": subject_id,
            "item_id": item_id, "features_digest": digest, "features": feats, "score": float(score),
            "label": label, "latency_ms": float(latency_ms), "error": error,
        })

    def send_feedback(self, model_name: str, prediction_id: str, label: float, *, time_ms: int | None = None,
                      event_id: str | None = None) -> str:
        """Ground truth for an earlier prediction; returns the event id."""
        return self._send(FEEDBACK, model_name, event_id, time_ms,
                          {"model_name": model_name, "prediction_id": prediction_id, "label": float(label)})

    def _send(self, event_type: str, key: str, event_id: str | None, time_ms: int | None,
              fields: dict[str, Any]) -> str:
        when = _now_ms() if time_ms is None else time_ms
        if event_id is None:  # the same call again (same fields and time) gives the same id
            event_id = derive_id(self.name, event_type, when, json.dumps(fields, sort_keys=True))
        record = {"event_id": event_id, "event_time": when, "producer": self.name, **fields}
        with self._lock:
            self._check_open()
            self._producer.produce(TOPICS[event_type], event_type, record, key=key)
        return event_id

    # -- delivery --------------------------------------------------------------------------------------
    def flush(self, timeout: float = 30.0) -> None:
        """Send every batch and wait for the broker; raises ``DeliveryError`` naming what was not delivered.

        Parameters
        ----------
        timeout
            Seconds to wait for the broker's acknowledgements.
        """
        with self._lock:
            if self._closed.is_set():  # close sent and waited for everything
                return
            for device_id in list(self._batches):
                self._send_batch(device_id)
        self._producer.flush(timeout)

    def close(self) -> None:
        """Send every batch, wait for the broker (``DeliveryError`` as ``flush``) and release the client's threads and
        connections, even when the wait fails: a service that makes a producer per job must not collect them.
        Safe to call twice (it runs at interpreter exit too)."""
        with self._lock:
            if self._closed.is_set():
                return
            self._closed.set()  # from here on sends are refused, so the batches are this call's alone
        atexit.unregister(self.close)
        try:
            for device_id in list(self._batches):
                self._send_batch(device_id)
        finally:
            self._sender.join()
            self._producer.close()

    def _check_open(self) -> None:
        if self._closed.is_set():
            raise RuntimeError("the producer is closed; create a new one")

    @property
    def delivered(self) -> int:
        """Messages the broker acknowledged so far."""
        return self._producer.delivered

    def __enter__(self) -> Producer:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


def _send_due_loop(ref: weakref.ref[Producer], closed: threading.Event) -> None:
    while True:
        producer = ref()
        if producer is None or closed.is_set():
            return
        interval = producer.linger_s / 2
        try:
            producer.send_due()
        except Exception:  # the next round sends the other devices' batches all the same
            log.exception("sending batches older than linger_s failed", extra={"producer": producer.name})
        del producer
        if closed.wait(interval):
            return
