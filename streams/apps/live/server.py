"""The live page's server: reads the output topics, folds them into a ``LiveState``, pushes it over WebSocket.

One process serves the page (``/``, its script and style) and a WebSocket (``/ws``) on the same port,
loopback by default. A consumer thread reads the output topics as any consumer would, with ``assign()``
from the beginning (no consumer group: the page has no offsets to keep, and it sees topics created after
it started). An asyncio loop in another thread sends each client the whole view on connect and again
whenever it changed, at most ``push_interval_s`` apart; the view is bounded, so a snapshot stays small.
Each client picks the device, sensor and call its charts show by sending ``{"device", "sensor", "call"}``
over the WebSocket; it gets its view with those charts at once.
Everything but ``/login`` needs the token or the session cookie of a login link, and the WebSocket refuses
other origins (``streams.apps.live.auth``). A third thread reads every flow's consumer
lag (committed offsets and fetch high watermarks, as the flows' own monitors do) for the lag chart.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from pathlib import Path
from collections.abc import Iterable
from typing import Any, Self
from urllib.parse import parse_qs, urlsplit

from confluent_kafka import OFFSET_BEGINNING, TIMESTAMP_NOT_AVAILABLE, Consumer, TopicPartition

from connectors.kafka import KafkaSettings, make_consumer
from connectors.lag import LagReader
from connectors.schema_registry import configured_serde
from schemas import SchemaError
from streams.apps.live.auth import LiveAuth
from streams.apps.live.state import TOPICS, LiveLimits, LiveState, page_json
from streams.engines.lag import ENGINES, consumer_group

log = logging.getLogger(__name__)
STATIC = Path(__file__).resolve().parent / "static"
FILES = {
    "/": ("index.html", "text/html; charset=utf-8"),
    "/app.js": ("app.js", "text/javascript; charset=utf-8"),
    "/charts.js": ("charts.js", "text/javascript; charset=utf-8"),
    "/style.css": ("style.css", "text/css; charset=utf-8"),
}
KINDS = {".js": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8"}
FILES.update({
    f"/vendor/{f.name}": (f"vendor/{f.name}", KINDS[f.suffix])
    for f in (STATIC / "vendor").iterdir()
    if f.suffix in KINDS
})


class TopicReader(threading.Thread):
    """Feeds every event of the watched topics into the state; undecodable ones are counted as rejected."""

    def __init__(self, settings: KafkaSettings, state: LiveState, lock: threading.Lock) -> None:
        super().__init__(daemon=True, name="live-topic-reader")
        self.settings, self.state, self.lock = settings, state, lock
        self.names = {settings.topic(t): t for t in TOPICS}
        self.serde = configured_serde(consumer=True)
        self._halt = threading.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            consumer = make_consumer(self.settings, "eddyline-live-page")
        except Exception as exc:  # noqa: BLE001 - reported through .error and the log
            self.error = exc
            log.error("live page cannot consume: %s", exc)
            return
        assigned: set[tuple[str, int]] = set()
        next_look = 0.0
        try:
            while not self._halt.is_set():
                if time.monotonic() >= next_look:  # topics may appear after the page started
                    assigned |= self._assign_new(consumer, assigned)
                    next_look = time.monotonic() + (1.0 if len(assigned) < len(self.names) else 5.0)
                if not assigned:
                    self._halt.wait(0.2)
                    continue
                msgs = consumer.consume(500, 0.2)
                if msgs:
                    self._take(msgs)
        finally:
            consumer.close()

    def _assign_new(self, consumer: Consumer, assigned: set[tuple[str, int]]) -> set[tuple[str, int]]:
        try:
            meta = consumer.list_topics(timeout=5)
        except Exception as exc:  # noqa: BLE001 - the broker may be restarting; try again later
            log.warning("live page: listing topics failed: %s", exc)
            return set()
        fresh = [
            TopicPartition(name, p, OFFSET_BEGINNING)
            for name in self.names
            if name in meta.topics
            for p in meta.topics[name].partitions
            if (name, p) not in assigned
        ]
        if fresh:
            consumer.incremental_assign(fresh)
        return {(tp.topic, tp.partition) for tp in fresh}

    def _take(self, msgs: list[Any]) -> None:
        decoded = []
        for msg in msgs:
            if msg.error() is not None:
                continue  # partition EOF and transient errors; librdkafka retries
            topic = self.names[msg.topic()]
            kind, stamp = msg.timestamp()
            broker_ms = stamp if kind != TIMESTAMP_NOT_AVAILABLE else -1
            try:
                decoded.append((topic, self.serde.decode(msg.value(), TOPICS[topic]), broker_ms))
            except (SchemaError, TypeError, ValueError) as exc:  # a tombstone (no value) is a TypeError
                decoded.append((topic, exc, broker_ms))
        # predictions and feedback come from two topics: hand them to the quality join in event-time order
        decoded.sort(
            key=lambda tr: (
                tr[1]["event_time"] if tr[0] in ("predictions", "feedback") and isinstance(tr[1], dict) else 0
            )
        )
        with self.lock:
            for topic, rec, broker_ms in decoded:
                if isinstance(rec, Exception):
                    self.state.reject(topic, getattr(rec, "reason", None) or type(rec).__name__)
                else:
                    self.state.apply(topic, rec, broker_ms)

    def stop(self) -> None:
        self._halt.set()


class LagPoller(threading.Thread):
    """Reads the consumer lag of every flow on both engines every ``interval_s``; a flow whose group has
    committed nothing (it never ran on that engine) is left out."""

    def __init__(self, settings: KafkaSettings, state: LiveState, lock: threading.Lock, interval_s: float) -> None:
        super().__init__(daemon=True, name="live-lag-poller")
        self.settings, self.state, self.lock, self.interval_s = settings, state, lock, interval_s
        self._halt = threading.Event()

    def _groups(self) -> dict[str, tuple[str, list[str]]]:
        """group -> (chart label, full input topic names), for every flow the registry can build."""
        from streams.flows import FLOWS, flow_spec

        out = {}
        for name in FLOWS:
            try:
                spec = flow_spec(name)
            except Exception as exc:  # noqa: BLE001 - a flow that cannot be configured here has no lag to show
                log.info("live page: no lag for flow %s: %s", name, exc)
                continue
            for engine in ENGINES:
                out[consumer_group(spec.name, engine, self.settings)] = (
                    f"{spec.name} · {engine}", [self.settings.topic(t) for t in spec.inputs])
        return out

    def run(self) -> None:
        groups = self._groups()
        reader = LagReader(self.settings)
        try:
            while not self._halt.is_set():
                try:
                    found = reader.lags({g: topics for g, (_, topics) in groups.items()})
                except Exception as exc:  # noqa: BLE001 - the broker may be restarting; try again later
                    log.warning("live page: reading consumer lag failed: %s", exc)
                    found = {}
                lags = {groups[g][0]: sum(p.lag for p in parts) for g, parts in found.items()
                        if any(p.committed is not None for p in parts)}
                if lags:
                    with self.lock:
                        self.state.lag(lags)
                self._halt.wait(self.interval_s)
        finally:
            reader.close()

    def stop(self) -> None:
        self._halt.set()


class LivePage:
    """``LivePage(settings, host, port).start()`` serves the page; ``url`` says where; ``stop()`` ends it all.

    Port 0 picks a free port (``url`` has the bound one once ``start()`` returns).

    Parameters
    ----------
    settings
        The Kafka whose output topics (and flows' consumer groups) the page shows.
    host, port
        Where to listen.
    push_interval_s
        The shortest time between two pushes of a changed view.
    limits
        How much the page keeps (rows, conversations, chart points).
    lag_interval_s
        Seconds between consumer-lag readings.
    token
        The bearer token scripts send; a random one when None (``login_url()`` lets a browser in).
    origins
        Further origins whose pages may open the WebSocket (the page's own are always accepted).
    login_code_ttl_s
        How long an unused login link works.
    """

    def __init__(
        self,
        settings: KafkaSettings,
        host: str = "127.0.0.1",
        port: int = 8050,
        *,
        push_interval_s: float = 0.25,
        limits: LiveLimits | None = None,
        lag_interval_s: float = 2.0,
        token: str | None = None,
        origins: Iterable[str] = (),
        login_code_ttl_s: float = 600.0,
    ) -> None:
        self.settings, self.host, self.port = settings, host, port
        self.push_interval_s = push_interval_s
        self.auth = LiveAuth(token, origins, code_ttl_s=login_code_ttl_s)
        self.state = LiveState(limits)
        self.lock = threading.Lock()
        self.reader = TopicReader(settings, self.state, self.lock)
        self.lag = LagPoller(settings, self.state, self.lock, lag_interval_s)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._stopped: asyncio.Event | None = None
        self._ready = threading.Event()
        self._failure: BaseException | None = None
        self.clients: dict[Any, dict[str, str | None]] = {}  # WebSocket -> its chart selection
        self._sent: dict[Any, int] = {}  # WebSocket -> the state version of the last view it was sent

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/"

    @property
    def token(self) -> str:
        return self.auth.token

    def login_url(self) -> str:
        """A link that logs one browser in (a session cookie) and works once."""
        host = "127.0.0.1" if self.host in ("0.0.0.0", "::", "") else self.host
        return f"http://{host}:{self.port}/login?code={self.auth.login_code()}"

    def start(self) -> Self:
        self.reader.start()
        self.lag.start()
        self._thread = threading.Thread(target=self._serve_forever, daemon=True, name="live-page-server")
        self._thread.start()
        if not self._ready.wait(15):
            raise TimeoutError("the live page server did not start within 15 s")
        if self._failure is not None:
            self.reader.stop()
            self.lag.stop()
            raise ValueError(f"the live page cannot listen on {self.host}:{self.port} ({self._failure}); "
                             "choose another port (`eddyline live --port`) or stop what holds it")
        return self

    def stop(self) -> None:
        self.reader.stop()
        self.lag.stop()
        if self._loop is not None and self._stopped is not None:
            self._loop.call_soon_threadsafe(self._stopped.set)
        if self._thread is not None:
            self._thread.join(10)
        self.reader.join(10)
        self.lag.join(10)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def snapshot(self, selection: dict[str, str | None] | None = None) -> dict[str, Any]:
        """The view a client with ``selection`` (device, sensor, call) gets."""
        with self.lock:
            return self.state.snapshot() | self.state.selected(selection or {})

    # --- the asyncio side ----------------------------------------------------------------------

    def _serve_forever(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as exc:  # noqa: BLE001 - reported to start()
            self._failure = exc
            self._ready.set()

    async def _main(self) -> None:
        from websockets.asyncio.server import serve

        self._loop = asyncio.get_running_loop()
        self._stopped = asyncio.Event()
        async with serve(self._client, self.host, self.port, process_request=self._http) as server:
            self.port = server.sockets[0].getsockname()[1]
            self._ready.set()
            pusher = asyncio.create_task(self._push())
            await self._stopped.wait()
            pusher.cancel()

    def _http(self, connection: Any, request: Any) -> Any:
        """Plain GETs get the page's files; ``/ws`` goes on to the WebSocket handshake."""
        from websockets.datastructures import Headers
        from websockets.http11 import Response

        path = request.path.split("?", 1)[0]
        if path == "/favicon.ico":
            return Response(204, "No Content", Headers([("Content-Length", "0")]))
        if path == "/login":
            code = parse_qs(urlsplit(request.path).query).get("code", [""])[0]
            if not self.auth.redeem(code):
                return _refuse(connection, 401, "this login link is not valid, expired or was used already; "
                                                "restart `eddyline live` for a new one, or send the token")
            return Response(303, "See Other", Headers([("Location", "/"), ("Set-Cookie", self.auth.set_cookie()),
                                                       ("Content-Length", "0"), ("Cache-Control", "no-store")]))
        if not self.auth.allows(request.headers):
            return _refuse(connection, 401, "log in with the link `eddyline live` printed, or send "
                                            "'Authorization: Bearer <token>' ([live] token / EDDYLINE_LIVE_TOKEN)")
        if path == "/ws":
            if not self.auth.origin_ok(request.headers.get("Origin"), self.host, self.port):
                return _refuse(connection, 403, "cross-origin WebSocket refused; open the page from its own "
                                                "address or add that origin to [live] origins")
            return None
        if path == "/snapshot.json":
            body, kind = page_json(self.snapshot()).encode(), "application/json"
        elif path in FILES:
            name, kind = FILES[path]
            body = (STATIC / name).read_bytes()
        else:
            return connection.respond(404, f"not found: {path}\n")
        headers = Headers([("Content-Type", kind), ("Content-Length", str(len(body))), ("Cache-Control", "no-store")])
        return Response(200, "OK", headers, body)

    async def _client(self, ws: Any) -> None:
        from websockets.exceptions import ConnectionClosed

        self.clients[ws] = {}
        try:
            await self._send(ws, self.snapshot())
            async for raw in ws:  # a chart selection: answered with a view showing it
                try:
                    asked = json.loads(raw)
                    picked = {k: asked.get(k) for k in ("device", "sensor", "call")}
                    selection = {k: v if isinstance(v, str) else None for k, v in picked.items()}
                except (ValueError, AttributeError):
                    await ws.send(json.dumps({"error": 'send {"device", "sensor", "call"} as a JSON object'}))
                    continue
                self.clients[ws] = selection
                await self._send(ws, self.snapshot(selection))
        except ConnectionClosed:
            pass
        finally:
            self.clients.pop(ws, None)
            self._sent.pop(ws, None)

    async def _send(self, ws: Any, view: dict[str, Any]) -> None:
        self._sent[ws] = view["version"]
        await ws.send(page_json(view))

    async def _push(self) -> None:
        """Each client gets the view again when it changed, once its last one has gone out: a view is the whole
        state, so a client that reads slowly (or not at all) skips views rather than queueing them in memory."""
        from websockets.asyncio.server import broadcast

        while True:
            await asyncio.sleep(self.push_interval_s)
            with self.lock:
                version = self.state.version
                due = [(ws, sel) for ws, sel in list(self.clients.items())
                       if self._sent.get(ws) != version and not ws.transport.get_write_buffer_size()]
                if not due:
                    continue
                common = self.state.snapshot()
                views = [(ws, common | self.state.selected(sel)) for ws, sel in due]
            for ws, view in views:
                self._sent[ws] = version
                broadcast([ws], page_json(view))


def _refuse(connection: Any, status: int, message: str) -> Any:
    response = connection.respond(status, message + "\n")
    if status == 401:
        response.headers["WWW-Authenticate"] = 'Bearer realm="eddyline-live"'
    return response
