"""ConfluentRegistry against the loopback Schema Registry stand-in (connectors/testing/schema_registry.py).

A Confluent registry cannot run here; the stand-in implements the documented REST subset the client uses
and checks what the client sends (content type, auth, subject naming, a schema that parses). Registry
outages must never look like bad data: they are ``RegistryUnavailableError``, retried, and a consumer
pauses instead of dead-lettering.
"""

from __future__ import annotations

import json
import logging
import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from connectors.kafka import KafkaSettings
from connectors.schema_registry import SchemaRegistrySettings, configured_serde
from connectors.testing.schema_registry import SchemaRegistryStandIn
from schemas import (
    AvroSerde,
    ConfluentRegistry,
    LocalRegistry,
    RegistryUnavailableError,
    SchemaError,
    UnknownSchemaError,
    catalog,
    wire,
)
from streams.engines.output import Codec, DeadLetter
from tests.unit.test_schemas_serde import EXAMPLES

AUTH = ("svc", "s3cret")


def client(registry: SchemaRegistryStandIn, **kw) -> ConfluentRegistry:
    return ConfluentRegistry(registry.url, auth=AUTH, backoff_s=0.01, **kw)


@pytest.fixture
def registry_server() -> Iterator[SchemaRegistryStandIn]:
    with SchemaRegistryStandIn(auth=AUTH) as server:
        yield server


def test_encode_registers_under_topic_value_subject(registry_server) -> None:
    serde = AvroSerde(client(registry_server))
    data = serde.encode(catalog.CLICK, EXAMPLES[catalog.CLICK], topic="prod.clicks")
    schema_id, _ = wire.unframe(data)
    assert registry_server.subjects == {"prod.clicks-value": [schema_id]}
    registered = json.loads(registry_server.schemas[schema_id])
    assert {"name": "context", "type": {"type": "map", "values": "string"}, "default": {}} in registered["fields"]


def test_ids_are_cached(registry_server) -> None:
    serde = AvroSerde(client(registry_server))
    for _ in range(5):
        data = serde.encode(catalog.CLICK, EXAMPLES[catalog.CLICK], topic="clicks")
        serde.decode(data, catalog.CLICK)
    assert registry_server.requests == [("POST", "/subjects/clicks-value/versions")]


def test_a_fresh_reader_fetches_the_schema_by_id_once(registry_server) -> None:
    writer = AvroSerde(client(registry_server))
    data = writer.encode(catalog.SENSOR_BATCH, EXAMPLES[catalog.SENSOR_BATCH], topic="sensor.readings")
    reader = AvroSerde(ConfluentRegistry(registry_server.url + "/", auth=AUTH))
    for _ in range(3):
        assert reader.decode(data, catalog.SENSOR_BATCH) == EXAMPLES[catalog.SENSOR_BATCH]
    assert registry_server.requests.count(("GET", f"/schemas/ids/{wire.unframe(data)[0]}")) == 1


def test_unknown_id_is_a_data_error_and_cached_for_a_while(registry_server) -> None:
    serde = AvroSerde(client(registry_server, negative_ttl_s=60))
    for _ in range(3):
        with pytest.raises(UnknownSchemaError, match="not found.*Schema not found") as info:
            serde.decode(wire.frame(999, b"\x00"), catalog.CLICK)
        assert info.value.reason == "unknown_schema"
    assert registry_server.requests.count(("GET", "/schemas/ids/999")) == 1
    again = AvroSerde(client(registry_server, negative_ttl_s=0))
    for _ in range(2):
        with pytest.raises(UnknownSchemaError):
            again.decode(wire.frame(999, b"\x00"), catalog.CLICK)
    assert registry_server.requests.count(("GET", "/schemas/ids/999")) == 3


def test_wrong_credentials_are_unavailability_not_bad_data(registry_server) -> None:
    serde = AvroSerde(ConfluentRegistry(registry_server.url, auth=("svc", "wrong"), retries=1, backoff_s=0.01))
    with pytest.raises(RegistryUnavailableError, match="answered 401.*credentials"):
        serde.encode(catalog.CLICK, EXAMPLES[catalog.CLICK], topic="clicks")


def test_server_errors_are_retried_then_reported_as_unavailable(registry_server) -> None:
    registry_server.fail_next(2, 503)
    serde = AvroSerde(client(registry_server, retries=3))
    data = serde.encode(catalog.CLICK, EXAMPLES[catalog.CLICK], topic="clicks")  # third attempt answers
    assert wire.unframe(data)[0] in registry_server.schemas
    registry_server.fail_next(10, 500)
    with pytest.raises(RegistryUnavailableError, match="answered 500: .*data store") as info:
        AvroSerde(client(registry_server, retries=2)).encode(catalog.CLICK, EXAMPLES[catalog.CLICK], topic="other")
    assert info.value.reason == "registry_unavailable" and isinstance(info.value, SchemaError)
    assert not isinstance(info.value, UnknownSchemaError)


