"""A stand-in for PagerDuty's Events API v2 and Slack's incoming webhooks, on loopback.

It checks payloads the way the real services document them, answers as they do, and keeps incidents as
PagerDuty would (triggers with one dedup key fold into one incident), so ``eddyline demo`` and the tests
see real HTTP, real JSON and real refusals. It can be told to fail the next requests to exercise retries.

With ``tls=True`` it also listens for HTTPS, with a throw-away self-signed certificate for the host, because
the ``pagerduty`` client only speaks https; clients trust it through ``ca_file``. Plain HTTP stays on ``url``
for Slack webhooks, so one receiver serves both sinks.
"""

from __future__ import annotations

import json
import shutil
import socket
import ssl
import subprocess
import tempfile
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

__all__ = ["AlertReceiver", "DEFAULT_SLACK_PATH"]

DEFAULT_SLACK_PATH = "T00000000/B00000000/XXXXXXXXXXXXXXXXXXXXXXXX"
EVENT_ACTIONS = ("trigger", "acknowledge", "resolve")
SEVERITIES = ("critical", "error", "warning", "info")
ROUTING_KEY_LENGTH = 32
MAX_BODY = 512 * 1024  # PagerDuty's limit on an event
SLACK_MAX_BLOCKS = 50
SLACK_TEXT_LIMIT = 3000  # a text object's characters (a section's text, a context element)
SLACK_FIELD_LIMIT = 2000  # a section field's characters
SLACK_MAX_FIELDS = 10
SLACK_MAX_CONTEXT_ELEMENTS = 10
SLACK_BLOCKS_TEXT_LIMIT = 11_000  # the texts of all blocks together: undocumented, refusals reported from 11.3k
HANDSHAKE_TIMEOUT_S = 10.0


def self_signed_certificate(host: str, directory: Path) -> tuple[Path, Path]:
    """A one-day certificate and key for ``host`` (an IP or DNS SAN), made by the ``openssl`` CLI.

    The CLI rather than the ``cryptography`` package, which the project does not otherwise need.
    """
    openssl = shutil.which("openssl")
    if openssl is None:
        raise RuntimeError("AlertReceiver(tls=True) needs the openssl command to make its certificate")
    try:
        socket.inet_pton(socket.AF_INET6 if ":" in host else socket.AF_INET, host)
        san = f"IP:{host}"
    except OSError:
        san = f"DNS:{host}"
    cert, key = directory / "cert.pem", directory / "key.pem"
    command = [
        openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
        "-days", "1", "-subj", f"/CN={host}", "-addext", f"subjectAltName={san}",
        "-keyout", str(key), "-out", str(cert),
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=30, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"openssl could not make a certificate for {host}: {done.stderr.strip()}")
    return cert, key


class _TlsServer(ThreadingHTTPServer):
    """Handshakes in the request's own thread, so that a slow or plain-HTTP client cannot stall accepting."""

    def __init__(
        self,
        address: tuple[str, int],
        handler: type[BaseHTTPRequestHandler],
        context: ssl.SSLContext,
        on_handshake_failure: Callable[[], None],
    ) -> None:
        self.context = context
        self.on_handshake_failure = on_handshake_failure
        super().__init__(address, handler)

    def finish_request(self, request: Any, client_address: Any) -> None:
        request.settimeout(HANDSHAKE_TIMEOUT_S)
        try:
            tls = self.context.wrap_socket(request, server_side=True)
        except (ssl.SSLError, OSError):
            self.on_handshake_failure()
            return
        try:
            super().finish_request(tls, client_address)
        except (ssl.SSLError, ConnectionError):
            pass  # the client hung up before reading the answer: nothing the receiver could do or record
        finally:
            self.shutdown_request(tls)


def _pagerduty_errors(event: Any, routing_keys: frozenset[str] | None) -> list[str]:
    """The checks the Events API v2 makes, with messages in its style."""
    if not isinstance(event, dict):
        return ["Event object is invalid"]
    errors = []
    key = event.get("routing_key")
    if not isinstance(key, str) or not key:
        errors.append("'routing_key' is missing or blank")
    elif len(key) != ROUTING_KEY_LENGTH:
        errors.append(f"Length of 'routing_key' is incorrect (should be {ROUTING_KEY_LENGTH} characters)")
    elif routing_keys is not None and key not in routing_keys:
        errors.append("Invalid routing key")
    action = event.get("event_action")
    if action not in EVENT_ACTIONS:
        errors.append("'event_action' is missing or invalid (must be one of trigger, acknowledge, resolve)")
    dedup_key = event.get("dedup_key")
    if dedup_key is not None and (not isinstance(dedup_key, str) or not dedup_key or len(dedup_key) > 255):
        errors.append("'dedup_key' must be a non-blank string of at most 255 characters")
    if action in ("acknowledge", "resolve") and dedup_key is None:
        errors.append(f"'dedup_key' is required for event_action {action}")
    if action == "trigger":
        payload = event.get("payload")
        if not isinstance(payload, dict):
            errors.append("'payload' is missing or not an object")
        else:
            for field in ("summary", "source"):
                if not isinstance(payload.get(field), str) or not payload[field].strip():
                    errors.append(f"'payload.{field}' is missing or blank")
            if payload.get("severity") not in SEVERITIES:
                errors.append(
                    "'payload.severity' is missing or invalid (must be one of critical, error, warning, info)"
                )
            if "custom_details" in payload and not isinstance(payload["custom_details"], (dict, str)):
                errors.append("'payload.custom_details' must be an object")
    return errors


