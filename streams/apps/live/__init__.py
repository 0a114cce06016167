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
    """Serve the live page for the output topics of the configured Kafka (EDDYLINE_KAFKA_* or eddyline.toml) until Ctrl-C."""
    import threading

    from connectors.kafka import KafkaSettings
    from streams.apps.live.server import LivePage

    page = LivePage(KafkaSettings(), host, port).start()
    typer.echo(f"live page on {page.url} (Ctrl-C stops it)", err=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        pass
    finally:
        page.stop()
