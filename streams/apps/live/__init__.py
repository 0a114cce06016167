"""The live page: anomalies, open alerts, sentiment per conversation, model quality and drift, pushed over WebSocket.

``LivePage(settings, host, port).start()`` serves it (``eddyline demo`` does); ``command`` is ``eddyline live``.
The server's modules load on first use, so that importing this package (the CLI does) stays cheap.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

import typer

if TYPE_CHECKING:
    from streams.apps.live.server import LivePage

__all__ = ["LivePage", "command"]


def __getattr__(name: str) -> Any:
    if name == "LivePage":
        from streams.apps.live.server import LivePage

        return LivePage
    raise AttributeError(name)


def command(
    host: Annotated[str, typer.Option(help="Listen address (loopback unless you mean to expose it).")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port; 0 picks a free one.")] = 8050,
) -> None:
    """Serve the live page for the output topics of the configured Kafka (EDDYLINE_KAFKA_* or eddyline.toml) until Ctrl-C.

    It prints a one-time login link; scripts send ``[live] token`` / EDDYLINE_LIVE_TOKEN as a bearer token.
    """
    import threading

    from connectors.kafka import KafkaSettings
    from streams.apps.live.auth import LiveSettings
    from streams.apps.live.server import LivePage

    live = LiveSettings()
    token = live.token.get_secret_value() if live.token else None
    page = LivePage(KafkaSettings(), host, port, token=token, origins=live.origins,
                    login_code_ttl_s=live.login_code_ttl_s).start()
    typer.echo(f"live page on {page.url} (Ctrl-C stops it); log in once with {page.login_url()}", err=True)
    if token is None:
        typer.echo("scripts: set EDDYLINE_LIVE_TOKEN (or [live] token) and send 'Authorization: Bearer <token>'",
                   err=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        pass
    finally:
        page.stop()
