"""The ``eddyline`` CLI imports a command's module only when that command runs, and still lists every command."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from streams.cli import app
from streams.cli.lazy import LazyCommand

HEAVY = ("numpy", "bytewax", "faust", "torch", "onnxruntime", "mlflow", "confluent_kafka")


def _imported_after(code: str) -> list[str]:
    """Modules of HEAVY and of benchmarks/ that a fresh interpreter has imported after running ``code``."""
    out = subprocess.run(
        [sys.executable, "-c", f"{code}\nimport sys, json\n"
         f"print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in {HEAVY!r} or "
         "m.startswith('benchmarks.'))))"],
        capture_output=True, text=True, timeout=120, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def _invoke(*args: str) -> str:
    return (f"from typer.testing import CliRunner\nfrom streams.cli import app\n"
            f"r = CliRunner().invoke(app, {list(args)!r})\nassert r.exit_code == 0, r.output")


def test_importing_the_cli_and_building_the_app_imports_no_heavy_library() -> None:
    assert _imported_after("import typer, streams.cli\ntyper.main.get_command(streams.cli.app)") == []


@pytest.mark.parametrize("args", [["--help"], ["topics", "--help"], ["edge", "--help"], ["models", "--help"],
                                  ["bench", "--help"]])
def test_listing_commands_imports_none_of_them(args: list[str]) -> None:
    assert _imported_after(_invoke(*args)) == []


def test_the_bench_group_lists_every_benchmark_by_its_entry_point_name() -> None:
    from importlib.metadata import entry_points

    listed = CliRunner().invoke(app, ["bench", "--help"])
    assert listed.exit_code == 0, listed.output
    names = [line.split()[0] for line in listed.output.split("Commands:")[1].splitlines() if line.strip()]
    assert names == sorted(ep.name for ep in entry_points(group="eddyline.bench"))


def test_a_benchmark_is_found_by_its_entry_point_and_only_it_is_imported() -> None:
    imported = _imported_after(_invoke("bench", "detectors", "--help"))
    assert "benchmarks.detectors" in imported
    assert not [m for m in imported if m.startswith("benchmarks.") and m != "benchmarks.detectors"], imported


def _lazy(group: Any, path: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], Any]]:
    found = []
    for name in group.list_commands(None):
        sub = group.get_command(None, name)
        if isinstance(sub, LazyCommand):
            found.append(((*path, name), sub))
        elif hasattr(sub, "list_commands"):
            found += _lazy(sub, (*path, name))
    return found


LAZY = _lazy(typer.main.get_command(app))


def test_the_lazy_commands_include_the_mounted_ones_and_the_benchmarks() -> None:
    names = {" ".join(p) for p, _ in LAZY}
    assert {"edge status", "models list", "gateway", "produce clicks", "bench nab", "bench detectors"} <= names


@pytest.mark.parametrize("path", [p for p, c in LAZY if c.help], ids=" ".join)
def test_a_listed_help_line_is_the_first_paragraph_of_the_command_s_own_help(path: tuple[str, ...]) -> None:
    listed = dict(LAZY)[path]
    real = listed.load()
    assert real.name == path[-1]
    assert " ".join(listed.help.split()) == " ".join(real.help.split("\n\n")[0].split()), (
        f"update the help of `eddyline {' '.join(path)}` in streams/cli/__init__.py's table to the function's docstring")


def test_a_lazy_command_runs_its_real_command_and_its_errors_exit_2() -> None:
    result = CliRunner().invoke(app, ["edge", "rollout", "v2", "--device-class", "rpi4", "--canary", "250%"])
    assert result.exit_code == 2, result.output
    assert "error: canary share 250% is not in (0, 100]; give e.g. --canary 10%" in result.output


@pytest.mark.parametrize("module", ["streams.cli.models", "streams.cli.security"])
def test_the_model_and_security_commands_name_the_click_model_and_quarantine_list_without_the_click_flow(
        module: str) -> None:
    assert _imported_after(f"import {module}") == []


def test_the_start_up_benchmark_s_eager_baseline_loads_what_the_lazy_cli_does_not() -> None:
    from benchmarks.cli_startup import EAGER, LAZY, measure

    eager = _imported_after(EAGER.replace("app()", "pass"))
    assert "numpy" in eager and "benchmarks.nab" in eager
    assert _imported_after(LAZY.replace("app()", "pass")) == []
    result = measure(("topics", "--help"), runs=1)
    assert result["lazy"]["cpu_s_median"] > 0 and result["eager"]["cpu_s_median"] > 0


def test_help_keeps_the_bracketed_config_section_names() -> None:
    result = CliRunner().invoke(app, ["models", "rollback", "--help"])
    assert result.exit_code == 0, result.output
    assert "[mlflow] poll_s" in " ".join(result.output.split())


def _refuses() -> None:
    """Refuses, as a command does when its input is wrong."""
    from streams.cli import CliError

    raise CliError("give --this instead")


def test_a_group_s_lazy_commands_get_the_cli_error_handling_without_asking() -> None:
    from streams.cli.lazy import Lazy, group, lazy_group

    root = group(help="A CLI made as eddyline is.")
    root.add_typer(group(help="A group.", cls=lazy_group(Lazy("refuse", f"{__name__}:_refuses", "Refuses."))),
                   name="plain")
    result = CliRunner().invoke(root, ["plain", "refuse"])
    assert result.exit_code == 2 and "error: give --this instead" in result.output, result.output
