"""A stand-in for a Confluent Schema Registry on loopback: the documented REST subset eddyline uses.

``POST /subjects/{subject}/versions`` registers a schema (the same schema text gets the same id, in any
subject), ``GET /schemas/ids/{id}`` returns it, ``GET /subjects``, ``GET /subjects/{subject}/versions`` and
``GET /subjects/{subject}/versions/{version|latest}`` list what is there; errors carry ``error_code`` and
``message`` as the real one's do (40401 subject not found, 40403 schema not found, 42201 invalid schema).
Optional basic authentication. ``fail_next(n, status)`` answers the next ``n`` requests with ``status`` and
``stop()``/``start()`` take it off the network and back (same port), to exercise retries and outages.
"""

from __future__ import annotations

import base64
import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self

__all__ = ["SchemaRegistryStandIn"]

MEDIA = "application/vnd.schemaregistry.v1+json"
FIRST_ID = 100


class SchemaRegistryStandIn:
    """``with SchemaRegistryStandIn() as registry:`` serves on ``registry.url`` until the block ends.

    Parameters
    ----------
    auth
        (user, password) required as HTTP basic authentication, or None.
    port
        0 for a free one.
    """

    def __init__(self, auth: tuple[str, str] | None = None, port: int = 0) -> None:
        self.auth = auth
        self.port = port
        self.schemas: dict[int, str] = {}
        self.subjects: dict[str, list[int]] = {}
        self.requests: list[tuple[str, str]] = []
        self._failures: list[int] = []
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def fail_next(self, n: int, status: int = 503) -> None:
        with self._lock:
            self._failures += [status] * n

    def start(self) -> Self:
        server = ThreadingHTTPServer(("127.0.0.1", self.port), _handler(self))
        server.daemon_threads = True
        self._server, self.port = server, server.server_address[1]
        self._thread = threading.Thread(target=server.serve_forever, daemon=True, name="schema-registry-stand-in")
        self._thread.start()
        return self

    def stop(self) -> None:
        """Off the network; the port is kept for ``start()`` and what was registered stays."""
        server, thread, self._server, self._thread = self._server, self._thread, None, None
        if server is not None and thread is not None:
            server.shutdown()
            server.server_close()
            thread.join(5)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- what the handler calls ---------------------------------------------------------------------

    def answer(self, method: str, path: str, headers: Any, body: bytes) -> tuple[int, dict | list]:
        with self._lock:
            self.requests.append((method, path))
            if self._failures:
                return self._failures.pop(0), {"error_code": 50001, "message": "Error in the backend data store"}
            if self.auth is not None:
                token = base64.b64encode(":".join(self.auth).encode()).decode()
                if headers.get("Authorization") != f"Basic {token}":
                    return 401, {"error_code": 401, "message": "Unauthorized"}
            if method == "POST":
                return self._register(path, headers, body)
            return self._read(path)

    def _register(self, path: str, headers: Any, body: bytes) -> tuple[int, dict]:
        m = re.fullmatch(r"/subjects/([^/]+)/versions", path)
        if not m:
            return 404, {"error_code": 404, "message": "HTTP 404 Not Found"}
        if headers.get("Content-Type") not in (MEDIA, "application/json"):
            return 415, {"error_code": 415, "message": "Unsupported Media Type"}
        try:
            schema = json.loads(body)["schema"]
            parsed = json.loads(schema)
            import fastavro

            fastavro.parse_schema(parsed)
        except Exception as exc:  # noqa: BLE001 - the registry's answer to any bad schema
            return 422, {"error_code": 42201, "message": f"Invalid schema: {exc}"}
        sid = next((i for i, s in self.schemas.items() if s == schema), None)
        if sid is None:
            sid = FIRST_ID + len(self.schemas)
            self.schemas[sid] = schema
        versions = self.subjects.setdefault(m.group(1), [])
        if sid not in versions:
            versions.append(sid)
        return 200, {"id": sid}

    def _read(self, path: str) -> tuple[int, dict | list]:
        if path == "/subjects":
            return 200, sorted(self.subjects)
        if m := re.fullmatch(r"/schemas/ids/(\d+)", path):
            schema = self.schemas.get(int(m.group(1)))
            if schema is None:
                return 404, {"error_code": 40403, "message": "Schema not found"}
            return 200, {"schema": schema}
        if m := re.fullmatch(r"/subjects/([^/]+)/versions(?:/(latest|\d+))?", path):
            versions = self.subjects.get(m.group(1))
            if versions is None:
                return 404, {"error_code": 40401, "message": f"Subject '{m.group(1)}' not found."}
            if m.group(2) is None:
                return 200, list(range(1, len(versions) + 1))
            n = len(versions) if m.group(2) == "latest" else int(m.group(2))
            if not 1 <= n <= len(versions):
                return 404, {"error_code": 40402, "message": f"Version {m.group(2)} not found."}
            sid = versions[n - 1]
            return 200, {"subject": m.group(1), "version": n, "id": sid, "schema": self.schemas[sid]}
        return 404, {"error_code": 404, "message": "HTTP 404 Not Found"}


def _handler(registry: SchemaRegistryStandIn) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def _serve(self, method: str) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            status, body = registry.answer(method, self.path, self.headers, self.rfile.read(length))
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", MEDIA)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            self._serve("GET")

        def do_POST(self) -> None:
            self._serve("POST")

    return Handler
