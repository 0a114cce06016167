"""The Docker stack's files: Compose validates them, and what they refer to exists.

No Docker engine runs here, so nothing is built or started: Compose's own ``config`` validates the file
(the v2 plugin when installed, else Debian's docker-compose 1.29), and the rest is checked in Python.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from streams.flows import FLOWS, SERVICES as RUNNABLE_SERVICES

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
DOCKER = ROOT / "docker"
COMPOSE = DOCKER / "compose.yaml"
SERVICES = {"kafka", "kafka-init", "influxdb", "prometheus", "grafana", "flow-anomaly", "flow-notify",
            "gateway", "live", "edge-sim"}


def compose_command() -> list[str] | None:
    docker = shutil.which("docker")
    if docker and subprocess.run([docker, "compose", "version"], capture_output=True, check=False).returncode == 0:
        return [docker, "compose"]
    legacy = shutil.which("docker-compose")
    return [legacy] if legacy else None


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


def test_compose_config_validates_the_file() -> None:
    cmd = compose_command()
    if cmd is None:
        pytest.skip("neither `docker compose` nor `docker-compose` is installed (apt-get install docker-compose)")
    done = subprocess.run(
        [*cmd, "-f", str(COMPOSE), "--profile", "edge", "config"],
        capture_output=True,
        text=True,
        check=False,
        cwd=DOCKER,
        env={"PATH": "/usr/bin:/bin:/usr/local/bin"},
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    resolved = yaml.safe_load(done.stdout)
    assert set(resolved["services"]) == SERVICES
    gateway_env = resolved["services"]["gateway"]["environment"]
    assert gateway_env["EDDYLINE_KAFKA_BOOTSTRAP_SERVERS"] == "kafka:9092"  # the shared block merged in
    assert gateway_env["EDDYLINE_GATEWAY_TOKENS"].startswith("{")


def test_compose_rejects_a_broken_file(tmp_path: Path) -> None:
    cmd = compose_command()
    if cmd is None:
        pytest.skip("neither `docker compose` nor `docker-compose` is installed")
    broken = tmp_path / "compose.yaml"
    broken.write_text(COMPOSE.read_text().replace("    restart: unless-stopped\n", "    restart: [1, 2]\n", 1))
    done = subprocess.run(
        [*cmd, "-f", str(broken), "config"], capture_output=True, text=True, cwd=tmp_path, timeout=60, check=False
    )
    assert done.returncode != 0


def test_every_published_port_binds_to_loopback(compose) -> None:
    for name, svc in compose["services"].items():
        for port in svc.get("ports", []):
            assert str(port).startswith("127.0.0.1:"), f"{name} publishes {port} beyond loopback"


def test_mounted_files_exist_and_grafana_gets_provisioning_and_dashboards(compose) -> None:
    for name, svc in compose["services"].items():
        for vol in svc.get("volumes", []):
            source = vol.split(":")[0]
            if source.startswith("."):
                assert (DOCKER / source).exists(), f"{name} mounts missing {source}"
    grafana = compose["services"]["grafana"]["volumes"]
    assert "./grafana/provisioning:/etc/grafana/provisioning:ro" in grafana
    assert "./grafana/dashboards:/var/lib/grafana/dashboards:ro" in grafana
    provider = yaml.safe_load((DOCKER / "grafana/provisioning/dashboards/eddyline.yml").read_text())
    assert provider["providers"][0]["options"]["path"] == "/var/lib/grafana/dashboards"
    assert len(list((DOCKER / "grafana/dashboards").glob("*.json"))) == 4


def test_flows_are_registered_and_kafka_runs_in_kraft_mode(compose) -> None:
    services = compose["services"]
    runs = [svc["command"] for svc in services.values() if svc.get("command", [None])[0] == "run"]
    assert runs
    for command in runs:
        registered = command[1] in FLOWS or command[1] in RUNNABLE_SERVICES
        assert registered, f"`eddyline run {command[1]}` is not a registered flow"
    kafka = services["kafka"]["environment"]
    assert kafka["KAFKA_PROCESS_ROLES"] == "broker,controller"
    assert "KAFKA_ZOOKEEPER_CONNECT" not in kafka
    assert services["kafka"]["image"].startswith("apache/kafka:")
    assert services["influxdb"]["image"].startswith("influxdb:2")


def test_prometheus_scrapes_services_of_the_stack_on_their_metrics_ports(compose) -> None:
    config = yaml.safe_load((DOCKER / "prometheus/prometheus.yml").read_text())
    ports = {"flow-anomaly": "9100", "flow-notify": "9100", "edge-sim": "9101"}
    targets = [t for job in config["scrape_configs"] for sc in job["static_configs"] for t in sc["targets"]]
    for target in targets:
        host, port = target.split(":")
        if host == "localhost":
            continue
        assert host in compose["services"], f"scrape target {target} is not a service"
        assert ports[host] == port
    assert set(ports) <= {t.split(":")[0] for t in targets}
    env = compose["services"]["edge-sim"]["environment"]
    assert env["EDDYLINE_EDGE_METRICS_PORT"] == "9101" and env["EDDYLINE_EDGE_METRICS_HOST"] == "0.0.0.0"


@pytest.mark.parametrize("dockerfile", ["platform.Dockerfile", "edge.Dockerfile"])
def test_dockerfile_copy_sources_exist(dockerfile: str) -> None:
    text = (DOCKER / dockerfile).read_text()
    for line in text.splitlines():
        m = re.match(r"COPY (?!--from)(\S+)", line)
        if m:
            assert (ROOT / m.group(1)).exists(), f"{dockerfile}: COPY {m.group(1)} does not exist"
    assert (DOCKER / f"{dockerfile}.dockerignore").is_file()


def test_edge_image_installs_only_the_light_extra() -> None:
    text = (DOCKER / "edge.Dockerfile").read_text()
    assert "pip install '.[edge]'" in text
    assert "platform" not in re.findall(r"pip install (.*)", text)[0]
    copied = set(re.findall(r"^COPY (\S+)", text, re.MULTILINE))
    assert not {"streams", "models"} & copied, "the edge image must not carry the platform's packages"
