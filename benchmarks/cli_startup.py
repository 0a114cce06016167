"""How long an ``eddyline`` command takes to start: command modules imported lazily (as shipped) against every
command module imported at start (how the CLI started before), in the same run.

Each case runs as a fresh interpreter, as a shell would start it, alternating the two ways; CPU (user + system
of the child) is the figure to compare on a shared machine, wall time is reported beside it. The eager baseline
is the shipped app with every lazy command (the table's and the benchmarks' entry points) loaded before it runs.
"""

from __future__ import annotations

import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Annotated, Any

import typer

from benchmarks.report import machine, write_json

CASES = (("--help",), ("topics", "--help"), ("edge", "status", "--help"), ("bench", "--help"))
LAZY = "import sys\nfrom streams.cli import app\nsys.argv[0] = 'eddyline'\napp()"
EAGER = ("import sys, typer\nfrom streams.cli import app\n"
         "def load(group):\n"
         "    for name in group.list_commands(None):\n"
         "        sub = group.get_command(None, name)\n"
         "        load(sub) if hasattr(sub, 'list_commands') else getattr(sub, 'load', lambda: sub)()\n"
         "load(typer.main.get_command(app))\n" + LAZY)


def _once(code: str, args: tuple[str, ...]) -> tuple[float, float]:
    """Wall and CPU seconds of one fresh interpreter running ``code`` with ``args``."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", code, *args], check=True, capture_output=True, timeout=120)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def measure(args: tuple[str, ...], runs: int) -> dict[str, Any]:
    """Median and minimum wall and CPU seconds of ``eddyline ARGS``, lazy and eager, over ``runs`` runs each.

    Parameters
    ----------
    args
        The command line after ``eddyline``.
    runs
        Runs of each way, alternated.
    """
    samples: dict[str, list[tuple[float, float]]] = {"lazy": [], "eager": []}
    for _ in range(runs):
        samples["eager"].append(_once(EAGER, args))
        samples["lazy"].append(_once(LAZY, args))
    out: dict[str, Any] = {"command": "eddyline " + " ".join(args), "runs": runs}
    for way, got in samples.items():
        walls, cpus = [w for w, _ in got], [c for _, c in got]
        out[way] = {"cpu_s_median": round(statistics.median(cpus), 3), "cpu_s_min": round(min(cpus), 3),
                    "wall_s_median": round(statistics.median(walls), 3), "wall_s_min": round(min(walls), 3)}
    out["cpu_ratio_lazy_to_eager"] = round(out["lazy"]["cpu_s_median"] / out["eager"]["cpu_s_median"], 3)
    return out


def command(
    runs: Annotated[int, typer.Option(help="Runs of each way per command.")] = 5,
    json_path: Annotated[Path | None, typer.Option("--json", help="Write the results here.")] = None,
) -> None:
    """Start-up time of eddyline commands: lazy command modules against all imported at start, in one run."""
    results = [measure(args, runs) for args in CASES]
    for r in results:
        typer.echo(f"{r['command']}: CPU {r['lazy']['cpu_s_median']:.2f} s lazy vs {r['eager']['cpu_s_median']:.2f} s "
                   f"eager (median of {runs}); wall {r['lazy']['wall_s_median']:.2f} vs {r['eager']['wall_s_median']:.2f} s")
    write_json(json_path, {"results": results, "machine": machine()})


if __name__ == "__main__":
    typer.run(command)
