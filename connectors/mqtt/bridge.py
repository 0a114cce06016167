"""The bridge process: MQTT messages in, ``sensor_batch`` events out to Kafka, acknowledged only when delivered.

paho's network thread puts each message on a queue; the bridge's own thread maps it, batches it
(``DeviceWindows``), produces the batches that are due, waits for Kafka to confirm them and only then
sends the MQTT acknowledgements (``manual_ack``). A crash at any point leaves unacknowledged messages in
the broker's persistent session, which sends them again; nothing is lost, and a batch that was delivered
before the crash comes again with the same ``seq`` and ``event_id``. A QoS 1 message that Kafka confirmed but whose
acknowledgement a lost connection or a broker restart swallowed comes again marked DUP with its packet id: the
bridge knows it by that id, its topic and its payload (the last ``max_unacked`` it delivered), and acknowledges it
without sending its readings again, which new messages in the same window would have taken into a batch of another
``event_id``, beyond the reach of dedup by id. QoS 0 messages, which nobody sends again,
stay in the open windows across a reconnection (a crash loses those still open). A payload that does not map goes
to ``dlq.mqtt`` with the reason and the MQTT topic in the headers, and is acknowledged once that is delivered;
so does one that fails mapping in a way nobody foresaw (reason ``unexpected_error``), since an exception
would stop the bridge and the unacknowledged message would stop it again after every restart.
"""

from __future__ import annotations

import hashlib
import logging
import os
import queue
import signal
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import typer

from connectors.dlq import DeadLetterProducer
from connectors.kafka import DeliveryError, EventProducer, KafkaSettings, create_topics
from connectors.mqtt.batches import Batch, DeviceWindows
from connectors.mqtt.mapping import MappingError, Readings, Subscription
from connectors.mqtt.settings import MqttSettings
from schemas import SENSOR_BATCH
from schemas.topics import dlq_topic

log = logging.getLogger("eddyline.mqtt")

TOPIC = "sensor.readings"
DLQ_SOURCE = "mqtt"  # dead letters go to dlq.mqtt
POLL_S = 0.05
EARLY_SEND = 0.8  # share of max_unacked held back before open windows are sent early


class MqttUnreachable(ConnectionError):
    """The first connection to the MQTT broker did not succeed; the message says why and what to check."""


@dataclass(frozen=True)
class _Token:
    """What acknowledges one message: its packet id, valid only on the connection that received it."""

    connection: int
    mid: int
    qos: int
    n: int  # the bridge's count of messages received: QoS 0 messages have no packet id to tell them apart
    digest: bytes = b""  # of a QoS 1 message's topic and payload: with the packet id, it knows the message sent again


@dataclass
class BridgeStats:
    received: int = 0
    readings: int = 0
    batches: int = 0
    dead_letters: int = 0
    acked: int = 0
    redelivered: int = 0  # QoS 1 messages the broker sent again after they were delivered: acknowledged, not resent


