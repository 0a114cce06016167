"""Kafka clients configured from ``[kafka]`` settings: producers, consumers, admin, topics, reading back.

Delivery is at least once: consumers never auto-commit (the caller commits after processing) and
producers are idempotent with ``acks=all``. Every topic name goes through ``KafkaSettings.topic`` so a
namespace can keep environments (and tests sharing a broker) apart.
"""

from __future__ import annotations

import logging
import math
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from types import TracebackType
from typing import Any, Literal, TypeVar

from confluent_kafka import (
    OFFSET_BEGINNING, TIMESTAMP_CREATE_TIME, Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition,
)
from confluent_kafka.admin import AdminClient, NewTopic
from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import SettingsConfigDict

from connectors.config import ConfigError, Section, config_path
from connectors.kafka_acks import UnconfirmedAcks
from connectors.kafka_log import librdkafka_logger
from schemas import AvroSerde
from schemas.topics import TOPIC_CONFIGS

log = logging.getLogger(__name__)

RECREATE_AFTER_S = 2.0  # a topic acknowledged but not in the metadata this long after is asked for again
FETCH_BYTES = 64 * 2**20  # per partition and per fetch of a read to the end: a partition can hold gigabytes
# librdkafka settings of a read to the end (``scan_to_end``): bulk fetches, and a 500 ms fetch wait whatever ``extra``
# says, since the embedded broker answers a fetch with what it gathered within the wait and, from the start of a
# partition of many small batches, gathers nothing within 10 ms (BENCHMARKS.md, "Session 11: Faust prefetch and
# revoked keys"); a fetch at a partition's end waits it out before its end-of-partition report, so partitions known
# to be read already are not fetched (``scan_to_end``).
READ_TO_END_FETCH = {"max.partition.fetch.bytes": FETCH_BYTES, "fetch.max.bytes": 4 * FETCH_BYTES,
                     "receive.message.max.bytes": 4 * FETCH_BYTES + 2**20, "fetch.wait.max.ms": 500,
                     "enable.partition.eof": True}


class KafkaSettings(Section):
    """Where the brokers are, how to authenticate, and how clients batch; ``extra`` goes to librdkafka as is.

    ``[kafka]`` in the TOML file, ``EDDYLINE_KAFKA_*`` in the environment. SASL credentials need a
    ``SASL_*`` security protocol; anything else is refused with what to set.

    Parameters
    ----------
    bootstrap_servers
        Comma-separated ``host:port`` list of brokers.
    client_id
        Names this client in broker logs and quotas.
    security_protocol
        ``PLAINTEXT``, ``SSL``, ``SASL_PLAINTEXT`` or ``SASL_SSL`` (any case).
    sasl_mechanism
        ``PLAIN``, ``SCRAM-SHA-256``, ``SCRAM-SHA-512``, ``OAUTHBEARER`` or ``GSSAPI``.
    sasl_username, sasl_password
        SASL credentials; prefer ``EDDYLINE_KAFKA_SASL_PASSWORD`` to writing the password in a file.
    ssl_ca_location
        PEM file of the CA that signed the brokers' certificates (default: the system's).
    ssl_certificate_location, ssl_key_location
        Client certificate and key, for brokers that authenticate clients by TLS.
    compression
        Producer compression: ``none``, ``gzip``, ``snappy``, ``lz4`` or ``zstd``.
    linger_ms
        How long a producer waits to fill a batch.
    session_timeout_ms
        Consumer group session timeout; a consumer silent this long is considered gone.
    replication_factor
        Replicas of the topics eddyline creates.
    extra
        More librdkafka properties by their own names (TOML numbers and booleans are turned into strings); a
        consumer-only property goes to consumers only and a producer-only one to producers only (``for_client``).

    Examples
    --------
    >>> from connectors.kafka import KafkaSettings
    >>> settings = KafkaSettings(namespace="staging.", bootstrap_servers="kafka-1:9092")
    >>> settings.topic("sensor.readings")
    'staging.sensor.readings'
    >>> KafkaSettings(sasl_username="eddyline")
    Traceback (most recent call last):
    ...
    pydantic_core._pydantic_core.ValidationError: 1 validation error for KafkaSettings
      Value error, SASL credentials are set but security_protocol is PLAINTEXT; use SASL_SSL ...
    """

    toml_table = "kafka"
    model_config = SettingsConfigDict(env_prefix="EDDYLINE_KAFKA_", extra="forbid")

    bootstrap_servers: str = "127.0.0.1:9092"
    namespace: str = Field("", description="Prefix for every topic name, e.g. 'staging.'")
    client_id: str = "eddyline"
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", "OAUTHBEARER", "GSSAPI"] | None = None
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    ssl_ca_location: str | None = None
    ssl_certificate_location: str | None = None
    ssl_key_location: str | None = None
    compression: Literal["none", "gzip", "snappy", "lz4", "zstd"] = "lz4"
    linger_ms: int = Field(10, ge=0)
    batch_size: int = Field(1_000_000, gt=0, description="Bytes per partition batch")
    session_timeout_ms: int = Field(45_000, gt=0)
    partitions: int = Field(3, gt=0, description="Partitions of topics eddyline creates")
    replication_factor: int = Field(1, gt=0)
    extra: dict[str, str] = Field(default_factory=dict)

    @field_validator("security_protocol", "sasl_mechanism", mode="before")
    @classmethod
    def _upper(cls, value: Any) -> Any:
        return value.upper() if isinstance(value, str) else value

    @field_validator("extra", mode="before")
    @classmethod
    def _librdkafka_strings(cls, value: Any) -> Any:
        """TOML numbers and booleans become the strings librdkafka expects (``true``, ``100000``)."""
        if isinstance(value, dict):
            return {k: str(v).lower() if isinstance(v, bool) else str(v) for k, v in value.items()}
        return value

    @model_validator(mode="after")
    def _sasl_needs_sasl_protocol(self) -> KafkaSettings:
        sasl_set = self.sasl_mechanism or self.sasl_username or self.sasl_password
        if sasl_set and not self.security_protocol.startswith("SASL_"):
            raise ValueError(
                f"SASL credentials are set but security_protocol is {self.security_protocol}; "
                "use SASL_SSL (or SASL_PLAINTEXT on a trusted network)"
            )
        return self

    def topic(self, logical: str) -> str:
        """The broker's name for a logical topic such as ``sensor.readings``.

        Parameters
        ----------
        logical
            The topic without the namespace.
        """
        return f"{self.namespace}{logical}"