def _slack_valid(message: Any) -> bool:
    if not isinstance(message, dict):
        return False
    text, blocks = message.get("text"), message.get("blocks")
    has_text = isinstance(text, str) and bool(text.strip())
    has_blocks = isinstance(blocks, list) and bool(blocks) and all(isinstance(b, dict) and "type" in b for b in blocks)
    if blocks is not None and not has_blocks:
        return False
    return has_text or has_blocks


def _items(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _slack_block_lists(message: dict[str, Any]) -> list[list[Any]]:
    """The message's blocks and each attachment's."""
    lists = [_items(message.get("blocks"))]
    return lists + [_items(a.get("blocks")) for a in _items(message.get("attachments")) if isinstance(a, dict)]


def _slack_blocks_text(message: dict[str, Any]) -> int:
    """Characters in the texts of all blocks (section texts and fields, context elements), attachments' included."""
    total = 0
    for block in (b for blocks in _slack_block_lists(message) for b in blocks if isinstance(b, dict)):
        texts = [block.get("text"), *_items(block.get("fields")), *_items(block.get("elements"))]
        total += sum(len(str(t.get("text", ""))) for t in texts if isinstance(t, dict))
    return total


def _slack_block_errors(message: dict[str, Any]) -> list[str]:
    """The block limits Slack documents; a message over any of them is refused whole (400 ``invalid_blocks``)."""
    errors = []
    for blocks in _slack_block_lists(message):
        if len(blocks) > SLACK_MAX_BLOCKS:
            errors.append(f"more than {SLACK_MAX_BLOCKS} blocks")
        for block in (b for b in blocks if isinstance(b, dict)):
            kind, fields = block.get("type"), _items(block.get("fields"))
            elements = _items(block.get("elements")) if kind == "context" else []
            if len(fields) > SLACK_MAX_FIELDS:
                errors.append(f"more than {SLACK_MAX_FIELDS} fields")
            if len(elements) > SLACK_MAX_CONTEXT_ELEMENTS:
                errors.append(f"more than {SLACK_MAX_CONTEXT_ELEMENTS} context elements")
            texts = [(f"{kind} text", block.get("text"), SLACK_TEXT_LIMIT)]
            texts += [("field text", f, SLACK_FIELD_LIMIT) for f in fields]
            texts += [("context text", e, SLACK_TEXT_LIMIT) for e in elements]
            errors += [f"{what} over {limit} characters" for what, obj, limit in texts
                       if isinstance(obj, dict) and len(str(obj.get("text", ""))) > limit]
    return errors


class AlertReceiver:
    """A threaded HTTP(S) server on loopback; read its records while it runs, they are kept after ``stop()``."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        routing_keys: set[str] | None = None,
        tls: bool = False,
        https_port: int = 0,
    ) -> None:
        self.host = host
        self._port = port
        self.tls = tls
        self._https_port = https_port
        self.routing_keys = frozenset(routing_keys) if routing_keys is not None else None
        self._lock = threading.Condition()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._https_server: _TlsServer | None = None
        self._https_thread: threading.Thread | None = None
        self._cert_dir: Path | None = None
        self._ca_file: Path | None = None
        self._failures: deque[tuple[int, float | None]] = deque()
        self._down: int | None = None
        self.reset()

    # --- life cycle -------------------------------------------------------------------------------

    def start(self) -> AlertReceiver:
        if self._server is not None:
            return self
        try:
            if self.tls:
                self._cert_dir = Path(tempfile.mkdtemp(prefix="alert-receiver-tls-"))
                cert, key = self_signed_certificate(self.host, self._cert_dir)
                context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
                context.load_cert_chain(cert, key)
                https = _TlsServer((self.host, self._https_port), _handler_for(self), context, self._handshake_failed)
                self._https_server, self._https_port, self._ca_file = https, https.server_port, cert
                self._https_thread = _serve(https, f"alert-receiver-tls:{self._https_port}")
            server = ThreadingHTTPServer((self.host, self._port), _handler_for(self))
        except BaseException:
            self.stop()
            raise
        self._server, self._port = server, server.server_port
        self._thread = _serve(server, f"alert-receiver:{self._port}")
        return self

    def stop(self) -> None:
        listeners = [(self._server, self._thread), (self._https_server, self._https_thread)]
        self._server = self._thread = self._https_server = self._https_thread = None
        for server, thread in listeners:
            if server is not None:
                server.shutdown()
                server.server_close()
            if thread is not None:
                thread.join(timeout=5)
        if self._cert_dir is not None:
            shutil.rmtree(self._cert_dir, ignore_errors=True)
            self._cert_dir = self._ca_file = None

    def __enter__(self) -> AlertReceiver:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def running(self) -> bool:
        return self._server is not None

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("AlertReceiver is not started")
        return self._port

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def https_port(self) -> int:
        if self._https_server is None:
            raise RuntimeError("AlertReceiver is not started with tls=True")
        return self._https_port

    @property
    def https_url(self) -> str:
        return f"https://{self.host}:{self.https_port}"

    @property
    def ca_file(self) -> Path:
        """The certificate to trust for ``https_url`` (PagerDutySettings.ca_file); gone after ``stop()``."""
        if self._ca_file is None:
            raise RuntimeError("AlertReceiver is not started with tls=True")
        return self._ca_file

    @property
    def pagerduty_url(self) -> str:
        """The Events API base URL (PagerDutySettings.url): https with ``tls=True``, as the client requires."""
        return self.https_url if self.tls else self.url

    @property
    def slack_url(self) -> str:
        """An incoming-webhook URL (SlackSettings.webhook_url)."""
        return f"{self.url}/slack/{DEFAULT_SLACK_PATH}"

    # --- what it saw ------------------------------------------------------------------------------

    def reset(self) -> None:
        """Forget everything received; pending injected failures are dropped too."""
        with self._lock:
            self.events: list[dict[str, Any]] = []  # accepted PagerDuty events, in order
            self.slack_messages: list[dict[str, Any]] = []  # accepted Slack messages: {"path", "body"}
            self.incidents: dict[str, dict[str, Any]] = {}
            self.rejected: list[dict[str, Any]] = []  # {"path", "status", "body", "errors"}
            self.requests_total = 0
            self.failures_injected = 0
            self.tls_handshake_failures = 0  # clients that did not trust the certificate, or spoke plain HTTP
            self._failures.clear()

    @property
    def accepted_total(self) -> int:
        with self._lock:
            return len(self.events) + len(self.slack_messages)

    @property
    def counts(self) -> dict[str, int]:
        with self._lock:
            return {
                "requests": self.requests_total,
                "pagerduty_events": len(self.events),
                "slack_messages": len(self.slack_messages),
                "rejected": len(self.rejected),
                "failures_injected": self.failures_injected,
                "tls_handshake_failures": self.tls_handshake_failures,
                "incidents_open": sum(1 for i in self.incidents.values() if i["status"] != "resolved"),
            }

    def open_incidents(self) -> dict[str, dict[str, Any]]:
        with self._lock:
            return {k: dict(v) for k, v in self.incidents.items() if v["status"] != "resolved"}

    def fail_next(self, n: int, status: int = 500, *, retry_after: float | None = None) -> None:
        """Answer the next ``n`` requests, on any path, with ``status`` (500, 503, 429...) before checking them."""
        if n < 0 or not 400 <= status <= 599:
            raise ValueError("fail_next needs n >= 0 and an error status")
        with self._lock:
            self._failures.extend([(status, retry_after)] * n)

    def outage(self, status: int = 503) -> None:
        """Answer every request with ``status`` until ``recover()``: the service is down, its load balancer is up."""
        if not 400 <= status <= 599:
            raise ValueError("an outage answers with an error status")
        with self._lock:
            self._down = status

    def recover(self) -> None:
        """End an ``outage`` and drop pending injected failures."""
        with self._lock:
            self._down = None
            self._failures.clear()

    def wait_for(self, predicate: Callable[[AlertReceiver], bool], timeout: float = 10.0) -> bool:
        """Block until ``predicate(self)`` holds (checked on every request); False on timeout."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while not predicate(self):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._lock.wait(remaining)
            return True

    # --- request handling (called from server threads) --------------------------------------------

    def _take_failure(self) -> tuple[int, float | None] | None:
        with self._lock:
            self.requests_total += 1
            if self._down is not None:
                self.failures_injected += 1
                self._lock.notify_all()
                return self._down, None
            if self._failures:
                self.failures_injected += 1
                self._lock.notify_all()
                return self._failures.popleft()
            return None

    def _handshake_failed(self) -> None:
        with self._lock:
            self.tls_handshake_failures += 1
            self._lock.notify_all()

    def _reject(self, path: str, status: int, body: Any, errors: list[str]) -> None:
        with self._lock:
            self.rejected.append({"path": path, "status": status, "body": body, "errors": errors})
            self._lock.notify_all()

    def _pagerduty(self, path: str, event: Any) -> tuple[int, dict[str, Any]]:
        errors = _pagerduty_errors(event, self.routing_keys)
        if errors:
            self._reject(path, 400, event, errors)
            return 400, {"status": "invalid event", "message": "Event object is invalid", "errors": errors}
        dedup_key = event.get("dedup_key") or uuid.uuid4().hex
        action = event["event_action"]
        with self._lock:
            self.events.append(event)
            incident = self.incidents.get(dedup_key)
            if action == "trigger":
                if incident is None or incident["status"] == "resolved":
                    opened = 0 if incident is None else incident["opened"]
                    incident = self.incidents[dedup_key] = {
                        "status": "triggered",
                        "triggers": 0,
                        "acknowledges": 0,
                        "resolves": 0,
                        "opened": opened,
                    }
                    incident["opened"] += 1
                incident["triggers"] += 1
                incident["payload"] = event["payload"]
            elif incident is not None and incident["status"] != "resolved":
                # PagerDuty accepts acknowledge/resolve for unknown or closed incidents and does nothing.
                if action == "acknowledge":
                    incident["status"] = "acknowledged"
                    incident["acknowledges"] += 1
                else:
                    incident["status"] = "resolved"
                    incident["resolves"] += 1
            self._lock.notify_all()
        return 202, {"status": "success", "message": "Event processed", "dedup_key": dedup_key}

    def _slack(self, path: str, message: Any) -> tuple[int, str]:
        if not _slack_valid(message):
            self._reject(path, 400, message, ["invalid_payload"])
            return 400, "invalid_payload"
        errors = _slack_block_errors(message)
        if errors:
            self._reject(path, 400, message, errors)
            return 400, "invalid_blocks"
        total = _slack_blocks_text(message)
        if total > SLACK_BLOCKS_TEXT_LIMIT:
            errors = [f"blocks' texts total {total} characters, over {SLACK_BLOCKS_TEXT_LIMIT}"]
            self._reject(path, 400, message, errors)
            return 400, "msg_blocks_too_long"
        with self._lock:
            self.slack_messages.append({"path": path.removeprefix("/slack/"), "body": message})
            self._lock.notify_all()
        return 200, "ok"


def _serve(server: ThreadingHTTPServer, name: str) -> threading.Thread:
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), name=name, daemon=True)
    thread.start()
    return thread