def test_a_refused_registration_is_a_schema_error_not_unavailability(registry_server) -> None:
    reg = ConfluentRegistry(registry_server.url, auth=AUTH)
    reg._headers["Content-Type"] = "text/plain"
    with pytest.raises(SchemaError, match="refused the request \\(415\\)") as info:
        reg.id_for("x", catalog.latest(catalog.CLICK))
    assert not isinstance(info.value, RegistryUnavailableError)


def test_unreachable_registry() -> None:
    server = SchemaRegistryStandIn().start()
    url = server.url
    server.stop()  # nothing listens on the port any more
    serde = AvroSerde(ConfluentRegistry(url, timeout=2.0, retries=1, backoff_s=0.01))
    with pytest.raises(RegistryUnavailableError, match="unreachable.*EDDYLINE_SCHEMA_REGISTRY_URL"):
        serde.encode(catalog.CLICK, EXAMPLES[catalog.CLICK], topic="clicks")


def test_the_flow_path_never_dead_letters_a_valid_event_for_the_registrys_sake(registry_server) -> None:
    data = AvroSerde(client(registry_server)).encode(catalog.CLICK, EXAMPLES[catalog.CLICK], topic="clicks")
    registry_server.stop()
    codec = Codec(KafkaSettings(), {"clicks": catalog.CLICK}, AvroSerde(client(registry_server, retries=1)))
    with pytest.raises(RegistryUnavailableError):
        codec.decode("clicks", b"u1", data, 0, 7)
    assert isinstance(codec.decode("clicks", b"u1", b"junk", 0, 8), DeadLetter)  # bad bytes still go to the DLQ


def test_a_consumer_pauses_while_the_registry_is_down_and_resumes(registry_server, caplog) -> None:
    data = AvroSerde(client(registry_server)).encode(catalog.CLICK, EXAMPLES[catalog.CLICK], topic="clicks")
    registry_server.stop()
    consumer = AvroSerde(ConfluentRegistry(registry_server.url, auth=AUTH, retries=1, backoff_s=0.05,
                                           max_backoff_s=0.1, pause=True))
    codec = Codec(KafkaSettings(), {"clicks": catalog.CLICK}, consumer)
    got: list = []
    caplog.set_level(logging.WARNING, logger="schemas.registry")
    worker = threading.Thread(target=lambda: got.append(codec.decode("clicks", b"u1", data, 0, 7)))
    worker.start()
    deadline = time.monotonic() + 30
    while "consumption paused" not in caplog.text and time.monotonic() < deadline:
        time.sleep(0.05)
    assert "consumption paused" in caplog.text and "unreachable" in caplog.text and not got
    registry_server.start()  # same port, same schemas
    worker.join(30)
    assert got and got[0].record == EXAMPLES[catalog.CLICK]
    assert "consumption resumes" in caplog.text


def test_settings_choose_the_registry(monkeypatch: pytest.MonkeyPatch, registry_server) -> None:
    monkeypatch.delenv("EDDYLINE_SCHEMA_REGISTRY_URL", raising=False)
    assert isinstance(configured_serde().registry, LocalRegistry)
    monkeypatch.setenv("EDDYLINE_SCHEMA_REGISTRY_URL", registry_server.url)
    monkeypatch.setenv("EDDYLINE_SCHEMA_REGISTRY_USERNAME", AUTH[0])
    monkeypatch.setenv("EDDYLINE_SCHEMA_REGISTRY_PASSWORD", AUTH[1])
    producer, consumer = configured_serde(), configured_serde(consumer=True)
    assert not producer.registry.pause and consumer.registry.pause
    data = producer.encode(catalog.CLICK, EXAMPLES[catalog.CLICK], topic="clicks")
    assert consumer.decode(data, catalog.CLICK) == EXAMPLES[catalog.CLICK]
    assert wire.unframe(data)[0] >= 100  # the registry's id, not a local one
    assert SchemaRegistrySettings().password.get_secret_value() == AUTH[1]


def test_the_stand_in_lists_subjects_and_versions(registry_server) -> None:
    AvroSerde(client(registry_server)).encode(catalog.CLICK, EXAMPLES[catalog.CLICK], topic="clicks")
    reg = ConfluentRegistry(registry_server.url, auth=AUTH)
    assert reg._call("GET", "/subjects") == ["clicks-value"]
    assert reg._call("GET", "/subjects/clicks-value/versions") == [1]
    latest = reg._call("GET", "/subjects/clicks-value/versions/latest")
    assert latest["version"] == 1 and latest["id"] in registry_server.schemas
    with pytest.raises(UnknownSchemaError, match="40401"):
        reg._call("GET", "/subjects/nope-value/versions")


