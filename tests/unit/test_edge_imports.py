"""The agent stays light: importing it, or loading what ``run`` loads, pulls in no heavy library."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
HEAVY = [
    "torch",
    "transformers",
    "faster_whisper",
    "bytewax",
    "faust",
    "river",
    "numba",
    "numpy",
    "onnxruntime",
    "typer",
]


def loaded_after(code: str) -> set[str]:
    out = subprocess.run(
        [sys.executable, "-c", f"{code}\nimport sys, json; print(json.dumps(sorted(sys.modules)))"],
        capture_output=True,
        text=True,
        cwd=REPO,
        check=True,
    ).stdout
    return {m.split(".")[0] for m in json.loads(out.splitlines()[-1])}


def test_import_edge_agent_pulls_nothing_heavy() -> None:
    assert not loaded_after("import edge_agent") & set(HEAVY)


def test_everything_run_loads_pulls_nothing_heavy() -> None:
    code = (
        "import edge_agent.cli, edge_agent.agent, edge_agent.buffer, edge_agent.sender, edge_agent.metrics\n"
        "from edge_agent.sources import simulated, sysfs, procfs, replay, command, plugins"
    )
    loaded = loaded_after(code)
    assert not loaded & set(HEAVY), loaded & set(HEAVY)
    assert "confluent_kafka" in loaded  # the check above really ran the agent's imports


def test_the_lean_runtime_leaves_pydantic_out() -> None:
    """``run`` execs into ``edge_agent.runner``: validation's pydantic (about 20 MB) stays behind."""
    code = (
        "import edge_agent.runner, edge_agent.agent\n"
        "from edge_agent.sources import simulated, sysfs, procfs, replay, command, plugins"
    )
    loaded = loaded_after(code)
    assert not loaded & {"pydantic", "pydantic_settings", "pydantic_core"}
    assert not loaded & set(HEAVY)