class DeliveryError(RuntimeError):
    """Messages that the broker did not accept; nothing is dropped without saying so."""


# librdkafka's properties that only consumers (C) or only producers (P) read, as its own table lists them
# (``rd_kafka_conf_properties_show``, librdkafka 2.16; tests/unit/test_kafka_config.py compares them with the installed
# library's). A client of the other kind ignores such a key and logs a CONFWARN line for it (an admin client is a
# producer to librdkafka), so ``[kafka] extra`` gives each kind of client only the keys it reads (``for_client``).
CONSUMER_ONLY = frozenset({
    "auto.commit.enable", "auto.commit.interval.ms", "auto.offset.reset", "check.crcs", "consume.callback.max.messages",
    "consume_cb", "coordinator.query.interval.ms", "enable.auto.commit", "enable.auto.offset.store",
    "enable.partition.eof", "fetch.error.backoff.ms", "fetch.max.bytes", "fetch.message.max.bytes", "fetch.min.bytes",
    "fetch.queue.backoff.ms", "fetch.wait.max.ms", "group.id", "group.instance.id", "group.protocol",
    "group.protocol.type", "group.remote.assignor", "heartbeat.interval.ms", "isolation.level",
    "max.partition.fetch.bytes", "max.poll.interval.ms", "max.poll.records", "offset.store.method",
    "offset.store.path", "offset.store.sync.interval.ms", "offset_commit_cb", "partition.assignment.strategy",
    "queued.max.messages.kbytes", "queued.min.messages", "rebalance_cb", "session.timeout.ms",
    "share.acknowledgement.mode",
})
PRODUCER_ONLY = frozenset({
    "acks", "batch.num.messages", "batch.size", "compression.codec", "compression.level", "compression.type",
    "delivery.report.only.error", "delivery.timeout.ms", "dr_cb", "dr_msg_cb", "enable.gapless.guarantee",
    "enable.idempotence", "linger.ms", "message.send.max.retries", "message.timeout.ms", "msg_order_cmp",
    "partitioner", "partitioner_cb", "produce.offset.report", "queue.buffering.backpressure.threshold",
    "queue.buffering.max.kbytes", "queue.buffering.max.messages", "queue.buffering.max.ms", "queuing.strategy",
    "request.required.acks", "request.timeout.ms", "retries", "sticky.partitioning.linger.ms",
    "transaction.timeout.ms", "transactional.id",
})
_IGNORED_BY = {"consumer": PRODUCER_ONLY, "producer": CONSUMER_ONLY, "admin": CONSUMER_ONLY | PRODUCER_ONLY}


def for_client(conf: Mapping[str, Any], kind: Literal["consumer", "producer", "admin"]) -> dict[str, Any]:
    """``conf`` without the librdkafka properties a ``kind`` client ignores, each of which it would log as a
    CONFWARN line: consumer-only keys for a producer or an admin client, producer-only keys for a consumer or an
    admin client. A key in neither list (connection, security, anything librdkafka adds later) is kept.

    Parameters
    ----------
    conf
        librdkafka properties, e.g. ``[kafka]``'s with ``extra``.
    kind
        The client they are for.

    Examples
    --------
    >>> for_client({"bootstrap.servers": "k:9092", "fetch.wait.max.ms": "50", "linger.ms": "5"}, "admin")
    {'bootstrap.servers': 'k:9092'}
    """
    ignored = _IGNORED_BY[kind]
    return {k: v for k, v in conf.items() if k not in ignored}