def test_local_ids_from_edge_agents_still_decode_when_a_registry_is_configured(registry_server, monkeypatch) -> None:
    monkeypatch.setenv("EDDYLINE_SCHEMA_REGISTRY_URL", registry_server.url)
    monkeypatch.setenv("EDDYLINE_SCHEMA_REGISTRY_USERNAME", AUTH[0])
    monkeypatch.setenv("EDDYLINE_SCHEMA_REGISTRY_PASSWORD", AUTH[1])
    from_edge = AvroSerde().encode(catalog.SENSOR_BATCH, EXAMPLES[catalog.SENSOR_BATCH])  # a local id
    assert configured_serde(consumer=True).decode(from_edge, catalog.SENSOR_BATCH) == EXAMPLES[catalog.SENSOR_BATCH]
    with pytest.raises(UnknownSchemaError):  # an id neither knows is still bad data
        configured_serde(consumer=True).decode(wire.frame(7, b"\x00"), catalog.SENSOR_BATCH)


def test_a_schema_read_back_from_the_registry_needs_no_resolution_and_uses_the_compiled_reader(registry_server) -> None:
    """The registry hands back the whole schema as registered, not its canonical form: the same schema all the
    same, so every message must not go through fastavro's schema resolution."""
    writer = AvroSerde(client(registry_server))
    data = writer.encode(catalog.SENSOR_BATCH, EXAMPLES[catalog.SENSOR_BATCH], topic="sensor.readings")
    schema_id, _ = wire.unframe(data)
    assert registry_server.schemas[schema_id] != catalog.latest(catalog.SENSOR_BATCH).canonical
    reader = AvroSerde(ConfluentRegistry(registry_server.url, auth=AUTH), compiled=True)
    record = reader.decode(data, catalog.SENSOR_BATCH, arrays=True)
    assert reader._schemas(schema_id, catalog.SENSOR_BATCH)[1] is None  # no reader schema: nothing to resolve
    assert type(record["series"][0]["values"]).__name__ == "ndarray"  # only the compiled reader gives arrays


class _NotARegistry(BaseHTTPRequestHandler):
    """Another HTTP service at the configured URL: JSON, but never what a registry answers."""

    def log_message(self, *args: object) -> None:
        pass

    def _answer(self, status: int, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        self._answer(200, b'{"status": "ok"}')

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self._answer(200, b"[]")


@pytest.fixture
def not_a_registry() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _NotARegistry)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.fixture
def banner_service() -> Iterator[str]:
    """A TCP service that is no HTTP server (the URL's port is wrong): it greets and hangs up."""
    listener = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            with conn:
                conn.sendall(b"SSH-2.0-OpenSSH_9.2\r\n")

    threading.Thread(target=serve, daemon=True).start()
    yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    listener.close()


@pytest.mark.parametrize("where", ["json page", "banner", "wrong path", "400"])
def test_an_answer_no_registry_gives_pauses_the_flow_instead_of_dead_lettering_valid_events(
        where: str, not_a_registry: str, banner_service: str, registry_server: SchemaRegistryStandIn) -> None:
    """A registry URL that leads elsewhere is the configuration's fault, never the event's: only the registry's
    own "schema not found" (error code 404xx) makes a message bad data."""
    data = AvroSerde(client(registry_server)).encode(catalog.CLICK, EXAMPLES[catalog.CLICK], topic="clicks")
    if where == "400":  # a proxy refusing the request, e.g. plain HTTP to its HTTPS port
        registry_server.fail_next(10, 400)
    url = {"json page": not_a_registry, "banner": banner_service, "wrong path": registry_server.url + "/v1",
           "400": registry_server.url}[where]
    codec = Codec(KafkaSettings(), {"clicks": catalog.CLICK},
                  AvroSerde(ConfluentRegistry(url, auth=AUTH, retries=1, backoff_s=0.01, fallback=LocalRegistry())))
    with pytest.raises(RegistryUnavailableError, match="EDDYLINE_SCHEMA_REGISTRY_URL"):
        codec.decode("clicks", b"u1", data, 0, 7)


@pytest.mark.parametrize("where", ["json page", "banner", "wrong path"])
def test_a_producer_told_junk_by_the_registry_hears_unavailable(where: str, not_a_registry: str, banner_service: str,
                                                                registry_server: SchemaRegistryStandIn) -> None:
    url = {"json page": not_a_registry, "banner": banner_service, "wrong path": registry_server.url + "/v1"}[where]
    serde = AvroSerde(ConfluentRegistry(url, auth=AUTH, retries=0))
    with pytest.raises(RegistryUnavailableError, match="EDDYLINE_SCHEMA_REGISTRY_URL"):
        serde.encode(catalog.CLICK, EXAMPLES[catalog.CLICK], topic="clicks")


