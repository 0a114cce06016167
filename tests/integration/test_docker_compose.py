"""The Docker stack's files: Compose validates them, and what they refer to exists.

No Docker engine runs here, so nothing is built or started: Compose's own ``config`` validates the file
(the v2 plugin when installed, else Debian's docker-compose 1.29), and the rest is checked in Python.
"""

from __future__ import annotations

import re
import shutil
import socket
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml

from streams.flows import FLOWS, SERVICES as RUNNABLE_SERVICES

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
DOCKER = ROOT / "docker"
COMPOSE = DOCKER / "compose.yaml"
SERVICES = {"kafka", "kafka-init", "influxdb", "prometheus", "grafana", "flow-anomaly", "flow-fleet", "flow-notify",
            "gateway", "live", "edge-sim"}


def compose_command() -> list[str] | None:
    docker = shutil.which("docker")
    if docker and subprocess.run([docker, "compose", "version"], capture_output=True, check=False).returncode == 0:
        return [docker, "compose"]
    legacy = shutil.which("docker-compose")
    return [legacy] if legacy else None


SECRETS = {
    "INFLUXDB_TOKEN": "influx-token-for-the-compose-test",
    "INFLUXDB_PASSWORD": "influx-password-for-the-test",
    "GRAFANA_PASSWORD": "grafana-password-for-the-test",
    "EDDYLINE_GATEWAY_TOKENS": '{"edge-fleet": "gateway-token-for-the-compose-test"}',
    "EDDYLINE_LIVE_TOKEN": "live-token-for-the-compose-test",
    "PAGERDUTY_ROUTING_KEY": "off",
    "SLACK_WEBHOOK_URL": "https://hooks.example.invalid/services/T0/B0/compose-test",
}
IMAGE_USERS = {"kafka": "1000:1000", "influxdb": "1000:1000", "prometheus": "65534:65534", "grafana": "472:0"}
# What a health check can run in each image: the eddyline images (python:3.11-slim) have neither curl nor wget,
# Prometheus's busybox and Grafana's Alpine have wget and no curl.
IMAGE_TOOLS = {
    "eddyline/platform": "/opt/eddyline/bin/python",
    "eddyline/edge": "/opt/eddyline-edge/bin/python",
    "prom/prometheus": "wget",
    "grafana/grafana": "wget",
    "influxdb": "influx",
    "apache/kafka": "/opt/kafka/bin/kafka-broker-api-versions.sh",
}


