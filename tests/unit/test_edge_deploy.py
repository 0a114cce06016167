"""The deployment files: a unit systemd accepts, an install script bash parses, an example config that validates."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import tomllib
from unittest import mock
from collections.abc import Iterator
from pathlib import Path

import pytest

from edge_agent.settings import EdgeSettings, default_device_id, use_config_file

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


def _offline_security_audit() -> bool:
    tool = shutil.which("systemd-analyze")
    return tool is not None and "--offline" in subprocess.run([tool, "--help"], capture_output=True, text=True).stdout


@pytest.mark.skipif(not _offline_security_audit(), reason="needs systemd-analyze 250+ (security --offline)")
def test_systemd_unit_takes_the_hardening_that_costs_the_agent_nothing(tmp_path: Path) -> None:
    unit = (DEPLOY / "eddyline-edge.service").read_text()
    local = tmp_path / "eddyline-edge.service"
    local.write_text(unit.replace("/opt/eddyline-edge/venv/bin/eddyline-edge", "/bin/true"))
    # systemd's own audit: 8.5 "EXPOSED" with NoNewPrivileges and ProtectSystem alone; threshold 50 means 5.0
    audit = ["systemd-analyze", "security", "--offline=yes", "--threshold=50", str(local)]
    done = subprocess.run(audit, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout.strip().splitlines()[-1:]
    # what the agent does must keep working: /dev sensors, /proc of every process, JIT on a Jetson, any socket
    settings = {line.split("=")[0] for line in unit.splitlines() if "=" in line and not line.startswith("#")}
    assert not settings & {"PrivateDevices", "DeviceAllow", "DevicePolicy", "ProtectClock", "ProtectProc", "ProcSubset",
                           "MemoryDenyWriteExecute", "RestrictAddressFamilies", "ProtectKernelLogs"}
    assert "ReadWritePaths=/var/lib/eddyline-edge" in unit


def _can_sandbox() -> bool:
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        return False
    probe = subprocess.run(["unshare", "-m", "--propagation", "private", "true"], capture_output=True)
    return probe.returncode == 0


def _install(sandbox: Path, *args: str, hostname: str = "", machine_id: str = "") -> subprocess.CompletedProcess:
    """install.sh as root in private mount and UTS namespaces, /etc an overlay kept here: the host stays untouched."""
    for folder in ("etc-upper", "etc-work", "shims", "opt/venv/bin"):
        (sandbox / folder).mkdir(parents=True, exist_ok=True)
    calls = sandbox / "calls"
    calls.touch()
    calls.chmod(0o666)  # check-config runs as eddyline
    if machine_id:
        (sandbox / "etc-upper" / "machine-id").write_text(machine_id + "\n")
    logger = f'#!/bin/sh\necho "$(basename "$0") $*" >> {calls}\n'
    scripts = {
        "shims/systemctl": logger,
        "shims/python3.11": "#!/bin/sh\nexit 0\n",  # passes the version check; the venv below already exists
        "opt/venv/bin/pip": logger,
        "opt/venv/bin/python": "#!/bin/sh\nexit 1\n",  # import torch fails
        "opt/venv/bin/eddyline-edge": f'#!/bin/sh\necho "eddyline-edge $(id -un) $*" >> {calls}\n',  # config OK
    }
    for name, text in scripts.items():
        (sandbox / name).write_text(text)
        (sandbox / name).chmod(0o755)
    wheel = sandbox / "eddyline-0.1.0-py3-none-any.whl"
    wheel.write_text("a wheel\n")
    inner = (
        '{ [ -z "$3" ] || hostname "$3"; } && '
        'mount -t overlay overlay -o lowerdir=/etc,upperdir="$0/etc-upper",workdir="$0/etc-work" /etc && '
        'PATH="$0/shims:$PATH" bash "$1" --prefix "$0/opt" --package "$2" "${@:4}"'
    )
    cmd = ["unshare", "-m", "-u", "--propagation", "private", "bash", "-c", inner, str(sandbox),
           str(DEPLOY / "install.sh"), str(wheel), hostname, *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120)


@pytest.fixture
def sandbox() -> Iterator[Path]:
    """A folder the agent's user may enter (pytest's tmp_path is root's alone): check-config runs as eddyline."""
    with tempfile.TemporaryDirectory(prefix="eddyline-install-") as folder:
        Path(folder).chmod(0o755)
        yield Path(folder)


