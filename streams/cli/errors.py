"""How an ``eddyline`` command fails: one line that says what to do, and an exit status a supervisor can act on."""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import wraps
from pathlib import Path
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


@contextmanager
def until_interrupted(stopped: str) -> Iterator[None]:
    """Run a command that runs until Ctrl-C, then say ``stopped`` (where its state is kept): an interrupt is how
    it is meant to end, not a failure. An engine that runs the flow in its own runtime (Bytewax) raises the
    interrupt again as its own error, which is the same Ctrl-C and must not end in a backtrace.

    Parameters
    ----------
    stopped
        The line to print once it stopped.
    """
    try:
        yield
    except BaseException as exc:
        cause: BaseException | None = exc
        while cause is not None and not isinstance(cause, KeyboardInterrupt):
            cause = cause.__cause__
        if cause is None:
            raise
        typer.echo(stopped, err=True)


def output_file(path: Path | None) -> Path | None:
    """An option's callback for a file a command writes when its run is done (a summary, a producer's truth): its
    folder is made now, and a path that cannot hold the file is refused now, not after the run (a producer's events
    are sent by then, and running it again sends them twice).

    Parameters
    ----------
    path
        The path given, if any.
    """
    if path is None:
        return None
    if path.is_dir():
        raise typer.BadParameter(f"{path} is a folder; give the path of a file in it")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:  # a file where a folder of the path must be, or no permission
        why = "a file of that name is in the way" if isinstance(exc, FileExistsError | NotADirectoryError) else (
            exc.strerror or str(exc))
        raise typer.BadParameter(f"cannot make the folder {path.parent} ({why}); give a path in a folder you can "
                                 "write to") from None
    try:  # only writing tells a read-only disk or someone else's folder; the file made to find out is gone at once
        if path.exists():
            path.open("a").close()
        else:
            with tempfile.TemporaryFile(dir=path.parent):
                pass
    except OSError as exc:
        raise typer.BadParameter(f"cannot write {path} ({exc.strerror or exc}); give a path in a folder you can "
                                 "write to") from None
    return path


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
