"""How an ``eddyline`` command fails: one line that says what to do, and an exit status a supervisor can act on."""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import TYPE_CHECKING, Any, TypeVar

import typer

from streams import logs

if TYPE_CHECKING:
    from connectors.kafka import KafkaSettings

F = TypeVar("F", bound=Callable[..., Any])


BROKER_ANSWER_S = 5.0  # how long a command a person runs waits for a broker to answer at all


class CliError(Exception):
    """An error the user can act on: the message says what to do."""


def friendly(fn: F) -> F:
    """Turn known failures into one line that says what to do. A mistake in the command or its settings exits 2
    (a supervisor must not restart it: nothing changes until someone edits it); a broker that does not answer
    exits 1, because it may be back in a minute and a restart is what the operator wants."""

    @wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        logs.setup()
        try:
            return fn(*args, **kwargs)
        except CliError as exc:
            typer.secho(f"error: {exc}", fg="red", err=True)
            raise typer.Exit(2) from None
        except (TimeoutError, ConnectionError) as exc:
            typer.secho(
                f"error: {exc}\nIs Kafka reachable? Start one with `eddyline broker` or set "
                "EDDYLINE_KAFKA_BOOTSTRAP_SERVERS (or [kafka] bootstrap_servers in eddyline.toml).",
                fg="red",
                err=True,
            )
            raise typer.Exit(1) from None
        except OSError as exc:  # a path the command was given or configured with: a folder, unreadable, missing
            if exc.filename is None:
                typer.secho(f"error: {exc}", fg="red", err=True)
                raise typer.Exit(1) from None
            typer.secho(f"error: {exc.strerror or exc}: {exc.filename}; check the path and its permissions, "
                        "then run the command again", fg="red", err=True)
            raise typer.Exit(2) from None
        except ValueError as exc:  # settings (a pydantic ValidationError): name the key and what to change
            from pydantic import ValidationError
            from pydantic_settings import SettingsError

            from connectors.config import explain

            known = isinstance(exc, ValidationError | SettingsError)
            typer.secho(f"error: {explain(exc) if known else exc}", fg="red", err=True)
            raise typer.Exit(2) from None

    return wrapper  # type: ignore[return-value]


def answering_kafka(timeout: float | None = None) -> KafkaSettings:
    """The Kafka settings, once a broker at their bootstrap servers answers; a ``ConnectionError`` within ``timeout``
    seconds where none does (``friendly`` then says what to do). A command a person runs should fail in seconds,
    not after the 30 s a flow started before its broker waits for topics (``connectors.kafka.create_topics``).

    Parameters
    ----------
    timeout
        Seconds to wait for an answer (default ``BROKER_ANSWER_S``).
    """
    from connectors.kafka import KafkaSettings, wait_for_broker

    settings = KafkaSettings()
    wait_for_broker(settings, BROKER_ANSWER_S if timeout is None else timeout)
    return settings