def client_config(s: KafkaSettings, kind: Literal["consumer", "producer", "admin"]) -> dict[str, Any]:
    """Connection and security settings and the ``extra`` keys a ``kind`` client reads (``for_client``), nothing
    of a consumer group or a producer's delivery: what a client that adds those itself starts from.

    Parameters
    ----------
    s
        The Kafka settings.
    kind
        The client they are for.
    """
    return for_client(_client_config(s), kind)


def _client_config(s: KafkaSettings) -> dict[str, Any]:
    conf: dict[str, Any] = {
        "bootstrap.servers": s.bootstrap_servers,
        "client.id": s.client_id,
        "security.protocol": s.security_protocol.lower(),
        "log.connection.close": False,  # brokers close idle connections; that is not worth a log line
    }
    if s.sasl_mechanism:
        conf["sasl.mechanism"] = s.sasl_mechanism
    if s.sasl_username is not None:
        conf["sasl.username"] = s.sasl_username
    if s.sasl_password is not None:
        conf["sasl.password"] = s.sasl_password.get_secret_value()
    for key, value in (
        ("ssl.ca.location", s.ssl_ca_location),
        ("ssl.certificate.location", s.ssl_certificate_location),
        ("ssl.key.location", s.ssl_key_location),
    ):
        if value:
            conf[key] = value
    conf.update(s.extra)
    return conf


def producer_config(s: KafkaSettings, **overrides: Any) -> dict[str, Any]:
    """Idempotent, fully acknowledged, compressed and batched; ``overrides`` use librdkafka's names.

    Parameters
    ----------
    s
        The Kafka settings.
    overrides
        librdkafka properties that win over everything else (``**{"linger.ms": 0}``).

    Examples
    --------
    >>> from connectors.kafka import KafkaSettings, producer_config
    >>> conf = producer_config(KafkaSettings(), **{"linger.ms": 0})
    >>> conf["acks"], conf["enable.idempotence"], conf["linger.ms"]
    ('all', True, 0)
    """
    conf = {
        "enable.idempotence": True,
        "acks": "all",
        "compression.type": s.compression,
        "linger.ms": s.linger_ms,
        "batch.size": s.batch_size,
    }
    conf = {**conf, **client_config(s, "producer")}
    conf.update(overrides)
    return conf


