"""``python -m connectors.gateway [--host H] [--port P]``: the gateway without the full CLI."""

import typer

from connectors.gateway.server import command

typer.run(command)
