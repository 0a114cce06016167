"""An option given twice is refused with what to do, not silently resolved to its last value."""

from __future__ import annotations

from typing import Annotated

import typer
from typer.testing import CliRunner

from streams.cli import app
from streams.cli.lazy import group


def test_a_repeated_option_is_refused_naming_both_values() -> None:
    result = CliRunner().invoke(app, ["produce", "sensors", "--devices", "3", "--devices=4", "--count", "1"])
    assert result.exit_code == 2
    assert "'--devices': given 2 times (--devices 3, then --devices=4); give it once" in result.output
    assert "Traceback" not in result.output


def test_a_flag_and_its_negation_together_are_refused() -> None:
    result = CliRunner().invoke(app, ["demo", "--calls", "--no-calls"])
    assert result.exit_code == 2 and "(--calls, then --no-calls)" in result.output


def test_lazy_commands_are_checked_too() -> None:
    result = CliRunner().invoke(app, ["models", "rebuild-onnx", "--model", "a", "--model", "b"])
    assert result.exit_code == 2 and "(--model a, then --model b)" in result.output


def test_options_given_once_and_options_meant_to_repeat_pass() -> None:
    result = CliRunner().invoke(app, ["run", "anomaly", "--engine", "flink"])
    assert result.exit_code == 2 and "unknown engine 'flink'" in result.output  # parsed; the command refused it
    tags = group(help="A group with an option that repeats.")

    @tags.command()
    def tag(name: Annotated[list[str], typer.Option()], after: Annotated[str, typer.Argument()] = "") -> None:
        typer.echo(",".join(name) + "|" + after)

    @tags.command()
    def other() -> None:  # two commands, so that the group resolves a subcommand
        pass

    result = CliRunner().invoke(tags, ["tag", "--name", "a", "--name", "b", "--", "--name"])
    assert result.exit_code == 0 and result.output.strip() == "a,b|--name"