@pytest.mark.parametrize("schema", ['syntax = "proto3";\nmessage Click { string id = 1; }', "{}",
                                    '{"$schema": "http://json-schema.org/draft-07/schema#", "type": "object"}', "5"])
def test_a_message_written_with_another_serializer_is_undecodable(registry_server, schema: str) -> None:
    """Protobuf and JSON Schema serializers frame messages as Avro's do, with an id of a schema that is not Avro."""
    registry_server.schemas[500] = schema
    codec = Codec(KafkaSettings(), {"clicks": catalog.CLICK}, AvroSerde(client(registry_server), compiled=True))
    letter = codec.decode("clicks", b"u1", wire.frame(500, b"\x02a"), 0, 7)
    assert isinstance(letter, DeadLetter) and letter.reason == "undecodable"
    assert "schema id 500 is not an Avro schema" in letter.error


@pytest.mark.parametrize("url", ["registry:8081", "localhost:8081", "htp://registry:8081"])
def test_a_registry_url_the_client_cannot_speak_to_is_a_config_error_not_an_endless_outage(
        monkeypatch: pytest.MonkeyPatch, url: str) -> None:
    from connectors.config import explain

    monkeypatch.setenv("EDDYLINE_SCHEMA_REGISTRY_URL", url)
    with pytest.raises(ValueError) as info:
        SchemaRegistrySettings()
    assert "EDDYLINE_SCHEMA_REGISTRY_URL" in explain(info.value) and "e.g. http://registry:8081" in explain(info.value)
    for good in ("https://registry.example:8081", "HTTP://registry:8081"):  # urllib takes the scheme in any case
        monkeypatch.setenv("EDDYLINE_SCHEMA_REGISTRY_URL", good)
        assert SchemaRegistrySettings().url == good


@pytest.mark.parametrize("items", ["null", {"type": "record", "name": "Nothing", "fields": []},
                                   {"type": "fixed", "name": "Empty", "size": 0}])
def test_a_registered_schema_with_arrays_of_items_that_take_no_bytes_is_refused(registry_server, items) -> None:
    """Any producer allowed to register can add such an array to a topic's schema: its count (2^40 in six bytes)
    would then be a loop of 2^40 steps in every consumer, holding the GIL; here a count of 1000 shows it is read."""
    latest = catalog.latest(catalog.CLICK)
    hostile = {**latest.schema, "fields": [{"name": "pad", "type": {"type": "array", "items": items}},
                                           *latest.schema["fields"]]}
    registry_server.schemas[600] = json.dumps(hostile)
    body = AvroSerde().encode(catalog.CLICK, EXAMPLES[catalog.CLICK])[wire.HEADER_SIZE:]
    codec = Codec(KafkaSettings(), {"clicks": catalog.CLICK}, AvroSerde(client(registry_server), compiled=True))
    letter = codec.decode("clicks", b"u1", wire.frame(600, b"\xd0\x0f\x00" + body), 0, 7)  # 1000 items, then none
    assert isinstance(letter, DeadLetter) and letter.reason == "undecodable"
    assert "schema id 600 has arrays of items that take no bytes" in letter.error


class _JerseyStandIn(SchemaRegistryStandIn):
    """Confluent's ``GET /schemas/ids/{id}`` takes a Java ``Integer``: past 2^31-1 no resource matches, and Jersey
    answers the bare 404 of a path that does not exist."""

    def _read(self, path: str) -> tuple[int, dict | list]:
        if path.startswith("/schemas/ids/") and int(path.rsplit("/", 1)[1]) > 2**31 - 1:
            return 404, {"error_code": 404, "message": "HTTP 404 Not Found"}
        return super()._read(path)


def test_a_corrupt_header_with_an_id_past_2_31_is_dead_lettered_not_an_endless_pause() -> None:
    """Four bytes after a zero byte, from a corrupt or foreign message, are an id up to 2^32-1; Confluent's answer for
    one past 2^31-1 reads as a URL leading elsewhere, and a consumer paused for good on one bad message."""
    with _JerseyStandIn() as registry:
        codec = Codec(KafkaSettings(), {"clicks": catalog.CLICK},
                      AvroSerde(ConfluentRegistry(registry.url, retries=0, fallback=LocalRegistry())))
        letter = codec.decode("clicks", b"u1", wire.frame(2**31, b"\x02a"), 0, 7)
        assert isinstance(letter, DeadLetter) and letter.reason == "unknown_schema"
        assert "schema id 2147483648 is past 2147483647" in letter.error
        assert ("GET", "/schemas/ids/2147483648") not in registry.requests