def consumer_config(s: KafkaSettings, group_id: str, **overrides: Any) -> dict[str, Any]:
    """At least once: offsets are committed by the caller after processing, new groups start at the beginning.

    Parameters
    ----------
    s
        The Kafka settings.
    group_id
        The consumer group.
    overrides
        librdkafka properties that win over everything else.

    Examples
    --------
    >>> from connectors.kafka import KafkaSettings, consumer_config
    >>> conf = consumer_config(KafkaSettings(), "eddyline-docs")
    >>> conf["enable.auto.commit"], conf["auto.offset.reset"]
    (False, 'earliest')
    """
    conf = {
        "group.id": group_id,
        "enable.auto.commit": False,
        "auto.offset.reset": "earliest",
        "session.timeout.ms": s.session_timeout_ms,
        "heartbeat.interval.ms": max(100, min(3000, s.session_timeout_ms // 3)),
    }
    conf = {**conf, **client_config(s, "consumer")}
    conf.update(overrides)
    return conf


def admin_config(s: KafkaSettings, **overrides: Any) -> dict[str, Any]:
    """The admin client's configuration: connection and security settings, and ``extra``'s keys that are neither
    consumer-only nor producer-only (``for_client``).

    Parameters
    ----------
    s
        The Kafka settings.
    overrides
        librdkafka properties that win over everything else.
    """
    return {**client_config(s, "admin"), **overrides}


def logged_config(conf: dict[str, Any]) -> dict[str, Any]:
    """``conf`` with librdkafka's log lines sent to Python logging (``connectors.kafka_log``), served by the client's
    poll. Add it where the client is built, not to the config: configs stay plain data (they cross process
    boundaries), and a client built from one without it prints raw ``%3|...|FAIL|`` lines on stderr. A ``logger``
    the caller put in ``conf`` (an override) wins.

    Parameters
    ----------
    conf
        A librdkafka configuration (``consumer_config``, ``producer_config``, ``admin_config``, ``for_client``).
    """
    return {"logger": librdkafka_logger(), **conf}


_Client = TypeVar("_Client", Producer, Consumer, AdminClient)


def _built(client: type[_Client], conf: dict[str, Any]) -> _Client:
    """``client(logged_config(conf))``; a property librdkafka refuses (a typo in ``[kafka] extra``, a CA file that is
    not there) is a ``ConfigError`` naming it: only an edit fixes it, and neither a traceback (a flow's start) nor
    "no broker answered" (``wait_for_broker``) told the person which."""
    try:
        return client(logged_config(conf))
    except KafkaException as exc:
        if exc.args[0].code() != KafkaError._INVALID_ARG:
            raise
        raise ConfigError(f"the Kafka client settings are refused: {exc.args[0].str()}; fix [kafka] in "
                          f"{config_path()} or its EDDYLINE_KAFKA_* variables (librdkafka's own properties go in "
                          "[kafka] extra)") from None


def make_producer(s: KafkaSettings, **overrides: Any) -> Producer:
    """A confluent-kafka ``Producer`` configured by ``producer_config``.

    Parameters
    ----------
    s, overrides
        As for ``producer_config``.
    """
    return _built(Producer, producer_config(s, **overrides))


def make_consumer(s: KafkaSettings, group_id: str, **overrides: Any) -> Consumer:
    """A confluent-kafka ``Consumer`` configured by ``consumer_config`` (no auto-commit).

    Parameters
    ----------
    s, group_id, overrides
        As for ``consumer_config``.
    """
    return _built(Consumer, consumer_config(s, group_id, **overrides))


def make_admin(s: KafkaSettings, **overrides: Any) -> AdminClient:
    """A confluent-kafka ``AdminClient`` configured by ``admin_config``, its librdkafka lines routed to logging
    (``logged_config``). They reach the log when the client polls and are dropped with it: a short-lived client
    need not poll, a long-lived one must (``admin.poll(0)`` after each request), or they pile up in its queue.

    Parameters
    ----------
    s, overrides
        As for ``admin_config``.
    """
    return _built(AdminClient, admin_config(s, **overrides))


def wait_for_broker(s: KafkaSettings, timeout: float) -> None:
    """Return once a broker at the bootstrap servers answers a metadata request; ``ConnectionError`` saying where it
    looked after ``timeout`` seconds. For commands a person runs, which should fail in seconds where nothing
    listens; a flow that may start before its broker relies on ``create_topics``'s longer wait instead.

    Parameters
    ----------
    s
        The Kafka settings.
    timeout
        Seconds to wait for an answer.
    """
    try:
        make_admin(s).list_topics(timeout=timeout)
    except KafkaException as exc:
        raise ConnectionError(f"no Kafka broker answered at {s.bootstrap_servers} within {timeout:g} s "
                              f"({exc.args[0].str()})") from None


def create_topics(
    s: KafkaSettings, logical_topics: Iterable[str], partitions: int | None = None, timeout: float = 30.0,
    configs: Mapping[str, Mapping[str, str]] | None = None,
) -> None:
    """Create the topics that do not exist yet and wait until every one is in the metadata.

    Idempotent: existing topics are left as they are. A broker that does not answer raises
    ``TimeoutError`` naming the bootstrap servers. New topics get their settings from
    ``schemas.topics.TOPIC_CONFIGS`` (compaction, broker timestamps). A topic the broker acknowledged but
    that is still not in the metadata ``RECREATE_AFTER_S`` later is asked for again, as is one whose request
    failed on a retriable error: Tansu on S3 loses one of two topics created at the same moment by two
    clients (flows starting together on a fresh cluster), and may drop the connection meanwhile.

    Parameters
    ----------
    s
        The Kafka settings; their namespace prefixes every name.
    logical_topics
        Logical topic names (``sensor.readings``, ``dlq.sensor.readings``, ...).
    partitions
        Partitions per new topic (default: ``s.partitions``).
    timeout
        Seconds to wait for creation and for the topics to appear.
    configs
        Settings of new topics by logical name, over ``TOPIC_CONFIGS`` (a retention derived from a configured
        window); an existing topic keeps its own.
    """
    names = sorted({s.topic(t) for t in logical_topics})
    if not names:
        return
    # Short-lived and never polled, so librdkafka's lines are dropped: a broker that does not answer is a TimeoutError.
    admin = make_admin(s)
    count = partitions or s.partitions
    given = {s.topic(t): dict(c) for t, c in (configs or {}).items()}
    table = {s.topic(t): c for t, c in TOPIC_CONFIGS.items()}
    deadline = time.monotonic() + timeout
    missing, asked = names, -math.inf
    while True:
        if time.monotonic() - asked >= RECREATE_AFTER_S:
            asked = time.monotonic()
            _ask_for_topics(s, admin, [NewTopic(n, num_partitions=count, replication_factor=s.replication_factor,
                                                config={**table.get(n, {}), **given.get(n, {})})
                                       for n in missing], timeout)
        meta = admin.list_topics(timeout=max(1.0, deadline - time.monotonic()))
        missing = [n for n in names if not _visible(meta.topics.get(n))]
        if not missing:
            return
        if time.monotonic() >= deadline:
            raise TimeoutError(f"topics {missing} were created but are not in the metadata after {timeout:.0f} s")
        time.sleep(0.1)


def _ask_for_topics(s: KafkaSettings, admin: AdminClient, new: list[NewTopic], timeout: float) -> None:
    """One CreateTopics request; an existing topic or a retriable failure is left to the caller's next look."""
    futures = admin.create_topics(new, operation_timeout=timeout, request_timeout=timeout)
    for name, future in futures.items():
        try:
            future.result(timeout)
        except TimeoutError:
            raise TimeoutError(f"creating topic {name!r}: no answer from {s.bootstrap_servers} in {timeout:.0f} s") from None
        except KafkaException as exc:
            err = exc.args[0]
            if err.code() == KafkaError._TIMED_OUT:
                raise TimeoutError(f"creating topic {name!r} timed out: no answer from {s.bootstrap_servers}") from exc
            if err.code() == KafkaError.TOPIC_ALREADY_EXISTS:
                continue
            if err.retriable() or err.code() == KafkaError._TRANSPORT:
                log.warning("creating topic %r failed (%s); asking again", name, err.str())
                continue
            raise RuntimeError(f"creating topic {name!r} failed: {err.str()}") from exc


def _visible(topic_meta: Any) -> bool:
    return topic_meta is not None and topic_meta.error is None and len(topic_meta.partitions) > 0


class EventProducer:
    """Produces events to logical topics and keeps score of deliveries.

    ``flush`` raises ``DeliveryError`` when any message since the last flush failed, so a caller that
    flushes before committing its input never commits past a lost output. As a context manager it flushes
    on a clean exit and then closes the client.

    A record reported delivered without an offset (``connectors.kafka_acks``: the broker answered
    DUPLICATE_SEQUENCE_NUMBER, which Tansu gives for a record it may not have stored) is not counted delivered:
    it is sent again, from the report's own topic, partition, key, value, headers and create time, on the next
    ``poll``, ``produce_raw`` or ``flush``, and ``flush`` returns only once the copies are acknowledged (or
    raises). ``unconfirmed_acks`` counts such reports. If the broker did hold the record, the topic now has it
    twice, the copy after records produced meanwhile: delivery is at least once, as for any retry. The sensor
    flow drops a repeated batch by device and seq, the notify flow a repeated alert by ``event_id``; other
    consumers accept the copy (it keeps its ``event_id``, so one that must can tell).

    Parameters
    ----------
    settings
        The Kafka settings; their namespace prefixes every topic.
    serde
        Encodes records (by default on the configured schema registry, ``[schema_registry]``, else the local one).
    overrides
        librdkafka producer properties that win over ``producer_config``.
    """

    # False: a full local queue refuses (``DeliveryError``) instead of waiting for room, for a caller on an event
    # loop (the gateway), where the wait would stop every request until the broker is back
    waits_for_room = True

    def __init__(self, settings: KafkaSettings, serde: AvroSerde | None = None, **overrides: Any) -> None:
        self.settings = settings
        if serde is None:
            from connectors.schema_registry import configured_serde

            serde = configured_serde()
        self.serde = serde
        self.config = producer_config(settings, **overrides)  # what the client got, ``[kafka] extra`` included
        self._producer = _built(Producer, self.config)
        self.delivered = 0
        self.failed = 0
        self._errors: list[str] = []
        self._unreported = 0
        self._unconfirmed = UnconfirmedAcks(self.config, log)
        self._resend: list[Message] = []  # reported delivered without an offset, to be sent again
        self._closed = False

    def produce(
        self, topic: str, event_type: str, record: dict[str, Any], key: str,
        headers: dict[str, bytes] | None = None, timestamp_ms: int | None = None,
    ) -> None:
        """Encode ``record`` as ``event_type`` (raises ``schemas.SchemaError`` if it breaks the schema) and send it.

        Parameters
        ----------
        topic
            The logical topic.
        event_type
            The schemas event type to encode with.
        record
            The event.
        key
            The Kafka key (decides the partition).
        headers
            Kafka headers to send along.
        timestamp_ms
            The message's create time (a replay keeping the original's); None: now. A topic with
            ``LogAppendTime`` replaces it with the broker's.
        """
        value = self.serde.encode(event_type, record, topic=self.settings.topic(topic))
        self.produce_raw(topic, value, key, headers, timestamp_ms)

    def produce_raw(
        self, topic: str, value: bytes | None, key: bytes | str | None,
        headers: dict[str, bytes] | None = None, timestamp_ms: int | None = None, serve: bool = True,
    ) -> None:
        """Send bytes as they are (dead letters, malformed test input); waits while the local queue is full, or
        refuses (``DeliveryError``) where ``waits_for_room`` is False.

        Parameters
        ----------
        topic
            The logical topic.
        value, key
            The message's bytes (a text key is encoded as UTF-8).
        headers
            Kafka headers to send along.
        timestamp_ms
            As for ``produce``.
        serve
            Serve delivery callbacks after sending; False for all but the last of a batch (``poll`` once after).
        """
        full = self.settings.topic(topic)
        hdrs = list(headers.items()) if headers else None
        stamp = {"timestamp": timestamp_ms} if timestamp_ms is not None else {}
        while True:
            try:
                self._producer.produce(full, value=value, key=key, headers=hdrs, on_delivery=self._on_delivery,
                                       **stamp)
                break
            except BufferError:  # the local queue is full: let deliveries drain, then retry
                if not self.waits_for_room:
                    self.failed += 1
                    raise DeliveryError(f"cannot produce to {full!r}: the producer's queue is full, the broker is "
                                        f"behind ({len(self._producer)} events waiting)") from None
                self._producer.poll(0.1)
            except KafkaException as exc:
                self.failed += 1
                raise DeliveryError(f"cannot produce to {full!r}: {exc.args[0].str()}") from None
        if serve:
            self.poll(0)

    @property
    def unconfirmed_acks(self) -> int:
        """Records reported delivered without an offset, and sent again."""
        return self._unconfirmed.count

    def _on_delivery(self, err: KafkaError | None, msg: Message) -> None:
        if err is None:
            if msg.offset() is None and self._unconfirmed(err, msg):  # the first test keeps stored records cheap
                self._resend.append(msg)
                return
            self.delivered += 1
            return
        self.failed += 1
        self._unreported += 1
        if len(self._errors) < 5:
            self._errors.append(f"{msg.topic()}[{msg.partition()}]: {err.str()}")

    def poll(self, timeout: float = 0.0) -> int:
        """Serve delivery callbacks; returns how many were served.

        Parameters
        ----------
        timeout
            Seconds to wait for one.
        """
        served = self._producer.poll(timeout)
        if self._resend:
            self._send_again()
        return served

    def _send_again(self) -> None:
        """Produce the records acknowledged without an offset again; what the queue cannot take waits for the
        next call, and a refusal is that record's delivery report (a failure, or stranded on a fatal producer)."""
        pending, self._resend = self._resend, []
        for i, msg in enumerate(pending):
            kind, stamp = msg.timestamp()
            kept: dict[str, int] = {"timestamp": stamp} if kind == TIMESTAMP_CREATE_TIME else {}
            if (partition := msg.partition()) is not None and partition >= 0:  # None: purged before it had one
                kept["partition"] = partition
            try:
                self._producer.produce(msg.topic(), value=msg.value(), key=msg.key(), headers=msg.headers(),
                                       on_delivery=self._on_delivery, **kept)
            except BufferError:
                self._resend[:0] = pending[i:]
                return
            except KafkaException as exc:
                self._on_delivery(exc.args[0], msg)

    def flush(self, timeout: float = 30.0) -> None:
        """Wait for every message to be acknowledged, copies sent again included; raise ``DeliveryError`` if any
        was not.

        Parameters
        ----------
        timeout
            Seconds to wait; messages still unacknowledged then count as failures.
        """
        deadline = time.monotonic() + timeout
        remaining = self._producer.flush(timeout)
        while self._resend and (left := deadline - time.monotonic()) > 0:
            self._send_again()
            remaining = self._producer.flush(left)
        remaining += len(self._resend)  # still to be sent again: kept, as librdkafka keeps what it holds
        failed, errors = self._unreported, self._errors
        self._unreported, self._errors = 0, []
        problems = []
        if remaining:
            problems.append(f"{remaining} messages still unacknowledged after {timeout} s "
                            f"(bootstrap {self.settings.bootstrap_servers})")
        if failed:
            problems.append(f"{failed} messages were not delivered: " + "; ".join(errors))
        if problems:
            raise DeliveryError("; ".join(problems))

    def close(self, timeout: float = 30.0) -> None:
        """Flush (``DeliveryError`` as ``flush``) and close the client, which is closed even when the flush fails:
        what was still unacknowledged then (counted in that error) is purged, as closing would wait for it.
        Closing a closed producer does nothing.

        Parameters
        ----------
        timeout
            Seconds to wait for acknowledgements.
        """
        if self._closed:
            return
        self._closed = True
        try:
            self.flush(timeout)
        finally:
            if len(self._producer):
                self._producer.purge()
                self._producer.flush(0)
            purged, self._resend = self._resend, []
            for msg in purged:  # counted like the records purged above
                self._on_delivery(KafkaError(KafkaError._PURGE_QUEUE), msg)
            self._producer.close()

    def __len__(self) -> int:
        return len(self._producer) + len(self._resend)

    def __enter__(self) -> EventProducer:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc_type is None:
            self.close()
            return
        try:
            self.close(5.0)
        except DeliveryError as err:  # the exception already leaving is the one to see
            log.error("closing a producer after %s: %s", exc_type.__name__, err)


def read_topic(
    s: KafkaSettings,
    logical_topic: str,
    *,
    timeout: float = 10.0,
    idle: float | None = None,
    expected: int | None = None,
) -> list[Message]:
    """Read a topic from the beginning of every partition, without joining a consumer group.

    Stops once ``expected`` messages are read, or when nothing new came for ``idle`` seconds (1 s by
    default, and only if ``expected`` is not given or ``idle`` is passed), or at ``timeout``. End offsets
    are not used: some Kafka-compatible brokers report them wrong.

    Parameters
    ----------
    s
        The Kafka settings.
    logical_topic
        The topic to read, without the namespace.
    timeout
        Seconds after which to stop regardless.
    idle
        Seconds without a new message after which to stop.
    expected
        Stop as soon as this many messages are read.
    """
    if idle is None and expected is None:
        idle = 1.0
    name = s.topic(logical_topic)
    consumer = make_consumer(s, f"eddyline-reader-{uuid.uuid4().hex}", **{"enable.partition.eof": False})
    out: list[Message] = []
    try:
        start = last = time.monotonic()
        deadline = start + timeout
        assigned = False
        while True:
            now = time.monotonic()
            if now >= deadline or (idle is not None and now - last >= idle):
                break
            if expected is not None and len(out) >= expected:
                break
            if not assigned:
                meta = consumer.list_topics(name, timeout=max(0.1, min(1.0, deadline - now)))
                tm = meta.topics.get(name)
                if _visible(tm):
                    consumer.assign([TopicPartition(name, p, OFFSET_BEGINNING) for p in sorted(tm.partitions)])
                    assigned = True
                else:
                    time.sleep(0.1)
                continue
            batch = consumer.consume(1000, timeout=max(0.01, min(0.2, deadline - now)))
            for msg in batch:
                err = msg.error()
                if err is None:
                    out.append(msg)
                elif err.code() != KafkaError._PARTITION_EOF:
                    raise KafkaException(err)
            if any(m.error() is None for m in batch):
                last = time.monotonic()
    finally:
        consumer.close()
    return out


def read_latest(s: KafkaSettings, logical_topic: str, *, timeout: float = 60.0) -> dict[bytes | None, bytes]:
    """The latest value per key of a compacted topic (the state it holds), read from the beginning up to the end
    of every partition as of the call (``read_to_end``), so an idle topic is read at once and a busy one does
    not keep the call waiting for it to go quiet.

    Records of one key share a partition, so the latest is the last in offset order, whether or not the broker has
    compacted yet; a record without a value (a tombstone) removes its key.

    Parameters
    ----------
    s
        The Kafka settings.
    logical_topic
        The compacted topic, without the namespace.
    timeout
        Seconds to read at most; a partition not read to its end by then raises ``TimeoutError`` (a state read
        in part would be wrong, not late).
    """
    messages, pending = read_to_end(s, logical_topic, {}, timeout=timeout)
    if pending:
        raise TimeoutError(f"reading {s.topic(logical_topic)!r}: partitions {sorted(pending)} not read to their end "
                           f"in {timeout:.0f} s from {s.bootstrap_servers}")
    latest: dict[bytes | None, bytes] = {}
    for msg in sorted(messages, key=lambda m: (m.partition(), m.offset())):
        if msg.value() is None:
            latest.pop(msg.key(), None)
        else:
            latest[msg.key()] = msg.value()
    return latest


def read_to_end(
    s: KafkaSettings, logical_topic: str, positions: dict[int, int], *, timeout: float = 60.0,
    ends: dict[int, int] | None = None,
) -> tuple[list[Message], set[int]]:
    """Every message of a topic from ``positions`` (the beginning where none) up to each partition's end as of
    the start (``scan_to_end``), and the partitions not read to their end within ``timeout``.

    ``positions`` (partition -> next offset) is advanced in place, so calling again reads only what came since;
    pass the same ``ends`` each time too, and a partition nothing came to since is not fetched at all.

    Parameters
    ----------
    s
        The Kafka settings.
    logical_topic
        The topic to read, without the namespace.
    positions
        Where to start per partition; updated to after the last message read.
    timeout
        Seconds to try; partitions not read to their end by then are returned as the second value.
    ends
        The positions earlier calls read each partition to its end at (``scan_to_end``); updated in place.
    """
    out: list[Message] = []
    pending = scan_to_end(s, s.topic(logical_topic), out.append, positions, timeout=timeout, ends=ends)
    return out, pending


def scan_to_end(
    s: KafkaSettings, topic: str, on_record: Callable[[Message], None], positions: dict[int, int] | None = None,
    *, partitions: Iterable[int] | None = None, timeout: float = 60.0, ends: dict[int, int] | None = None,
) -> set[int]:
    """Hand every record of ``topic`` from ``positions`` (the beginning where none) up to each partition's end as
    of the start to ``on_record``, in offset order per partition; return the partitions not read to their end
    within ``timeout``. The one reader to the end: ``read_to_end``, the Faust store's changelog load and bench
    scale's changelog statistics use it.

    A partition's end is the high watermark its first fetch reports (or its end-of-partition report), not
    ListOffsets, which some Kafka-compatible brokers answer wrong (Tansu answers with its last batch's start plus
    one: 1 for a partition holding one batch of 5). Records that arrive later are left for the next call, so a
    topic written all the time (a live fleet's heartbeats) is read once and the call returns; an empty partition,
    or one whose last offset is no record (a transaction marker), is done at its end-of-partition report. Fetches
    are ``READ_TO_END_FETCH``'s. A fresh reader each call; no consumer group.

    A fetch at a partition's end waits ``READ_TO_END_FETCH``'s 500 ms for records before it reports the end, so
    partitions with nothing to read are not fetched (``_already_read``): those read from the beginning whose
    ListOffsets end is not past their first offset (empty), and those whose position is the one ``ends`` says an
    earlier call read them to the end at, and whose ListOffsets end is not past it (nothing came since).

    Parameters
    ----------
    s
        The Kafka settings (connection and security).
    topic
        The topic's full name (namespace included).
    on_record
        Called with each record; what it raises ends the read.
    positions
        Where to start per partition (partition -> next offset); advanced in place past each record handed over,
        and to a partition's end at its end-of-partition report.
    partitions
        The partitions to read (default: all the topic has); one the topic does not have raises ``KafkaException``
        (``_UNKNOWN_PARTITION``) at once.
    timeout
        Seconds to try, listing the partitions included.
    ends
        Partition -> the position a call read it to its end at, kept by the caller between calls with
        ``positions``; updated in place (a partition not read to its end is removed: it may stop inside a batch).
    """
    positions = {} if positions is None else positions
    ends = {} if ends is None else ends
    consumer = make_consumer(s, f"eddyline-reader-{uuid.uuid4().hex}", **READ_TO_END_FETCH)
    fetched: dict[int, int] = {}

    def reached(p: int) -> bool:
        """Whether partition ``p`` is read up to the end its first fetch reported (unknown before that fetch)."""
        if p not in fetched:
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, p), cached=True)
            if high < 0:
                return False
            fetched[p] = high
            if low >= 0:
                positions.setdefault(p, low)  # from the beginning: an empty partition is read already
        return positions.get(p, -1) >= fetched[p]

    deadline = time.monotonic() + timeout
    try:
        meta = consumer.list_topics(topic, timeout=timeout).topics[topic]
        partitions = set(meta.partitions if partitions is None else partitions)
        absent = sorted(partitions - set(meta.partitions))
        if absent and meta.error is None and meta.partitions:  # never there: waiting out the timeout tells nothing
            raise KafkaException(KafkaError(KafkaError._UNKNOWN_PARTITION, f"topic {topic!r} has no partition "
                                            f"{', '.join(map(str, absent))}: it has {len(meta.partitions)}"))
        pending = partitions - _already_read(consumer, topic, partitions, positions, ends, deadline)
        for p in pending:
            ends.pop(p, None)
        if pending:
            consumer.assign([TopicPartition(topic, p, positions.get(p, OFFSET_BEGINNING)) for p in sorted(pending)])
        while pending and time.monotonic() < deadline:
            for msg in consumer.consume(10_000, 0.5):
                err, p = msg.error(), msg.partition()
                if err is None:
                    if p in pending and not reached(p):
                        on_record(msg)
                        positions[p] = msg.offset() + 1
                elif err.code() != KafkaError._PARTITION_EOF:
                    raise KafkaException(err)
                elif p in pending:  # every record before the end was handed over: none is left before it
                    positions[p] = max(positions.get(p, 0), msg.offset())
                if p in pending and err is not None:
                    pending.discard(p)
                    ends[p] = positions[p]
            for p in [p for p in pending if reached(p)]:
                pending.discard(p)
                ends[p] = positions[p]
    finally:
        consumer.close()
    return pending