@pytest.mark.skipif(not _can_sandbox(), reason="needs root and unshare to run install.sh in a private /etc")
def test_rerunning_the_install_script_upgrades_and_restarts_and_keeps_the_operators_files(sandbox: Path) -> None:
    first = _install(sandbox)
    assert first.returncode == 0 and "No such file" not in first.stderr, first.stderr  # x86 has no device tree
    etc = sandbox / "etc-upper" / "eddyline-edge"
    with (etc / "edge.toml").open("a") as f:
        f.write("# the operator's edit\n")
    (etc / "env").write_text("EDDYLINE_KAFKA_SASL_PASSWORD=secret\n")
    (sandbox / "calls").unlink()

    again = _install(sandbox)
    assert again.returncode == 0, again.stderr
    calls = (sandbox / "calls").read_text().splitlines()
    # enable --now starts only a stopped unit: the old version would keep running until the next boot
    assert "systemctl restart eddyline-edge.service" in calls, calls
    # as root, a sensor only root can open would pass here and the agent (user eddyline) then fail at start
    assert any(c.startswith("eddyline-edge eddyline check-config") for c in calls), calls
    assert any(c.startswith("pip install") and "--upgrade" in c and "[edge]" in c for c in calls), calls
    assert (etc / "edge.toml").read_text().endswith("# the operator's edit\n")
    assert (etc / "env").read_text() == "EDDYLINE_KAFKA_SASL_PASSWORD=secret\n"
    assert (etc / "env").stat().st_mode & 0o777 == 0o600 and (etc / "edge.toml").stat().st_mode & 0o777 == 0o640
    passwd = (sandbox / "etc-upper" / "passwd").read_text().splitlines()
    assert len([line for line in passwd if line.startswith("eddyline:")]) == 1


def test_an_agent_on_an_image_host_name_defaults_to_an_id_of_its_own(tmp_path: Path) -> None:
    ids = []
    for machine in ("0123456789abcdef0123456789abcdef", "fedcba9876543210fedcba9876543210"):
        (tmp_path / "machine-id").write_text(machine + "\n")
        with mock.patch("socket.gethostname", return_value="raspberrypi"):
            ids.append(default_device_id(tmp_path / "machine-id"))
            assert EdgeSettings(_env_file=None).device_id != "raspberrypi" or not Path("/etc/machine-id").is_file()
    assert ids[0] != ids[1] and all(i.startswith("raspberrypi-") and "0123" not in i for i in ids), ids
    with mock.patch("socket.gethostname", return_value="raspberrypi"):
        assert default_device_id(tmp_path / "missing") == "raspberrypi"  # nothing better to go by
    with mock.patch("socket.gethostname", return_value="pi-kitchen"):
        assert default_device_id(tmp_path / "machine-id") == "pi-kitchen"


def _device_id(sandbox: Path) -> str:
    return tomllib.loads((sandbox / "etc-upper" / "eddyline-edge" / "edge.toml").read_text())["edge"]["device_id"]


@pytest.mark.skipif(not _can_sandbox(), reason="needs root and unshare to run install.sh in a private /etc")
def test_devices_flashed_from_one_image_get_their_own_ids_and_keep_them(sandbox: Path) -> None:
    # every Pi flashed from one image is called raspberrypi: by host name alone a fleet would publish as one device
    machines = ["0123456789abcdef0123456789abcdef", "fedcba9876543210fedcba9876543210"]
    ids = []
    for n, machine in enumerate(machines):
        done = _install(sandbox / f"pi{n}", hostname="raspberrypi", machine_id=machine)
        assert done.returncode == 0, done.stderr
        ids.append(_device_id(sandbox / f"pi{n}"))
    assert ids[0] != ids[1] and all(i.startswith("raspberrypi-") for i in ids), ids
    assert not any(m[:8] in i for m, i in zip(machines, ids)), "the machine id itself must not be published"
    again = _install(sandbox / "pi0", hostname="raspberrypi", machine_id=machines[0])
    assert again.returncode == 0 and _device_id(sandbox / "pi0") == ids[0], again.stderr
    # an agent run without install.sh (docker, by hand) takes the same id by default
    for machine, installed in zip(machines, ids):
        (sandbox / "machine-id").write_text(machine + "\n")
        with mock.patch("socket.gethostname", return_value="raspberrypi"):
            assert default_device_id(sandbox / "machine-id") == installed

    named = _install(sandbox / "kitchen", hostname="pi-kitchen", machine_id=machines[0])
    assert named.returncode == 0 and _device_id(sandbox / "kitchen") == "pi-kitchen", named.stderr
    chosen = _install(sandbox / "chosen", "--device-id", "line-3-press", hostname="raspberrypi")
    assert chosen.returncode == 0 and _device_id(sandbox / "chosen") == "line-3-press", chosen.stderr


@pytest.mark.skipif(not _can_sandbox(), reason="needs root and unshare to run install.sh in a private /etc")
def test_an_upgrade_keeps_the_id_the_device_already_publishes_as(sandbox: Path) -> None:
    # an install made before ids got a machine suffix: its buffer and its seq numbers belong to "raspberrypi"
    etc = sandbox / "etc-upper" / "eddyline-edge"
    etc.mkdir(parents=True)
    (etc / "edge.toml").write_text((DEPLOY / "edge.example.toml").read_text().replace('"pi-kitchen"', '"raspberrypi"'))
    upgrade = _install(sandbox, hostname="raspberrypi", machine_id="0123456789abcdef0123456789abcdef")
    assert upgrade.returncode == 0 and _device_id(sandbox) == "raspberrypi", upgrade.stderr

    (sandbox / "calls").unlink()
    renamed = _install(sandbox, "--device-id", "line-3-press", hostname="raspberrypi")
    assert renamed.returncode == 1 and "already runs as 'raspberrypi'" in renamed.stderr, renamed.stderr
    assert _device_id(sandbox) == "raspberrypi" and not (sandbox / "calls").read_text(), "refused before any change"
