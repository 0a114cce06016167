"""Exit codes a supervisor acts on: 2 for what only an edit can fix, 1 for a broker that may come back."""

from __future__ import annotations

import typer
from typer.testing import CliRunner

from streams.cli import CliError, friendly


def _app(exc: Exception) -> typer.Typer:
    app = typer.Typer()

    @app.command()
    @friendly
    def go() -> None:
        raise exc

    return app


def test_an_unreachable_broker_exits_1_so_that_a_supervisor_restarts_the_flow() -> None:
    result = CliRunner().invoke(_app(TimeoutError("creating topic 'alerts': no answer from 127.0.0.1:1 in 30 s")), [])
    assert result.exit_code == 1
    assert "no answer from 127.0.0.1:1" in result.output and "Is Kafka reachable?" in result.output


def test_a_mistake_in_the_command_exits_2_and_says_what_to_do() -> None:
    result = CliRunner().invoke(_app(CliError("no such flow 'anomly'; try `eddyline run --help`")), [])
    assert result.exit_code == 2
    assert "eddyline run --help" in result.output