class MqttBridge:
    """Subscribes, maps, batches, produces, acknowledges; ``run`` until ``stop`` is set.

    Parameters
    ----------
    settings
        The ``[mqtt]`` section.
    kafka
        Where ``sensor.readings`` and ``dlq.mqtt`` are.
    """

    def __init__(self, settings: MqttSettings, kafka: KafkaSettings) -> None:
        self.settings = settings
        self.kafka = kafka
        self.stats = BridgeStats()
        self.windows = self._new_windows()
        self._batching_for = 0
        self._qos0: dict[_Token, list[Readings]] = {}  # QoS 0 messages in open windows: nobody sends them again
        self._delivered: OrderedDict[tuple[int, bytes], None] = OrderedDict()  # recent QoS 1 messages Kafka confirmed
        self.connected = threading.Event()
        self.subscribed = threading.Event()
        self.last_error: str | None = None
        self._inbox: queue.SimpleQueue[tuple[int, Any]] = queue.SimpleQueue()
        self._connection = 0
        self._lock = threading.Lock()
        self._client = self._make_client()

    def _new_windows(self) -> DeviceWindows:
        s = self.settings
        return DeviceWindows(f"eddyline-mqtt/{s.client_id}", s.window_ms, s.lateness_ms, s.max_wait_ms, s.max_readings)

    def _make_client(self) -> Any:
        import paho.mqtt.client as mqtt

        s = self.settings
        v5 = s.protocol == "5"
        client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2,
            client_id=s.client_id,
            protocol=mqtt.MQTTv5 if v5 else mqtt.MQTTv311,
            clean_session=None if v5 else False,
            manual_ack=True,
        )
        if s.username is not None:
            client.username_pw_set(s.username, s.password.get_secret_value() if s.password else None)
        if s.tls:
            client.tls_set(
                ca_certs=str(s.ca_file) if s.ca_file else None,
                certfile=str(s.cert_file) if s.cert_file else None,
                keyfile=str(s.key_file) if s.key_file else None,
            )
            client.tls_insecure_set(s.tls_insecure)
        client.reconnect_delay_set(1, 30)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        client.on_connect_fail = self._on_connect_fail
        client.on_subscribe = lambda *_: self.subscribed.set()
        return client

    # -- paho's thread ---------------------------------------------------------------------------------
    def _on_connect(self, client: Any, userdata: Any, flags: Any, reason: Any, properties: Any) -> None:
        if reason.is_failure:
            self.last_error = f"the broker refused the connection: {reason}"
            log.error("the MQTT broker refused the connection: %s", reason)
            return
        with self._lock:
            self._connection += 1
        log.info("connected to %s:%d (session present: %s)", self.settings.host, self.settings.port,
                 flags.session_present)
        client.subscribe([(sub.topic, 1) for sub in self.settings.subscriptions])
        self.connected.set()

    def _on_disconnect(self, client: Any, userdata: Any, flags: Any, reason: Any, properties: Any) -> None:
        self.connected.clear()
        with self._lock:
            self._connection += 1  # packet ids of the old connection must not be acknowledged on the next
        if reason.is_failure:
            log.warning("disconnected from the MQTT broker (%s); unacknowledged messages will come again", reason)

    def _on_connect_fail(self, client: Any, userdata: Any) -> None:
        self.last_error = "no connection (refused, unreachable, or the TLS handshake failed)"

    def _on_message(self, client: Any, userdata: Any, message: Any) -> None:
        self._inbox.put((self._connection, message))

    # -- the bridge's thread ---------------------------------------------------------------------------
    def run(
        self, stop: threading.Event, on_ready: Callable[[], None] | None = None, first_connect_s: float = 30.0
    ) -> BridgeStats:
        """Connect, bridge until ``stop`` is set, then send what is open, acknowledge and disconnect; QoS 0 messages
        still in the inbox then are sent too (nobody sends them again; QoS 1 ones the broker does).

        ``on_ready`` is called once, when the broker confirmed the first subscription. If the first
        connection does not succeed within ``first_connect_s``, ``MqttUnreachable`` says why (a wrong
        address or password is not worth retrying forever); later disconnections are retried.
        """
        create_topics(self.kafka, [TOPIC, dlq_topic(DLQ_SOURCE)])
        with EventProducer(self.kafka) as producer:  # closed on the way out: its threads and sockets go with it
            dead = DeadLetterProducer(producer)
            self._connect()
            give_up = time.monotonic() + first_connect_s
            s = self.settings
            try:
                while not stop.is_set():
                    if not self.subscribed.is_set() and time.monotonic() > give_up:
                        raise MqttUnreachable(
                            f"cannot bridge from mqtt://{s.host}:{s.port}: {self.last_error or 'no answer'}; check "
                            "[mqtt] host, port, tls/ca_file and username/password (and that the broker runs)"
                        )
                    self._step(producer, dead, time.monotonic(), force=False)
                    if on_ready is not None and self.subscribed.is_set():
                        on_ready()
                        on_ready = None
                self._step(producer, dead, time.monotonic(), force=True)
            finally:
                self._client.disconnect()
                self._client.loop_stop()
            with self._lock:
                self._connection += 1  # no more acknowledgements: the QoS 1 messages left come again, unread
            while not self._inbox.empty():
                self._step(producer, dead, time.monotonic(), force=True)
        return self.stats

    def _connect(self) -> None:
        s = self.settings
        if s.protocol == "5":
            from paho.mqtt.packettypes import PacketTypes
            from paho.mqtt.properties import Properties

            properties = Properties(PacketTypes.CONNECT)
            properties.SessionExpiryInterval = s.session_expiry_s
            properties.ReceiveMaximum = min(s.max_unacked, 65535)
            self._client.connect_async(s.host, s.port, s.keepalive_s, clean_start=False, properties=properties)
        else:
            self._client.connect_async(s.host, s.port, s.keepalive_s)
        self._client.loop_start()

    def _step(self, producer: EventProducer, dead: DeadLetterProducer, now: float, force: bool) -> None:
        batches: list[Batch] = []
        done: list[_Token] = []
        if self._connection != self._batching_for:
            self._batching_for = self._connection
            self._start_over(batches, now)
        deadline = now + POLL_S
        while True:
            try:
                connection, msg = self._inbox.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                break
            if connection < self._batching_for and msg.qos > 0:
                continue  # received on a connection that is gone: it comes again
            if connection > self._batching_for:
                self._batching_for = connection
                self._start_over(batches, time.monotonic())
            self.stats.received += 1
            digest = _digest(msg) if msg.qos else b""
            token = _Token(connection, msg.mid, msg.qos, self.stats.received, digest)
            if msg.dup and (msg.mid, digest) in self._delivered:
                self.stats.redelivered += 1
                done.append(token)
                continue
            try:
                readings = self._map(msg)
            except MappingError as exc:
                self._dead_letter(dead, msg, exc.reason, str(exc))
                done.append(token)
                continue
            except Exception as exc:
                log.exception("mapping a message from %s failed unexpectedly; it goes to the dead letters", msg.topic)
                self._dead_letter(dead, msg, "unexpected_error", f"{type(exc).__name__}: {exc}")
                done.append(token)
                continue
            self.stats.readings += sum(len(r.values) for r in readings)
            if token.qos == 0:
                self._qos0[token] = readings
            batches.extend(self.windows.add(readings, token, time.monotonic()))
            if len(batches) + len(done) >= 1000:
                break
        early = self.windows.unsent >= EARLY_SEND * self.settings.max_unacked
        batches.extend(self.windows.ready(time.monotonic(), force=force or early))
        for b in batches:
            producer.produce(TOPIC, SENSOR_BATCH, b.record, key=b.device_id)
            done.extend(b.tokens)
        if not done:
            return
        producer.flush()  # raises DeliveryError: nothing is acknowledged, the broker sends it all again
        self.stats.batches += len(batches)
        for t in done:
            if t.qos:
                self._delivered[(t.mid, t.digest)] = None
                self._delivered.move_to_end((t.mid, t.digest))
        while len(self._delivered) > self.settings.max_unacked:  # the broker sends no more again than it has in flight
            self._delivered.popitem(last=False)
        if self._qos0:
            for b in batches:
                for t in b.tokens:
                    self._qos0.pop(t, None)
        self._ack(done)

    def _start_over(self, batches: list[Batch], now: float) -> None:
        """Open windows start over on a new connection, since the broker sends every unacknowledged message again;
        QoS 0 messages are never sent again, so theirs go into the new windows (not those in ``batches``, closed
        in this step and still to be produced)."""
        self.windows = self._new_windows()
        for b in batches:
            for t in b.tokens:
                self._qos0.pop(t, None)
        for token, readings in self._qos0.items():
            batches.extend(self.windows.add(readings, token, now))

    def _dead_letter(self, dead: DeadLetterProducer, msg: Any, reason: str, error: str) -> None:
        dead.send(DLQ_SOURCE, msg.payload, msg.topic, reason, error, -1, -1, origin=msg.topic)
        self.stats.dead_letters += 1

    def _map(self, msg: Any) -> list:
        limit = self.settings.max_payload_bytes
        if len(msg.payload) > limit:
            raise MappingError("too_large", f"the payload is {len(msg.payload)} bytes, more than max_payload_bytes "
                                            f"({limit}); send smaller messages or raise [mqtt] max_payload_bytes")
        received_ms = time.time_ns() // 1_000_000
        sub = self._subscription(msg.topic)
        readings = sub.map(msg.topic, msg.payload, received_ms)
        if len({r.device_id for r in readings}) != 1:
            raise MappingError("many_devices", "one message must carry one device's readings")
        return readings

    def _subscription(self, topic: str) -> Subscription:
        for sub in self.settings.subscriptions:
            if sub.matches(topic):
                return sub
        raise MappingError("no_subscription", f"no subscription's filter matches the topic {topic!r}")

    def _ack(self, tokens: list[_Token]) -> None:
        with self._lock:
            current = self._connection
        for t in tokens:
            if t.connection == current and t.qos > 0:
                self._client.ack(t.mid, t.qos)
                self.stats.acked += 1


