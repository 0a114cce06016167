"""Top-k recommendations for a user from the live click model, over HTTP on loopback.

The click flow's processors live inside the flow's process (a Bytewax worker); each one publishes
itself in ``LIVE`` under its model name when it is created or restored, so a server started in the
same process answers from the model that is learning right now, including a challenger the moment it
is promoted. Requests never wait on the flow: they read the model as it is (Python's GIL keeps each
read of its dictionaries whole).

    GET /recommendations/<user>?k=10[&model=NAME][&include_seen=true]
        -> {"user", "model_name", "model_version", "items": [...]}; items the user was already shown are
           left out unless include_seen is true
    GET /models                                    -> {"models": [{"model_name", "model_version"}]}
    GET /health                                    -> {"status": "ok", "models": N}

``eddyline run clicks`` serves it when ``[recommend] port`` / ``EDDYLINE_RECOMMEND_PORT`` is set, from the moment
the engine starts the flow (``ServingSink``: a side sink, which every engine opens at start-up), so ``/health``
answers before the first event; building the flow's spec starts nothing.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar, Protocol, Self
from urllib.parse import parse_qs, unquote, urlsplit

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from connectors.config import Section

MAX_K = 1000
_TRUE, _FALSE = ("1", "true", "yes"), ("0", "false", "no")


class RecommendSettings(Section):
    """``[recommend]`` / ``EDDYLINE_RECOMMEND_*``: the recommendations API beside the click flow."""

    toml_table: ClassVar[str] = "recommend"
    model_config = SettingsConfigDict(env_prefix="EDDYLINE_RECOMMEND_", extra="forbid")

    port: int | None = Field(None, ge=0, le=65535, description="Serve top-k on HOST:PORT (default: not served).")
    host: str = Field("127.0.0.1", description="Listen address.")


class Recommender(Protocol):
    """What the API needs of a live model: its name and version, and ``top_k(user, k, exclude_seen)`` giving
    (item, score) pairs, best first. The click flow's processors are recommenders.
    """

    model_name: str
    version: str

    def top_k(self, user: str, k: int = 10, exclude_seen: bool = True) -> list[tuple[str, float]]:
        """(item, score) pairs for a user, best first.

        Parameters
        ----------
        user
            Who the recommendations are for.
        k
            How many.
        exclude_seen
            Leave out the items the user was already shown.
        """
        ...


LIVE: dict[str, Recommender] = {}  # model name -> the live processor serving it in this process


class _Handler(BaseHTTPRequestHandler):
    server: RecommendServer

    def log_message(self, format: str, *args: Any) -> None:
        return None  # requests are counted by the caller's metrics, not printed

    def _send(self, status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def do_HEAD(self) -> None:
        self.do_GET()

    def _not_allowed(self) -> None:
        """A known method the API does not take: 405 and what it does take (http.server answered 501 in HTML)."""
        self._send(405, {"error": f"{self.command} is not served; GET /recommendations/<user>?k=10, /models or "
                                  "/health"}, {"Allow": "GET, HEAD"})

    do_POST = do_PUT = do_PATCH = do_DELETE = do_OPTIONS = _not_allowed

    def do_GET(self) -> None:
        url = urlsplit(self.path)
        query = parse_qs(url.query)
        parts = [unquote(p) for p in url.path.split("/") if p]
        live = self.server.live
        if parts == ["health"]:
            return self._send(200, {"status": "ok", "models": len(live)})
        if parts == ["models"]:
            return self._send(200, {"models": [{"model_name": n, "model_version": m.version}
                                               for n, m in sorted(live.items())]})
        if len(parts) != 2 or parts[0] != "recommendations":
            return self._send(404, {"error": "unknown path; use /recommendations/<user>?k=10, /models or /health"})
        try:
            k = int(query.get("k", ["10"])[0])
        except ValueError:
            return self._send(400, {"error": "k must be an integer"})
        if not 1 <= k <= MAX_K:
            return self._send(400, {"error": f"k must be between 1 and {MAX_K}"})
        include = query.get("include_seen", ["false"])[0].lower()
        if include not in _TRUE + _FALSE:
            return self._send(400, {"error": "include_seen must be true or false"})
        name = query.get("model", [None])[0]
        if name is None:
            if len(live) != 1:
                return self._send(400 if live else 503, {
                    "error": "name the model with ?model=NAME" if live else "no live model in this process yet",
                    "models": sorted(live)})
            name = next(iter(live))
        model = live.get(name)
        if model is None:
            return self._send(404, {"error": f"no live model {name!r}", "models": sorted(live)})
        version = model.version
        items = model.top_k(parts[1], k, exclude_seen=include in _FALSE)
        return self._send(200, {"user": parts[1], "model_name": name, "model_version": version,
                                "items": [{"item_id": i, "score": s} for i, s in items]})


class RecommendServer(ThreadingHTTPServer):
    """Serves ``live`` (``LIVE`` by default) on 127.0.0.1; port 0 picks a free port.

    Parameters
    ----------
    port
        The port; 0 for any free one (read it from ``server_address``).
    host
        The listen address.
    live
        Model name -> recommender; the process's ``LIVE`` registry by default.
    """

    daemon_threads = True

    def __init__(self, port: int = 0, host: str = "127.0.0.1", live: dict[str, Recommender] | None = None) -> None:
        super().__init__((host, port), _Handler)
        self.live = LIVE if live is None else live
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> RecommendServer:
        self._thread = threading.Thread(target=self.serve_forever, name="recommend-api", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self.shutdown()
        self.server_close()
        if self._thread is not None:
            self._thread.join(5)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def serve(port: int, host: str = "127.0.0.1") -> RecommendServer:
    """Start the API in a background thread of this process (next to the click flow) and return it.

    Parameters
    ----------
    port, host
        As for ``RecommendServer``.
    """
    return RecommendServer(port, host).start()


_serving: dict[tuple[str, int], RecommendServer] = {}


def serve_from_settings(settings: RecommendSettings | None = None) -> RecommendServer | None:
    """The API on the configured port, started once per process however often a flow is built; None
    when no port is configured.

    Parameters
    ----------
    settings
        ``[recommend]`` settings; read from the file and environment when not given.
    """
    settings = settings or RecommendSettings()
    if settings.port is None:
        return None
    where = (settings.host, settings.port)
    if where not in _serving:
        try:
            _serving[where] = serve(settings.port, settings.host)
        except OSError as exc:
            raise ValueError(f"the recommendations API cannot listen on {settings.host}:{settings.port} ({exc}); "
                             "set EDDYLINE_RECOMMEND_PORT (or [recommend] port) to a free port") from exc
    return _serving[where]


class ServingSink:
    """A side sink whose only work is to start the API when the engine opens the flow's sinks (at start-up,
    once per worker; the API once per process); it takes no emits, since the processors publish in ``LIVE``.

    Parameters
    ----------
    settings
        ``[recommend]`` settings, read when the engine opens the sink.
    """

    def __init__(self, settings: RecommendSettings | None = None) -> None:
        self.server = serve_from_settings(settings)

    def write(self, emits: Any) -> None:
        """Nothing to write: the processors publish their models in ``LIVE``.

        Parameters
        ----------
        emits
            The flow's emits, ignored.
        """

    def close(self) -> None:
        pass  # the API serves the process's live models for as long as the process runs
