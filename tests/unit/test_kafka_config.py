"""KafkaSettings and the librdkafka configurations built from them."""

from __future__ import annotations

import ctypes
import logging
import tempfile
from pathlib import Path

import confluent_kafka
import pytest
from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient
from pydantic import ValidationError

from connectors.kafka import (
    CONSUMER_ONLY,
    PRODUCER_ONLY,
    KafkaSettings,
    admin_config,
    consumer_config,
    make_consumer,
    make_producer,
    producer_config,
)
from tests.fixtures.config import empty_config


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import os

    for name in list(os.environ):
        if name.startswith("EDDYLINE_KAFKA_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("EDDYLINE_CONFIG", str(empty_config(tmp_path)))


def test_defaults() -> None:
    s = KafkaSettings()
    assert s.bootstrap_servers == "127.0.0.1:9092"
    assert s.namespace == "" and s.compression == "lz4"
    assert s.session_timeout_ms == 45000 and s.partitions == 3 and s.replication_factor == 1
    assert s.topic("sensor.readings") == "sensor.readings"


def test_namespace_prefixes_topics() -> None:
    assert KafkaSettings(namespace="staging.").topic("dlq.clicks") == "staging.dlq.clicks"


def test_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EDDYLINE_KAFKA_BOOTSTRAP_SERVERS", "k1:9093,k2:9093")
    monkeypatch.setenv("EDDYLINE_KAFKA_NAMESPACE", "prod.")
    monkeypatch.setenv("EDDYLINE_KAFKA_PARTITIONS", "12")
    monkeypatch.setenv("EDDYLINE_KAFKA_EXTRA", '{"statistics.interval.ms": "5000"}')
    s = KafkaSettings()
    assert (s.bootstrap_servers, s.namespace, s.partitions) == ("k1:9093,k2:9093", "prod.", 12)
    assert producer_config(s)["statistics.interval.ms"] == "5000"


def test_toml_file_and_precedence(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    path = tmp_path / "eddyline.toml"
    path.write_text('[kafka]\nbootstrap_servers = "file:9092"\nnamespace = "file."\nlinger_ms = 50\n'
                    '[kafka.extra]\n"socket.keepalive.enable" = "true"\n')
    monkeypatch.setenv("EDDYLINE_CONFIG", str(path))
    monkeypatch.setenv("EDDYLINE_KAFKA_NAMESPACE", "env.")
    s = KafkaSettings(linger_ms=1)
    assert s.bootstrap_servers == "file:9092"
    assert s.namespace == "env."
    assert s.linger_ms == 1
    assert s.extra == {"socket.keepalive.enable": "true"}


def test_unknown_toml_key_is_an_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    path = tmp_path / "eddyline.toml"
    path.write_text('[kafka]\nbootstrap_server = "typo:9092"\n')
    monkeypatch.setenv("EDDYLINE_CONFIG", str(path))
    with pytest.raises(ValidationError, match="bootstrap_server"):
        KafkaSettings()


def test_bad_values_are_rejected() -> None:
    with pytest.raises(ValidationError, match="compression"):
        KafkaSettings(compression="brotli")
    with pytest.raises(ValidationError, match="partitions"):
        KafkaSettings(partitions=0)


def test_producer_defaults_for_production() -> None:
    conf = producer_config(KafkaSettings(bootstrap_servers="b:9092", client_id="edge-7"))
    assert conf["enable.idempotence"] is True
    assert conf["acks"] == "all"
    assert conf["compression.type"] == "lz4"
    assert conf["linger.ms"] > 0 and conf["batch.size"] > 0
    assert conf["bootstrap.servers"] == "b:9092" and conf["client.id"] == "edge-7"
    assert conf["security.protocol"] == "plaintext"


def test_overrides_win() -> None:
    s = KafkaSettings(extra={"acks": "1", "linger.ms": "0"})
    conf = producer_config(s, **{"linger.ms": 100})
    assert conf["acks"] == "1" and conf["linger.ms"] == 100


def test_consumer_is_at_least_once() -> None:
    conf = consumer_config(KafkaSettings(session_timeout_ms=6000), "flow.anomaly")
    assert conf["group.id"] == "flow.anomaly"
    assert conf["enable.auto.commit"] is False
    assert conf["auto.offset.reset"] == "earliest"
    assert conf["session.timeout.ms"] == 6000
    assert conf["heartbeat.interval.ms"] < conf["session.timeout.ms"]


def test_sasl_ssl() -> None:
    s = KafkaSettings(
        security_protocol="SASL_SSL", sasl_mechanism="SCRAM-SHA-512", sasl_username="svc",
        sasl_password="hunter2", ssl_ca_location="/etc/ssl/ca.pem",
    )
    conf = admin_config(s)
    assert conf["security.protocol"] == "sasl_ssl"
    assert conf["sasl.mechanism"] == "SCRAM-SHA-512"
    assert (conf["sasl.username"], conf["sasl.password"]) == ("svc", "hunter2")
    assert conf["ssl.ca.location"] == "/etc/ssl/ca.pem"
    assert "ssl.key.location" not in conf
    assert "hunter2" not in repr(s) and "hunter2" not in str(s.model_dump())


def test_sasl_credentials_need_a_sasl_protocol() -> None:
    with pytest.raises(ValidationError, match="security_protocol is PLAINTEXT"):
        KafkaSettings(sasl_username="svc", sasl_password="x")


def test_librdkafka_accepts_the_configs() -> None:
    s = KafkaSettings(bootstrap_servers="127.0.0.1:1")
    producer = make_producer(s)
    assert isinstance(producer, Producer)
    producer.close()
    consumer = make_consumer(s, "g")
    assert isinstance(consumer, Consumer)
    consumer.close()


def test_toml_numbers_and_booleans_become_librdkafka_strings(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    path = tmp_path / "eddyline.toml"
    path.write_text('[kafka]\nsecurity_protocol = "sasl_ssl"\nsasl_mechanism = "plain"\n'
                    'sasl_username = "svc"\nsasl_password = "pw"\n'
                    '[kafka.extra]\n"queue.buffering.max.messages" = 200000\n"socket.nagle.disable" = true\n')
    monkeypatch.setenv("EDDYLINE_CONFIG", str(path))
    s = KafkaSettings()
    assert (s.security_protocol, s.sasl_mechanism) == ("SASL_SSL", "PLAIN")
    conf = producer_config(s)
    assert conf["queue.buffering.max.messages"] == "200000" and conf["socket.nagle.disable"] == "true"
    Producer(conf)  # librdkafka accepts them


def test_a_config_file_without_the_concerns_table_gives_defaults(tmp_path, monkeypatch):
    path = tmp_path / "eddyline.toml"
    path.write_text("[slack]\nwebhook_url = 'http://127.0.0.1:1/x'\n")
    monkeypatch.setenv("EDDYLINE_CONFIG", str(path))
    assert KafkaSettings().bootstrap_servers == "127.0.0.1:9092"


def _librdkafka_scopes() -> dict[str, set[str]]:
    """Property names by scope (``C``, ``P``, ``*``) from the installed librdkafka's own table
    (``rd_kafka_conf_properties_show``, the source of its CONFIGURATION.md), read through ctypes."""
    libs = sorted((Path(confluent_kafka.__file__).parent.parent / "confluent_kafka.libs").glob("librdkafka*"))
    assert libs, "confluent-kafka's wheel bundles librdkafka in confluent_kafka.libs"
    lib, libc = ctypes.CDLL(str(libs[0])), ctypes.CDLL(None)
    libc.fopen.restype, libc.fopen.argtypes = ctypes.c_void_p, [ctypes.c_char_p, ctypes.c_char_p]
    libc.fclose.argtypes = [ctypes.c_void_p]
    lib.rd_kafka_conf_properties_show.argtypes = [ctypes.c_void_p]
    with tempfile.NamedTemporaryFile("r", suffix=".md") as out:
        handle = libc.fopen(out.name.encode(), b"w")
        lib.rd_kafka_conf_properties_show(handle)
        libc.fclose(handle)
        rows = [line.split("|") for line in out.read().splitlines() if line.count("|") >= 5]
    scopes: dict[str, set[str]] = {}
    for row in rows:
        scopes.setdefault(row[1].strip(), set()).add(row[0].strip())
    return scopes


def test_the_consumer_and_producer_only_lists_are_librdkafkas_own() -> None:
    scopes = _librdkafka_scopes()
    assert len(scopes.get("*", ())) > 100  # the table was read
    assert CONSUMER_ONLY == scopes["C"] and PRODUCER_ONLY == scopes["P"], (
        "librdkafka's consumer-only (C) or producer-only (P) properties changed: update connectors/kafka.py")


EXTRA = {"fetch.wait.max.ms": "50", "queued.max.messages.kbytes": "4096", "isolation.level": "read_committed",
         "linger.ms": "7", "request.timeout.ms": "20000", "socket.keepalive.enable": "true", "client.id": "tuned"}


def test_extra_gives_each_kind_of_client_the_keys_it_reads() -> None:
    s = KafkaSettings(bootstrap_servers="127.0.0.1:1", extra=EXTRA)
    shared = {"socket.keepalive.enable": "true", "client.id": "tuned"}
    consumer_keys = {"fetch.wait.max.ms", "queued.max.messages.kbytes", "isolation.level"}
    producer_keys = {"linger.ms", "request.timeout.ms"}
    consumer, producer, admin = consumer_config(s, "g"), producer_config(s), admin_config(s)
    assert {k: consumer[k] for k in consumer_keys} == {k: EXTRA[k] for k in consumer_keys}
    assert not producer_keys & set(consumer)
    assert {k: producer[k] for k in producer_keys} == {k: EXTRA[k] for k in producer_keys}
    assert not consumer_keys & set(producer)
    assert not (consumer_keys | producer_keys) & set(admin)
    for conf in (consumer, producer, admin):
        assert {k: conf[k] for k in shared} == shared


def test_no_client_built_from_its_config_logs_a_confwarn(capfd: pytest.CaptureFixture[str]) -> None:
    s = KafkaSettings(bootstrap_servers="127.0.0.1:1", extra=EXTRA)
    AdminClient({"bootstrap.servers": "127.0.0.1:1", "fetch.wait.max.ms": "50"})  # the check can see one
    assert "CONFWARN" in capfd.readouterr().err
    Consumer(consumer_config(s, "g")).close()  # the configs, without make_*'s logger: librdkafka writes to stderr
    Producer(producer_config(s)).close()
    AdminClient(admin_config(s))
    said = capfd.readouterr().err
    assert "CONFWARN" not in said, said


def test_librdkafka_lines_become_log_records_and_a_failing_connect_is_said_once(
        capfd: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture) -> None:
    """Without a logger librdkafka prints a FAIL line per reconnect to stderr, above the line that says what to do."""
    s = KafkaSettings(bootstrap_servers="127.0.0.1:1")
    producer = make_producer(s, **{"reconnect.backoff.ms": 10, "reconnect.backoff.max.ms": 10,
                                   "client.id": "said-once"})  # other tests' clients may still be logging
    with caplog.at_level(logging.INFO, logger="librdkafka"):
        for _ in range(30):  # about 1.5 s: many reconnects
            producer.poll(0.05)
    fails = [r for r in caplog.records if r.name == "librdkafka" and "FAIL [said-once#" in r.getMessage()]
    assert len(fails) == 1 and "127.0.0.1:1" in fails[0].getMessage()
    assert "|FAIL|said-once#" not in capfd.readouterr().err


def test_a_bytewax_source_partition_says_a_failing_connect_once_through_logging(
        capfd: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture) -> None:
    """The source gets a plain config (it crosses to Bytewax's workers): the logger is added where the consumer is."""
    from datetime import timedelta

    from streams.engines.bytewax_source import LingerKafkaSource

    config = {"bootstrap.servers": "127.0.0.1:1", "client.id": "source-said-once",
              "reconnect.backoff.ms": 10, "reconnect.backoff.max.ms": 10}
    source = LingerKafkaSource(config, ["t"], batch_size=10, linger=timedelta(0))
    part = source.build_part("step", "0-t", None)
    assert "logger" not in source.config  # still plain data
    try:
        with caplog.at_level(logging.INFO, logger="librdkafka"):
            for _ in range(30):  # about 1.5 s: many reconnects
                part.consumer.poll(0.05)
    finally:
        part.consumer.close()
    fails = [r for r in caplog.records if r.name == "librdkafka" and "FAIL [source-said-once#" in r.getMessage()]
    assert len(fails) == 1 and "127.0.0.1:1" in fails[0].getMessage()
    assert "|FAIL|source-said-once#" not in capfd.readouterr().err


def test_the_lag_readers_admin_client_says_a_failing_connect_through_logging_as_it_goes(
        capfd: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture) -> None:
    """The lag monitor keeps its admin client for the flow's life: make_admin routes its lines to logging, and the
    reader polls it after each request, so that they are said (not printed raw, and not queued for the flow's life)."""
    from connectors.lag import LagReader

    s = KafkaSettings(bootstrap_servers="127.0.0.1:1", client_id="lag-admin-said",
                      extra={"reconnect.backoff.ms": "10", "reconnect.backoff.max.ms": "10"})
    reader = LagReader(s, timeout_s=1.0)
    try:
        with caplog.at_level(logging.INFO, logger="librdkafka"), \
                pytest.raises((confluent_kafka.KafkaException, TimeoutError)):
            reader.committed("g", [("t", 0)])  # only the admin client asks: the consumer is not polled here
        fails = [r for r in caplog.records if r.name == "librdkafka" and "FAIL [lag-admin-said#" in r.getMessage()]
    finally:
        reader.close()
    assert len(fails) == 1 and "127.0.0.1:1" in fails[0].getMessage()
    assert "|FAIL|lag-admin-said#" not in capfd.readouterr().err


# Clients built without ``logged_config``, and why each may: anything else prints raw ``%3|...|FAIL|`` lines.
UNLOGGED = {
    ("edge_agent/sender.py", "conf"),  # sets its own logger (edge_agent.librdkafka) on conf
}


def test_every_kafka_client_is_built_with_librdkafkas_lines_routed_to_logging() -> None:
    """``make_consumer``/``make_producer`` or ``logged_config`` (or a ``logger`` key) wherever a client is built."""
    import ast

    root = Path(__file__).resolve().parents[2]
    found = set()
    for package in ("connectors", "edge_agent", "models", "streams"):
        for path in sorted((root / package).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text())):
                if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
                        and node.func.id in ("Consumer", "Producer", "AdminClient") and node.args):
                    continue
                conf = node.args[0]
                if isinstance(conf, ast.Call) and isinstance(conf.func, ast.Name) and conf.func.id == "logged_config":
                    continue
                if isinstance(conf, ast.Dict) and any(isinstance(k, ast.Constant) and k.value == "logger"
                                                      for k in conf.keys):
                    continue
                found.add((path.relative_to(root).as_posix(), ast.unparse(conf)))
    assert found == UNLOGGED, sorted(found ^ UNLOGGED)


def test_scan_to_end_refuses_a_partition_the_topic_does_not_have_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """A Faust changelog with fewer partitions than the input waited out the whole load timeout, then said it 'took
    over 60 s'; the metadata already said the partition is not there."""
    import time
    from types import SimpleNamespace

    from confluent_kafka import KafkaError, KafkaException

    from connectors import kafka

    class Reader:
        def list_topics(self, topic: str, timeout: float) -> SimpleNamespace:
            return SimpleNamespace(topics={topic: SimpleNamespace(error=None, partitions={0: None, 1: None})})

        def get_watermark_offsets(self, tp, timeout: float = 0.0, cached: bool = False) -> tuple[int, int]:
            return 0, 0

        def assign(self, partitions) -> None:
            pass

        def consume(self, n: int, timeout: float) -> list:
            time.sleep(0.01)
            return []

        def close(self) -> None:
            pass

    monkeypatch.setattr(kafka, "make_consumer", lambda *a, **k: Reader())
    s = KafkaSettings(bootstrap_servers="127.0.0.1:9")
    started = time.monotonic()
    with pytest.raises(KafkaException) as info:
        kafka.scan_to_end(s, "changelog", lambda m: None, partitions=[0, 1, 5], timeout=2.0)
    assert info.value.args[0].code() == KafkaError._UNKNOWN_PARTITION and "no partition 5: it has 2" in str(info.value)
    assert time.monotonic() - started < 1.0
    assert kafka.scan_to_end(s, "changelog", lambda m: None, partitions=[0, 1], timeout=2.0) == set()
