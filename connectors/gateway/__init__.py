"""The producer gateway: HTTP POST and WebSocket endpoints that validate events and publish them to Kafka.

``create_app`` builds the ASGI application, ``serve`` runs it with uvicorn, ``command`` is the
``eddyline gateway`` CLI command. Settings: ``[gateway]`` (``GatewaySettings``) and ``[kafka]``.
"""

from connectors.gateway.settings import GatewaySettings

__all__ = ["GatewaySettings", "command", "create_app", "serve"]


def __getattr__(name: str):  # the web stack loads only when the gateway is used
    if name == "create_app":
        from connectors.gateway.app import create_app

        return create_app
    if name in ("serve", "command"):
        from connectors.gateway import server

        return getattr(server, name)
    raise AttributeError(name)
