"""Installing the agent alone, as on a Raspberry Pi, pulls in no heavy library and gives a working command.

Builds a fresh virtual environment (no system site-packages) and installs the project with its ``edge``
extra by normal dependency resolution from the configured package index. Marked ``e2e`` so that a quick
run can deselect it (``-m "not e2e"``); ``make test`` runs it.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
FORBIDDEN = {
    "torch",
    "transformers",
    "faster-whisper",
    "bytewax",
    "faust",
    "faust-streaming",
    "river",
    "numba",
    "numpy",
    "mlflow",
    "mlflow-skinny",
}
PACKAGES = ["streams", "models", "schemas", "connectors", "edge_agent"]


def _source_tree(dest: Path) -> Path:
    """A copy of what the build needs, so the build leaves nothing behind in the working tree."""
    dest.mkdir()
    shutil.copy2(REPO / "pyproject.toml", dest)
    readme = REPO / "README.md"
    if readme.exists():
        shutil.copy2(readme, dest)
    else:
        (dest / "README.md").write_text("eddyline\n")
    for pkg in PACKAGES:
        shutil.copytree(REPO / pkg, dest / pkg, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    return dest


def test_edge_extra_installs_light(tmp_path: Path) -> None:
    src = _source_tree(tmp_path / "src")
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    py = venv / "bin" / "python"
    pip = subprocess.run(
        [str(py), "-m", "pip", "install", "--disable-pip-version-check", "--no-input", "-q", f"{src}[edge]"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert pip.returncode == 0, pip.stdout[-3000:] + pip.stderr[-3000:]

    listed = subprocess.run(
        [str(py), "-m", "pip", "list", "--format=json"], capture_output=True, text=True, check=True
    ).stdout
    names = {p["name"].lower().replace("_", "-") for p in json.loads(listed)}
    assert {"eddyline", "confluent-kafka", "fastavro", "pydantic-settings", "prometheus-client"} <= names
    assert not names & FORBIDDEN, f"the edge install pulled in {sorted(names & FORBIDDEN)}"

    # The installed command works there: it validates a config and reads a real source once.
    config = tmp_path / "edge.toml"
    config.write_text(
        f'[edge]\ndevice_id = "pi-1"\nbuffer_path = "{tmp_path / "buf.sqlite"}"\n'
        '[[edge.sources]]\nkind = "proc"\n[[edge.sources]]\nkind = "simulated"\n'
        '[kafka]\nbootstrap_servers = "127.0.0.1:9092"\n'
    )
    check = subprocess.run(
        [str(venv / "bin" / "eddyline-edge"), "check-config", "--config", str(config)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert check.returncode == 0, check.stderr
    assert "config OK: device pi-1" in check.stdout
