"""The gateway's ASGI application: HTTP POST and WebSocket in, validated Avro events out to Kafka.

A request is authenticated, checked against backpressure and the size limit, parsed, mapped onto
the event's Avro record (every problem named with its path), encoded (the schema's rules checked) and
only then produced: bad input refuses the whole request, nothing of it is produced. ``202 Accepted``
means the event is in the producer's queue; the idempotent producer then retries until the broker
acknowledges it, and a delivery that still fails is counted, logged and shown on ``/health``. A producer that
fails for good is replaced, and what it held is sent again (``connectors.gateway.producer``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

from connectors.gateway.auth import TokenAuth
from connectors.gateway.calls import open_socket, pcm_stream, twilio_stream
from connectors.gateway.errors import GatewayError, Problem, parse_json
from connectors.gateway.limits import Backpressure, RateLimits, message_bytes, read_body, too_large
from connectors.gateway.openapi import openapi_spec
from connectors.gateway.producer import GatewayProducer
from connectors.gateway.records import ENDPOINTS, Endpoint, RecordMapper
from connectors.gateway.settings import GatewaySettings
from connectors.kafka import DeliveryError, EventProducer, KafkaSettings, create_topics
from schemas import RegistryUnavailableError, SchemaError, derive_id, new_id

log = logging.getLogger("eddyline.gateway")

POLL_INTERVAL_S = 0.02
LIBRDKAFKA_MESSAGE_MAX_BYTES = 1_000_000
LIBRDKAFKA_RECORD_OVERHEAD = 36  # what librdkafka adds to key, value and headers when it checks message.max.bytes
DEGRADED_AFTER_FAILURE_S = 60.0


class Gateway:
    """The state behind the routes: the producer, its poller, auth, limits and counters."""

    def __init__(self, settings: GatewaySettings, kafka: KafkaSettings, producer: EventProducer | None = None) -> None:
        settings.check_usable()
        self.settings = settings
        self.kafka = kafka
        self.auth = TokenAuth(settings)
        self.mappers = {t: RecordMapper(t) for t in ENDPOINTS}
        self._producer = producer
        self._poller: asyncio.Task | None = None
        self._failed_seen = 0
        self.last_failure: float | None = None
        self.accepted = 0
        self._produce_failures = 0
        self.producers_replaced = 0
        self.max_message_bytes = int(kafka.extra.get("message.max.bytes", LIBRDKAFKA_MESSAGE_MAX_BYTES))
        self.backpressure = Backpressure(self.waiting, settings.max_queue, settings.retry_after_s)
        self.rates = RateLimits(settings.rates, settings.rate_burst_s)

    @property
    def producer(self) -> EventProducer:
        if self._producer is None:
            raise RuntimeError("the gateway is not started")
        return self._producer

    async def start(self) -> None:
        if self.settings.create_topics:
            await asyncio.to_thread(create_topics, self.kafka, [e.topic for e in ENDPOINTS.values()])
        if self._producer is None:
            room = self.settings.max_queue + 2 * self.settings.max_events_per_request
            self._producer = GatewayProducer(self.kafka, **{"queue.buffering.max.messages": max(100_000, room)})
        self._poller = asyncio.create_task(self._poll_deliveries())
        log.info("gateway producing to %s (namespace %r)", self.kafka.bootstrap_servers, self.kafka.namespace)

    async def stop(self) -> None:
        if self._poller is not None:
            self._poller.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._poller
        if self._producer is not None:
            try:  # closed, not only flushed: its threads and broker connections end with the gateway
                await asyncio.to_thread(self._producer.close, self.settings.shutdown_flush_s)
            except DeliveryError as exc:
                log.error("gateway stopped with events not delivered: %s", exc)

    def waiting(self) -> int:
        """Events accepted and not yet acknowledged or failed (delivery reports are served by the poller)."""
        return self.accepted - self.producer.delivered - self.undelivered()

    def undelivered(self) -> int:
        """Events accepted (202) that Kafka never acknowledged; a produce refused before its 202 is not one."""
        return self.producer.failed - self._produce_failures

    async def _poll_deliveries(self) -> None:
        """Serve delivery reports while no request is producing, and say when deliveries fail."""
        while True:
            try:
                self.producer.poll(0)
                self._recover()
            except Exception:  # a poller that died would leave accepted events waiting unseen
                log.exception("serving Kafka delivery reports failed; trying again")
                self.last_failure = time.monotonic()
            failed = self.undelivered()
            if failed > self._failed_seen:
                log.error(
                    "%d events accepted by the gateway were not delivered to Kafka (%d in all)",
                    failed - self._failed_seen,
                    failed,
                )
                self._failed_seen = failed
                self.last_failure = time.monotonic()
            await asyncio.sleep(POLL_INTERVAL_S)

    def _fatal_producer(self) -> GatewayProducer | None:
        """The producer, if it is a ``GatewayProducer`` that librdkafka declared fatal."""
        p = self._producer
        return p if isinstance(p, GatewayProducer) and p.fatal_error is not None else None

    def _recover(self) -> bool:
        """Replace a producer that failed for good (its accepted events go out on the new one); True if replaced."""
        p = self._fatal_producer()
        if p is None:
            return False
        self._producer = p.replacement()
        self.producers_replaced += 1
        self.last_failure = time.monotonic()
        return True

    def publish(self, endpoint: Endpoint, value: Any, client: str) -> list[str]:
        """Map, encode and produce one event or a JSON array of them; all or nothing."""
        self.auth.check_scope(client, endpoint.event_type)
        if type(value) is list:
            if not value:
                raise GatewayError(422, "empty", "the array holds no events; send at least one")
            if len(value) > self.settings.max_events_per_request:
                raise GatewayError(
                    413,
                    "too_many_events",
                    f"{len(value)} events in one request; at most {self.settings.max_events_per_request}, "
                    "split the array",
                )
            items = [(v, f"[{i}]") for i, v in enumerate(value)]
        else:
            items = [(value, "")]
        self.rates.take(client, len(items))
        mapper = self.mappers[endpoint.event_type]
        problems: list[Problem] = []
        records: list[tuple[dict[str, Any], str]] = []
        now_ms = int(time.time() * 1000)
        for v, path in items:
            record, found = mapper.to_record(v, path)
            if record is None:
                problems.extend(found)
                continue
            self.auth.check_key(client, endpoint.key_field, record[endpoint.key_field])
            producer = f"gateway/{client}"
            if record.get("producer", producer) != producer:
                problems.append(Problem(f"{path}.producer" if path else "producer",
                                        f"set by the gateway from your token ({producer!r}), not "
                                        f"{record['producer']!r}; leave the field out. To tell your senders "
                                        "apart, give each its own token ([gateway] tokens): the token's name "
                                        "is the producer"))
                continue
            self._fill(endpoint, record, client, now_ms)
            records.append((record, path))
        return self.produce_records(endpoint, records, client, problems)

    def produce_records(
        self, endpoint: Endpoint, records: list[tuple[dict[str, Any], str]], client: str,
        problems: list[Problem] | None = None,
    ) -> list[str]:
        """Encode and produce complete records (ids, times and producer set), each with its path; all or nothing."""
        topic = self.kafka.topic(endpoint.topic)
        problems = problems if problems is not None else []
        headers = {"gateway-client": client.encode()}
        framing = LIBRDKAFKA_RECORD_OVERHEAD + sum(len(k) + len(v) + 10 for k, v in headers.items())  # 2 varints each
        encoded: list[tuple[bytes, str, str]] = []
        for record, path in records:
            try:
                data = self.producer.serde.encode(endpoint.event_type, record, topic=topic)
            except RegistryUnavailableError as exc:
                raise GatewayError(503, "registry_unavailable", f"{exc}; retry with the same event_id",
                                   headers={"Retry-After": str(self.settings.retry_after_s)}) from None
            except SchemaError as exc:
                problems.append(Problem(path or "(body)", str(exc)))
                continue
            # doubles take 8 bytes in Avro, "0," takes 2 in JSON; the key counts too: librdkafka refusing it would
            # be a 503 'retry', which no retry gets past
            size = len(data) + len(record[endpoint.key_field].encode("utf-8", "surrogatepass")) + framing
            if size > self.max_message_bytes:
                problems.append(
                    Problem(
                        path or "(body)",
                        (
                            f"encodes to {size} bytes of Kafka message (Avro, key {endpoint.key_field} and headers), "
                            f"over the Kafka message limit of {self.max_message_bytes}; send fewer readings, a "
                            f"shorter chunk or a shorter {endpoint.key_field} per event"
                        ),
                    )
                )
                continue
            encoded.append((data, record[endpoint.key_field], record["event_id"]))
        if problems:
            if any(p.message.startswith("encodes to") for p in problems):
                raise GatewayError(413, "too_large", problems[0].message, problems[:10])
            raise GatewayError(
                422,
                "invalid_event",
                f"the {endpoint.event_type} event does not fit its schema; fix the fields listed in 'problems'",
                problems[:10],
            )
        ids = [event_id for _, _, event_id in encoded]
        for done, (data, key, _) in enumerate(encoded):
            try:
                self._produce(endpoint.topic, data, key, headers)
            except DeliveryError as exc:
                log.error("producing to %s failed: %s", topic, exc)
                raise self._refused_partway(exc, done, ids) from None
            self.accepted += 1
        return ids

    def _refused_partway(self, exc: DeliveryError, done: int, ids: list[str]) -> GatewayError:
        """503 for a refusal after ``done`` events were queued, which cannot be taken back: the body names every
        event's id (one sent with neither event_id nor seq got a fresh id, which a plain retry would not repeat)
        so that a retry repeats the queued ones under their ids, and consumers drop them as repeats."""
        if done:
            advice = (f"{done} of the {len(ids)} events were accepted before it: send the others again, or all "
                      "of them with each one's event_id from 'event_ids'")
        else:
            advice = "nothing was accepted; retry with the same event_id"
        return GatewayError(503, "broker_unavailable", f"{exc}; {advice}",
                            headers={"Retry-After": str(self.settings.retry_after_s)},
                            details={"accepted": done, "event_ids": ids})

    def _produce(self, topic: str, data: bytes, key: str, headers: dict[str, bytes]) -> None:
        """Produce one event; a producer that failed for good is replaced and the event tried once more."""
        try:
            self.producer.produce_raw(topic, data, key, headers)
            return
        except DeliveryError:
            self._produce_failures += 1  # refused before it was accepted: not waiting
            if self._fatal_producer() is None:
                raise
        self._recover()  # not in the except block: replaced there, the refusal and both producers were never freed
        try:
            self.producer.produce_raw(topic, data, key, headers)
        except DeliveryError:
            self._produce_failures += 1
            raise

    @staticmethod
    def _fill(endpoint: Endpoint, record: dict[str, Any], client: str, now_ms: int) -> None:
        """Default the fields the gateway owns; an id derived from ``seq`` is the same for a retry.

        ``producer`` is the token's name, never the client's word (``publish`` refuses another value):
        quarantine is per producer, so a client that could name itself could frame an honest producer or
        rotate names to evade it.
        """
        producer = record["producer"] = f"gateway/{client}"
        if "event_id" not in record:
            if "seq" in record:
                key = (record[endpoint.key_field], record["seq"])
                record["event_id"] = derive_id("gateway", endpoint.event_type, producer, *key)
            else:  # two identical clicks are two events; a retry that must be recognised sends its event_id
                record["event_id"] = new_id()
        record.setdefault("event_time", now_ms)

    def health(self) -> tuple[int, dict[str, Any]]:
        queue = self.waiting() if self._producer is not None else 0
        problems = []
        if self._producer is None:
            problems.append("not started")
        elif queue >= self.settings.max_queue:
            problems.append(f"producer queue full ({queue} >= {self.settings.max_queue}): the broker is behind")
        elif isinstance(self._producer, GatewayProducer) and self._producer.queue_full:
            problems.append(f"producer queue full of bytes ({queue} events; [kafka] extra queue.buffering.max.kbytes): "
                            "the broker is behind")
        if self.last_failure is not None and time.monotonic() - self.last_failure < DEGRADED_AFTER_FAILURE_S:
            problems.append("deliveries to Kafka failed in the last minute")
        body = {
            "status": "degraded" if problems else "ok",
            "problems": problems,
            "queue": queue,
            "max_queue": self.settings.max_queue,
            "accepted": self.accepted,
            "delivered": self._producer.delivered if self._producer is not None else 0,
            "failed": self.undelivered() if self._producer is not None else 0,
            "producers_replaced": self.producers_replaced,
            "refused_backpressure": self.backpressure.refused,
        }
        return (503 if problems else 200), body


def _require_json(request: Request) -> None:
    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media != "application/json" and not (media.startswith("application/") and media.endswith("+json")):
        raise GatewayError(
            415,
            "unsupported_media_type",
            f"send the event as JSON with 'Content-Type: application/json' (got {media or 'none'!r})",
        )


Handler = Callable[[Request], Awaitable[Response]]


def _answers_errors(handler: Handler) -> Handler:
    async def wrapped(request: Request) -> Response:
        try:
            return await handler(request)
        except GatewayError as exc:
            return exc.response()

    return wrapped


def create_app(
    settings: GatewaySettings | None = None,
    kafka: KafkaSettings | None = None,
    producer: EventProducer | None = None,
) -> Starlette:
    """The ASGI app; settings default to ``[gateway]`` and ``[kafka]``. ``app.state.gateway`` holds the state."""
    settings = settings or GatewaySettings()
    kafka = kafka or KafkaSettings()
    gateway = Gateway(settings, kafka, producer)
    spec = openapi_spec(settings)

    def post_endpoint(endpoint: Endpoint) -> Handler:
        @_answers_errors
        async def post(request: Request) -> Response:
            client = gateway.auth.client(request.headers.get("authorization"))
            gateway.backpressure.check()
            _require_json(request)
            value = parse_json(await read_body(request, settings.max_body_bytes, settings.body_timeout_s))
            ids = gateway.publish(endpoint, value, client)
            return JSONResponse({"accepted": len(ids), "topic": endpoint.topic, "event_ids": ids}, status_code=202)

        return post

    async def health(request: Request) -> Response:
        status, body = gateway.health()
        return JSONResponse(body, status_code=status)

    async def openapi(request: Request) -> Response:
        return JSONResponse(spec)

    async def websocket(ws: WebSocket) -> None:
        client = await open_socket(ws, lambda: gateway.auth.client(ws.headers.get("authorization")))
        if client is None:
            return
        try:
            while True:
                message = await ws.receive()
                if message["type"] == "websocket.disconnect":
                    return
                await ws.send_json(_ws_answer(gateway, message, client))
        except WebSocketDisconnect:
            return

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        hint = {404: "see /openapi.json for the endpoints", 405: "see /openapi.json for the allowed methods"}
        message = f"{exc.detail}: {hint.get(exc.status_code, '')}".rstrip(": ")
        return JSONResponse({"error": code, "message": message}, status_code=exc.status_code, headers=exc.headers)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await gateway.start()
        try:
            yield
        finally:
            await gateway.stop()

    routes = [Route(e.path, post_endpoint(e), methods=["POST"]) for e in ENDPOINTS.values()]
    routes += [
        Route("/health", health, methods=["GET"]),
        Route("/openapi.json", openapi, methods=["GET"]),
        WebSocketRoute("/v1/ws", websocket),
        WebSocketRoute("/v1/audio/stream", lambda ws: pcm_stream(gateway, ws)),
        WebSocketRoute("/v1/audio/twilio", lambda ws: twilio_stream(gateway, ws)),
    ]
    app = Starlette(routes=routes, lifespan=lifespan, exception_handlers={HTTPException: http_error})
    app.state.gateway = gateway
    return app


def _ws_answer(gateway: Gateway, message: dict[str, Any], client: str) -> dict[str, Any]:
    """One WebSocket message in, one acknowledgement out: ``status`` is what HTTP would have answered."""
    ref = None
    try:
        text = message.get("text")
        if text is None:
            raise GatewayError(415, "unsupported_media_type", "send each event as a JSON text frame, not binary")
        if message_bytes(message) > gateway.settings.max_body_bytes:
            raise too_large(gateway.settings.max_body_bytes, "message")
        value = parse_json(text)
        if type(value) is not dict:
            raise GatewayError(400, "bad_message", 'send {"type": EVENT_TYPE, "event": {...}, "ref": optional}')
        ref = value.get("ref")
        if ref is not None and type(ref) not in (str, int):
            ref = None
            raise GatewayError(400, "bad_message", "'ref' must be a string or an integer")
        unknown = value.keys() - {"type", "event", "ref"}
        if unknown:
            raise GatewayError(400, "bad_message", f"unknown keys {sorted(unknown)}; allowed: type, event, ref")
        kind = value.get("type")
        endpoint = ENDPOINTS.get(kind) if type(kind) is str else None
        if endpoint is None:
            raise GatewayError(400, "unknown_type", f"'type' must be one of {', '.join(ENDPOINTS)}")
        if "event" not in value:
            raise GatewayError(400, "bad_message", "the message has no 'event'")
        gateway.backpressure.check()
        ids = gateway.publish(endpoint, value["event"], client)
        return {"ref": ref, "status": 202, "topic": endpoint.topic, "event_ids": ids}
    except GatewayError as exc:
        out: dict[str, Any] = {"ref": ref, "status": exc.status, **exc.body()}
        if "Retry-After" in exc.headers:
            out["retry_after_s"] = int(exc.headers["Retry-After"])
        return out