def _already_read(
    consumer: Consumer, topic: str, partitions: Iterable[int], positions: dict[int, int], ends: dict[int, int],
    deadline: float,
) -> set[int]:
    """The partitions with no record to read from ``positions`` (the beginning where none), by ListOffsets, which
    is trusted only where a wrong answer cannot hide a record: at a partition's first offset, or at a position
    ``ends`` gives for it (no record lay between it and the end then). Tansu's ListOffsets end, its last batch's
    start plus one, is then past the position if any record is there or came since, as a true end is.
    ``positions`` gets the first offset of an empty partition read from the beginning, ``ends`` the position of
    each partition found read.

    Parameters
    ----------
    consumer
        A consumer to ask with.
    topic
        The topic's full name.
    partitions
        The partitions to look at.
    positions, ends
        As ``scan_to_end`` has them.
    deadline
        ``time.monotonic()`` after which not to ask (the rest are taken as not read).
    """
    done: set[int] = set()
    for p in partitions:
        start = positions.get(p)
        if (start is not None and ends.get(p) != start) or time.monotonic() >= deadline:
            continue  # a position anywhere else may lie inside the last batch: only a fetch tells
        try:
            low, high = consumer.get_watermark_offsets(
                TopicPartition(topic, p), timeout=max(0.1, min(5.0, deadline - time.monotonic())), cached=False)
        except KafkaException as e:  # a fetch finds out as before
            log.debug("ListOffsets failed: %s", e, extra={"topic": topic, "partition": p})
            continue
        start = low if start is None else start
        if 0 <= high <= start:
            positions[p] = ends[p] = start
            done.add(p)
    return done