def compose_config(file: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    cmd = compose_command()
    if cmd is None:
        pytest.skip("neither `docker compose` nor `docker-compose` is installed (apt-get install docker-compose)")
    return subprocess.run(
        [*cmd, "-f", str(file), "--profile", "edge", "config"],
        capture_output=True,
        text=True,
        check=False,
        cwd=file.parent,
        env={"PATH": "/usr/bin:/bin:/usr/local/bin", **env},
        timeout=60,
    )


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


def test_compose_config_validates_the_file() -> None:
    done = compose_config(COMPOSE, SECRETS)
    assert done.returncode == 0, done.stderr
    resolved = yaml.safe_load(done.stdout)
    assert set(resolved["services"]) == SERVICES
    gateway_env = resolved["services"]["gateway"]["environment"]
    assert gateway_env["EDDYLINE_KAFKA_BOOTSTRAP_SERVERS"] == "kafka:9092"  # the shared block merged in
    assert gateway_env["EDDYLINE_GATEWAY_TOKENS"] == SECRETS["EDDYLINE_GATEWAY_TOKENS"]
    assert resolved["services"]["live"]["environment"]["EDDYLINE_LIVE_TOKEN"] == SECRETS["EDDYLINE_LIVE_TOKEN"]
    assert resolved["services"]["influxdb"]["environment"]["DOCKER_INFLUXDB_INIT_ADMIN_TOKEN"] == SECRETS["INFLUXDB_TOKEN"]
    notify_env = resolved["services"]["flow-notify"]["environment"]
    assert notify_env["EDDYLINE_PAGERDUTY_ROUTING_KEY"] == "off"
    assert notify_env["EDDYLINE_SLACK_WEBHOOK_URL"] == SECRETS["SLACK_WEBHOOK_URL"]


def test_off_turns_an_alert_channel_off_and_a_value_turns_it_on() -> None:
    from connectors.pagerduty import PagerDutySettings
    from connectors.slack import SlackSettings

    assert not PagerDutySettings(routing_key="off").enabled and not SlackSettings(webhook_url="off").enabled
    assert PagerDutySettings(routing_key="0123456789abcdef0123456789abcdef").enabled
    assert SlackSettings(webhook_url=SECRETS["SLACK_WEBHOOK_URL"]).enabled


@pytest.mark.parametrize("secret", sorted(SECRETS))
def test_an_unset_secret_stops_compose_with_a_message_that_says_what_to_set(secret: str) -> None:
    done = compose_config(COMPOSE, {k: v for k, v in SECRETS.items() if k != secret})
    assert done.returncode != 0
    assert f"set {secret} (" in done.stderr and "docker/README.md" in done.stderr, done.stderr


def test_no_secret_has_a_default(compose) -> None:
    text = COMPOSE.read_text()
    for secret in SECRETS:
        assert f"${{{secret}:?" in text and f"${{{secret}:-" not in text, secret
    assert "dev-password" not in text and "dev-token" not in text


def test_every_service_runs_as_a_non_root_user(compose) -> None:
    for name, svc in compose["services"].items():
        user = str(svc.get("user", ""))
        assert user and user.split(":")[0] not in ("0", "root"), f"{name} runs as root (user: {user!r})"
        if name in IMAGE_USERS:
            assert user == IMAGE_USERS[name], f"{name} should run as its image's own user"
        else:
            assert user == "10001:10001", f"{name}: the eddyline images' user is 10001 (useradd in the Dockerfiles)"
    for dockerfile in ("platform.Dockerfile", "edge.Dockerfile"):
        text = (DOCKER / dockerfile).read_text()
        assert "--uid 10001" in text and "\nUSER eddyline" in text


def test_compose_rejects_a_broken_file(tmp_path: Path) -> None:
    broken = tmp_path / "compose.yaml"
    broken.write_text(COMPOSE.read_text().replace("    restart: unless-stopped\n", "    restart: [1, 2]\n", 1))
    done = compose_config(broken, SECRETS)  # every secret set: only the broken field can fail it
    assert done.returncode != 0 and "restart" in done.stderr, done.stderr


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
    assert len(list((DOCKER / "grafana/dashboards").glob("*.json"))) == 5


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
    ports = {"flow-anomaly": "9100", "flow-fleet": "9100", "flow-notify": "9100", "edge-sim": "9101"}
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


def _folders_the_user_owns(dockerfile: str) -> set[str]:
    """The image folders made for the eddyline user: its home and what `install -d -o eddyline` creates."""
    text = (DOCKER / dockerfile).read_text()
    owned = set(re.findall(r"useradd [^\n]*--home-dir (\S+) --create-home", text))
    for args in re.findall(r"install -d -o eddyline -g eddyline ([^\n\\&]+)", text):
        owned.update(args.split())
    return owned


def test_every_named_volume_of_a_non_root_service_mounts_on_a_folder_its_user_owns(compose) -> None:
    # Docker gives a new named volume the owner of the image folder it mounts on, and root's where there is none:
    # a flow running as 10001 could then not write its checkpoints (reproduced on dockerd 20.10).
    images = {"eddyline/platform": "platform.Dockerfile", "eddyline/edge": "edge.Dockerfile"}
    for name, svc in compose["services"].items():
        dockerfile = images.get(svc["image"].split(":")[0])
        if dockerfile is None:
            continue
        for vol in svc.get("volumes", []):
            source, target = vol.split(":")[:2]
            if not source.startswith((".", "/")):
                assert target in _folders_the_user_owns(dockerfile), (
                    f"{name}: volume {source} mounts on {target}, which {dockerfile} does not create for eddyline"
                )


def test_every_service_caps_its_log_files() -> None:
    # Without a cap Docker's json-file log keeps every line ever printed (24 MB for 200,000 lines, on dockerd 20.10).
    done = compose_config(COMPOSE, SECRETS)
    assert done.returncode == 0, done.stderr
    for name, svc in yaml.safe_load(done.stdout)["services"].items():
        logging = svc.get("logging", {})
        assert logging.get("driver") == "json-file", f"{name}: no capped log driver"
        assert {"max-size", "max-file"} <= set(logging.get("options", {})), f"{name}: log files without a size cap"


@pytest.mark.skipif(shutil.which("git") is None or not (ROOT / ".git").exists(), reason="needs a git checkout")
def test_the_secrets_file_beside_compose_is_never_committed() -> None:
    # README.md "Secrets" has operators write every token to docker/.env: `git add docker` must not take it
    done = subprocess.run(["git", "check-ignore", "-q", "docker/.env"], cwd=ROOT, capture_output=True, check=False)
    assert done.returncode == 0, "docker/.env is not ignored by git: `git add` would commit the stack's secrets"


def test_every_long_running_service_has_a_health_check_its_image_can_run(compose) -> None:
    # without one `depends_on: condition: service_healthy` cannot name it and `docker compose ps` says "Up" while broken
    for name, svc in compose["services"].items():
        if svc.get("restart") == "no":
            continue
        test = svc.get("healthcheck", {}).get("test")
        assert test, f"{name} has no healthcheck"
        tool = IMAGE_TOOLS[svc["image"].split(":")[0]]
        assert test[1].split()[0] == tool, f"{name}: its image runs health checks with {tool}, not {test[1]}"


class _Answer(BaseHTTPRequestHandler):
    status = 200

    def do_GET(self) -> None:
        self.send_response(self.status)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


def _service_port(svc: dict) -> str:
    """The port the service serves on: its ``--port`` argument, else its metrics port from the environment."""
    command = svc.get("command", [])
    if "--port" in command:
        return command[command.index("--port") + 1]
    env = svc["environment"]
    return env.get("EDDYLINE_RUNTIME_METRICS_PORT") or env["EDDYLINE_EDGE_METRICS_PORT"]


def test_the_python_health_checks_pass_on_an_answer_and_fail_on_an_error_or_silence(compose) -> None:
    checked = set()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Answer)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))  # bound, never listening: a connection is refused
    cases = [(server.server_port, 200, True), (server.server_port, 204, True), (server.server_port, 503, False),
             (silent.getsockname()[1], 200, False)]
    try:
        for name, svc in compose["services"].items():
            test = svc.get("healthcheck", {}).get("test", [])
            if not test or not test[1].endswith("/bin/python"):
                continue
            code = test[3]
            port = re.search(r"http://127\.0\.0\.1:(\d+)/", code).group(1)
            assert port == _service_port(svc), f"{name} serves on {_service_port(svc)}, its check asks {port}"
            for there, status, healthy in cases:
                _Answer.status = status
                check = code.replace(f"127.0.0.1:{port}/", f"127.0.0.1:{there}/")
                done = subprocess.run([sys.executable, "-c", check], capture_output=True, timeout=30)
                assert (done.returncode == 0) == healthy, f"{name}: HTTP {status} on port {there}: {done.returncode}"
            checked.add(name)
    finally:
        silent.close()
        server.shutdown()
        server.server_close()
    assert checked == {"flow-anomaly", "flow-fleet", "flow-notify", "gateway", "live", "edge-sim"}