def _digest(msg: Any) -> bytes:
    return hashlib.blake2b(msg.topic.encode() + b"\0" + msg.payload, digest_size=16).digest()


def command(
    config: Annotated[
        Path, typer.Option("--config", help="TOML file with the \\[mqtt] table (and \\[kafka]); EDDYLINE_* env wins.")
    ],
) -> None:
    """Bridge an MQTT broker's sensor topics into sensor.readings (QoS 1, acknowledged after Kafka delivery)."""
    if not config.is_file():
        raise ValueError(f"{config} does not exist; pass the bridge's TOML file (see README, 'Producing events')")
    os.environ["EDDYLINE_CONFIG"] = str(config)
    settings = MqttSettings()
    kafka = KafkaSettings()
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    bridge = MqttBridge(settings, kafka)
    where = f"mqtt://{settings.host}:{settings.port}"
    typer.echo(f"connecting to {where} as {settings.client_id!r}", err=True)
    try:
        stats = bridge.run(stop, on_ready=lambda: typer.echo(
            f"subscribed to {', '.join(s.topic for s in settings.subscriptions)} on {where}; bridging to "
            f"{kafka.topic(TOPIC)} on {kafka.bootstrap_servers} (Ctrl-C stops it)", err=True))
    except MqttUnreachable as exc:
        typer.secho(f"error: {exc}", fg="red", err=True)
        raise typer.Exit(2) from None
    except DeliveryError as exc:
        typer.secho(f"error: Kafka did not confirm a batch ({exc}); nothing of it was acknowledged to the MQTT "
                    "broker, which sends it again when the bridge restarts. Check Kafka, then restart.",
                    fg="red", err=True)
        raise typer.Exit(1) from None
    typer.echo(
        f"stopped: {stats.received} messages, {stats.readings} readings in {stats.batches} batches, "
        f"{stats.dead_letters} dead letters",
        err=True,
    )
