"""The deployment files: a unit systemd accepts, an install script bash parses, an example config that validates."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from edge_agent.settings import EdgeSettings, use_config_file

DEPLOY = Path(__file__).resolve().parents[2] / "edge_agent" / "deploy"


def test_example_config_validates(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EDDYLINE_CONFIG", "unset")
    use_config_file(DEPLOY / "edge.example.toml")
    s = EdgeSettings()
    assert s.device_id == "pi-kitchen" and s.buffer_full_policy == "drop_oldest" and s.buffer_sync == "full"
    assert [src.kind for src in s.sources] == ["proc", "thermal"]
    assert s.inference.send == "auto" and not s.inference.enabled


def test_install_script_parses_and_refuses_without_root() -> None:
    script = DEPLOY / "install.sh"
    assert subprocess.run(["bash", "-n", str(script)]).returncode == 0
    usage = subprocess.run(["bash", str(script), "--help"], capture_output=True, text=True)
    assert usage.returncode == 0 and "--package" in usage.stdout
    bad = subprocess.run(["bash", str(script), "--bogus"], capture_output=True, text=True)
    assert bad.returncode == 1 and "unknown option --bogus" in bad.stderr


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed")
def test_systemd_unit_verifies(tmp_path: Path) -> None:
    unit = (DEPLOY / "eddyline-edge.service").read_text()
    assert "ExecStart=/opt/eddyline-edge/venv/bin/eddyline-edge run --config /etc/eddyline-edge/edge.toml" in unit
    # verify needs the executable to exist: point it at one that does, keep everything else
    local = tmp_path / "eddyline-edge.service"
    local.write_text(unit.replace("/opt/eddyline-edge/venv/bin/eddyline-edge", "/bin/true"))
    out = subprocess.run(["systemd-analyze", "verify", str(local)], capture_output=True, text=True)
    problems = [line for line in out.stderr.splitlines() if "eddyline-edge.service" in line]
    assert not problems, problems


def _can_sandbox() -> bool:
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        return False
    probe = subprocess.run(["unshare", "-m", "--propagation", "private", "true"], capture_output=True)
    return probe.returncode == 0


def _install(sandbox: Path) -> subprocess.CompletedProcess:
    """install.sh as root in a private mount namespace, /etc an overlay kept here: the host stays untouched."""
    for folder in ("etc-upper", "etc-work", "shims", "opt/venv/bin"):
        (sandbox / folder).mkdir(parents=True, exist_ok=True)
    calls = sandbox / "calls"
    logger = f'#!/bin/sh\necho "$(basename "$0") $*" >> {calls}\n'
    scripts = {
        "shims/systemctl": logger,
        "shims/python3.11": "#!/bin/sh\nexit 0\n",  # passes the version check; the venv below already exists
        "opt/venv/bin/pip": logger,
        "opt/venv/bin/python": "#!/bin/sh\nexit 1\n",  # import torch fails
        "opt/venv/bin/eddyline-edge": "#!/bin/sh\nexit 0\n",  # check-config passes
    }
    for name, text in scripts.items():
        (sandbox / name).write_text(text)
        (sandbox / name).chmod(0o755)
    wheel = sandbox / "eddyline-0.1.0-py3-none-any.whl"
    wheel.write_text("a wheel\n")
    inner = (
        'mount -t overlay overlay -o lowerdir=/etc,upperdir="$0/etc-upper",workdir="$0/etc-work" /etc && '
        'PATH="$0/shims:$PATH" bash "$1" --prefix "$0/opt" --package "$2"'
    )
    cmd = ["unshare", "-m", "--propagation", "private", "bash", "-c", inner, str(sandbox), str(DEPLOY / "install.sh"),
           str(wheel)]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120)


@pytest.mark.skipif(not _can_sandbox(), reason="needs root and unshare to run install.sh in a private /etc")
def test_rerunning_the_install_script_upgrades_and_restarts_and_keeps_the_operators_files(tmp_path: Path) -> None:
    first = _install(tmp_path)
    assert first.returncode == 0, first.stderr
    etc = tmp_path / "etc-upper" / "eddyline-edge"
    with (etc / "edge.toml").open("a") as f:
        f.write("# the operator's edit\n")
    (etc / "env").write_text("EDDYLINE_KAFKA_SASL_PASSWORD=secret\n")
    (tmp_path / "calls").unlink()

    again = _install(tmp_path)
    assert again.returncode == 0, again.stderr
    calls = (tmp_path / "calls").read_text().splitlines()
    # enable --now starts only a stopped unit: the old version would keep running until the next boot
    assert "systemctl restart eddyline-edge.service" in calls, calls
    assert any(c.startswith("pip install") and "--upgrade" in c and "[edge]" in c for c in calls), calls
    assert (etc / "edge.toml").read_text().endswith("# the operator's edit\n")
    assert (etc / "env").read_text() == "EDDYLINE_KAFKA_SASL_PASSWORD=secret\n"
    assert (etc / "env").stat().st_mode & 0o777 == 0o600 and (etc / "edge.toml").stat().st_mode & 0o777 == 0o640
    passwd = (tmp_path / "etc-upper" / "passwd").read_text().splitlines()
    assert len([line for line in passwd if line.startswith("eddyline:")]) == 1