def _handler_for(receiver: AlertReceiver) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = "eddyline-alert-receiver"

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (stdlib signature)
            return None

        def _send(self, status: int, body: Any, headers: dict[str, str] | None = None) -> None:
            if isinstance(body, str):
                data, kind = body.encode(), "text/plain; charset=utf-8"
            else:
                data, kind = json.dumps(body).encode(), "application/json"
            self.send_response(status)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(data)))
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:  # noqa: N802
            if self.path == "/health":
                self._send(200, "ok")
            else:
                self._send(404, "not found")

        def do_POST(self) -> None:  # noqa: N802
            path = self.path.split("?", 1)[0]
            is_pagerduty = path == "/v2/enqueue"
            is_slack = path.startswith("/slack/") and len(path) > len("/slack/")
            try:
                length = int(self.headers.get("Content-Length") or 0)
            except ValueError:
                length = -1
            if length < 0:
                self.close_connection = True
                self._send(400, "bad Content-Length")
                return
            raw = self.rfile.read(length) if 0 < length <= MAX_BODY else b""
            if not (is_pagerduty or is_slack):
                self._send(404, "not found")
                return
            failure = receiver._take_failure()
            if failure is not None:
                status, retry_after = failure
                headers = {"Retry-After": f"{retry_after:g}"} if retry_after is not None else None
                slack_error = "rate_limited" if status == 429 else "internal_error"
                body: Any = slack_error if is_slack else {"status": "error", "message": f"injected failure {status}"}
                self._send(status, body, headers)
                return
            if length > MAX_BODY:
                receiver._reject(path, 413, None, ["request too large"])
                self._send(
                    413, "request too large" if is_slack else {"status": "invalid event", "message": "Too large"}
                )
                return
            try:
                payload = json.loads(raw)
            except (json.JSONDecodeError, UnicodeDecodeError):
                payload = _UNPARSEABLE
            if is_pagerduty:
                if payload is _UNPARSEABLE:
                    errors = ["Malformed JSON in request body"]
                    receiver._reject(path, 400, raw.decode("utf-8", "replace"), errors)
                    self._send(400, {"status": "invalid event", "message": "Event object is invalid", "errors": errors})
                    return
                self._send(*receiver._pagerduty(path, payload))
            else:
                self._send(*receiver._slack(path, None if payload is _UNPARSEABLE else payload))

    return Handler


_UNPARSEABLE = object()
