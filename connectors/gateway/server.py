"""Running the gateway: ``serve`` under uvicorn, and the ``eddyline gateway`` command."""

from __future__ import annotations

from typing import Annotated

import typer
from pydantic import ValidationError

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
    import uvicorn

    from connectors.gateway.app import create_app

    settings = settings or GatewaySettings()
    app = create_app(settings, kafka or KafkaSettings())
    uvicorn.run(
        app,
        host=host or settings.host,
        port=settings.port if port is None else port,
        lifespan="on",
        access_log=False,
        # frames a little over the limit get a 413 answer; far bigger ones close the socket (1009)
        ws_max_size=2 * settings.max_body_bytes + WS_FRAME_SLACK,
        timeout_graceful_shutdown=int(settings.shutdown_flush_s) + 5,
    )


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
