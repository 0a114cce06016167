"""ConfluentRegistry against a small in-process stand-in for the Schema Registry REST API on 127.0.0.1.

A Confluent registry cannot run here; the stand-in implements the two calls the client makes and checks
what the client sends (content type, auth, subject naming, a schema that parses).
"""

from __future__ import annotations

import base64
import json
import re
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import fastavro
import pytest

from schemas import AvroSerde, ConfluentRegistry, UnknownSchemaError, catalog, wire
from tests.unit.test_schemas_serde import EXAMPLES


class FakeRegistry(ThreadingHTTPServer):
    def __init__(self, auth: tuple[str, str] | None = None) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.auth = auth
        self.schemas: dict[int, str] = {}
        self.subjects: dict[str, list[int]] = {}
        self.requests: list[tuple[str, str]] = []
        self.fail_with: int | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _Handler(BaseHTTPRequestHandler):
    server: FakeRegistry

    def log_message(self, *args: object) -> None:
        pass

    def _reply(self, code: int, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/vnd.schemaregistry.v1+json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _authorized(self) -> bool:
        if self.server.auth is None:
            return True
        token = base64.b64encode(":".join(self.server.auth).encode()).decode()
        if self.headers.get("Authorization") == f"Basic {token}":
            return True
        self._reply(401, {"error_code": 401, "message": "Unauthorized"})
        return False

    def do_POST(self) -> None:
        self.server.requests.append(("POST", self.path))
        if not self._authorized():
            return
        if self.server.fail_with:
            return self._reply(self.server.fail_with, {"error_code": 50001, "message": "store error"})
        m = re.fullmatch(r"/subjects/([^/]+)/versions", self.path)
        if not m or self.headers.get("Content-Type") != "application/vnd.schemaregistry.v1+json":
            return self._reply(400, {"error_code": 400, "message": "bad request"})
        schema = json.loads(self.rfile.read(int(self.headers["Content-Length"])))["schema"]
        try:
            fastavro.parse_schema(json.loads(schema))
        except Exception as exc:
            return self._reply(422, {"error_code": 42201, "message": f"Invalid schema: {exc}"})
        sid = next((i for i, s in self.server.schemas.items() if s == schema), None)
        if sid is None:
            sid = 100 + len(self.server.schemas)
            self.server.schemas[sid] = schema
        self.server.subjects.setdefault(m.group(1), []).append(sid)
        self._reply(200, {"id": sid})

    def do_GET(self) -> None:
        self.server.requests.append(("GET", self.path))
        if not self._authorized():
            return
        m = re.fullmatch(r"/schemas/ids/(\d+)", self.path)
        if not m:
            return self._reply(404, {"error_code": 404, "message": "HTTP 404 Not Found"})
        schema = self.server.schemas.get(int(m.group(1)))
        if schema is None:
            return self._reply(404, {"error_code": 40403, "message": "Schema not found"})
        self._reply(200, {"schema": schema})


@pytest.fixture
def registry_server() -> Iterator[FakeRegistry]:
    server = FakeRegistry(auth=("svc", "s3cret"))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
    thread.join()


def test_encode_registers_under_topic_value_subject(registry_server: FakeRegistry) -> None:
    serde = AvroSerde(ConfluentRegistry(registry_server.url, auth=("svc", "s3cret")))
    data = serde.encode(catalog.CLICK, EXAMPLES[catalog.CLICK], topic="prod.clicks")
    schema_id, _ = wire.unframe(data)
    assert registry_server.subjects == {"prod.clicks-value": [schema_id]}
    registered = json.loads(registry_server.schemas[schema_id])
    assert {"name": "context", "type": {"type": "map", "values": "string"}, "default": {}} in registered["fields"]


def test_ids_are_cached(registry_server: FakeRegistry) -> None:
    serde = AvroSerde(ConfluentRegistry(registry_server.url, auth=("svc", "s3cret")))
    for _ in range(5):
        data = serde.encode(catalog.CLICK, EXAMPLES[catalog.CLICK], topic="clicks")
        serde.decode(data, catalog.CLICK)
    assert registry_server.requests == [("POST", "/subjects/clicks-value/versions")]


def test_a_fresh_reader_fetches_the_schema_by_id(registry_server: FakeRegistry) -> None:
    writer = AvroSerde(ConfluentRegistry(registry_server.url, auth=("svc", "s3cret")))
    data = writer.encode(catalog.SENSOR_BATCH, EXAMPLES[catalog.SENSOR_BATCH], topic="sensor.readings")
    reader = AvroSerde(ConfluentRegistry(registry_server.url + "/", auth=("svc", "s3cret")))
    assert reader.decode(data, catalog.SENSOR_BATCH) == EXAMPLES[catalog.SENSOR_BATCH]
    assert ("GET", f"/schemas/ids/{wire.unframe(data)[0]}") in registry_server.requests


def test_unknown_id_is_unknown_schema(registry_server: FakeRegistry) -> None:
    serde = AvroSerde(ConfluentRegistry(registry_server.url, auth=("svc", "s3cret")))
    with pytest.raises(UnknownSchemaError, match="not found.*Schema not found") as info:
        serde.decode(wire.frame(999, b"\x00"), catalog.CLICK)
    assert info.value.reason == "unknown_schema"


def test_wrong_credentials(registry_server: FakeRegistry) -> None:
    serde = AvroSerde(ConfluentRegistry(registry_server.url, auth=("svc", "wrong")))
    with pytest.raises(UnknownSchemaError, match="answered 401"):
        serde.encode(catalog.CLICK, EXAMPLES[catalog.CLICK], topic="clicks")


def test_server_error_is_reported(registry_server: FakeRegistry) -> None:
    registry_server.fail_with = 500
    serde = AvroSerde(ConfluentRegistry(registry_server.url, auth=("svc", "s3cret")))
    with pytest.raises(UnknownSchemaError, match="answered 500: .*store error"):
        serde.encode(catalog.CLICK, EXAMPLES[catalog.CLICK], topic="clicks")


def test_unreachable_registry() -> None:
    server = FakeRegistry()
    url = server.url
    server.server_close()  # nothing listens on the port any more
    serde = AvroSerde(ConfluentRegistry(url, timeout=2.0))
    with pytest.raises(UnknownSchemaError, match="unreachable.*EDDYLINE_SCHEMA_REGISTRY_URL"):
        serde.encode(catalog.CLICK, EXAMPLES[catalog.CLICK], topic="clicks")
