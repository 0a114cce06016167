"""Running the gateway: ``serve`` under uvicorn, and the ``eddyline gateway`` command."""

from __future__ import annotations

import asyncio
import functools
from typing import Annotated, Any

import typer
import uvicorn
from pydantic import ValidationError
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from connectors.config import explain
from connectors.gateway.settings import GatewaySettings
from connectors.kafka import KafkaSettings

WS_FRAME_SLACK = 65_536


def serve(
    host: str | None = None,
    port: int | None = None,
    settings: GatewaySettings | None = None,
    kafka: KafkaSettings | None = None,
) -> None:
    """Serve until SIGINT/SIGTERM, then flush what the producer still holds."""
    from connectors.gateway.app import create_app

    settings = settings or GatewaySettings()
    uvicorn.run(create_app(settings, kafka or KafkaSettings()), **uvicorn_options(settings, host, port))


def uvicorn_options(settings: GatewaySettings, host: str | None = None, port: int | None = None) -> dict[str, Any]:
    """uvicorn's settings for the gateway (``uvicorn.run`` or ``uvicorn.Config``), its limits following ``settings``.

    Parameters
    ----------
    settings
        The gateway settings.
    host, port
        Where to listen; None: the settings'.
    """
    return {
        "host": host or settings.host,
        "port": settings.port if port is None else port,
        "http": functools.partial(HeadDeadline, head_timeout_s=settings.head_timeout_s),
        "lifespan": "on",
        "access_log": False,
        # frames a little over the limit get a 413 answer; far bigger ones close the socket (1009)
        "ws_max_size": 2 * settings.max_body_bytes + WS_FRAME_SLACK,
        "timeout_graceful_shutdown": int(settings.shutdown_flush_s) + 5,
    }


class HeadDeadline(HttpToolsProtocol):
    """uvicorn's HTTP/1.1 protocol, closing a connection that has not sent a whole request head within
    ``head_timeout_s`` of connecting or of its last response. uvicorn (0.55) times a connection only while it is
    idle after a response, and not once a byte of the next request comes: a client sending its headers a byte at a
    time (slowloris), or nothing at all, held its connection for ever, and enough such clients exhausted the server.

    Parameters
    ----------
    args, kwargs
        uvicorn's.
    head_timeout_s
        Seconds a request line and headers may take.
    """

    def __init__(self, *args: Any, head_timeout_s: float, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.head_timeout_s = head_timeout_s
        self._head_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._await_head()

    def on_headers_complete(self) -> None:
        self._stop_waiting()
        super().on_headers_complete()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing():
            self._await_head()

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_waiting()
        super().connection_lost(exc)

    def _await_head(self) -> None:
        self._stop_waiting()
        self._head_timer = self.loop.call_later(self.head_timeout_s, self._head_overdue)

    def _stop_waiting(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_overdue(self) -> None:
        self._head_timer = None
        if self.cycle is None or self.cycle.response_complete:  # else a pipelined request is being answered
            self.transport.close()


def command(
    host: Annotated[str | None, typer.Option(help="Listen address (default: the settings' host, 127.0.0.1).")] = None,
    port: Annotated[int | None, typer.Option(help="Port (default: the gateway settings' port, 8088).")] = None,
) -> None:
    """Run the producer gateway: HTTP POST and WebSocket in, validated events out to Kafka."""
    try:
        settings = GatewaySettings()
        settings.check_usable()
        kafka = KafkaSettings()
    except ValidationError as exc:
        typer.secho(f"error: {explain(exc)}", fg="red", err=True)
        raise typer.Exit(2) from None
    except ValueError as exc:
        typer.secho(f"error: {exc}", fg="red", err=True)
        raise typer.Exit(2) from None
    where = f"http://{host or settings.host}:{settings.port if port is None else port}"
    typer.echo(f"gateway on {where} (spec at {where}/openapi.json; Ctrl-C stops it)", err=True)
    serve(host, port, settings, kafka)
