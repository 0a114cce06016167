"""A broken configuration stops every entry point with status 2 and a message naming the key and the fix.

Each entry point runs as its own process, as systemd or a shell would start it; status 2 is what the
units treat as final (``RestartPreventExitStatus=2``), so a typo never becomes a restart loop.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "edge_agent" / "deploy"

EDGE = [sys.executable, "-m", "edge_agent", "run", "--duration", "1", "--config"]
EDGE_CHECK = [sys.executable, "-m", "edge_agent", "check-config", "--config"]
FLOW = [sys.executable, "-m", "streams.cli", "run", "anomaly"]
GATEWAY = [sys.executable, "-m", "streams.cli", "gateway", "--port", "0"]
GATEWAY_MODULE = [sys.executable, "-m", "connectors.gateway", "--port", "0"]
LIVE = [sys.executable, "-m", "streams.cli", "live", "--port", "0"]

CASES = {
    # name: (command, TOML, words the message must carry)
    "edge-typo": (EDGE, '[edge]\ndevice_idd = "pi-1"\n[kafka]\n', ["[edge] device_idd", "did you mean device_id"]),
    "edge-type": (EDGE, '[edge]\nbuffer_max_mb = "lots"\n[kafka]\n', ["[edge] buffer_max_mb", "'lots'"]),
    # TOML's inf and an impossible port passed check-config, then crashed the run with an OverflowError traceback
    "edge-infinite": (EDGE, '[edge]\nbuffer_max_mb = inf\n[kafka]\n', ["[edge] buffer_max_mb", "finite number"]),
    "edge-port": (EDGE, '[edge]\nmetrics_port = 70000\nbuffer_path = "b.sqlite"\n[kafka]\n',
                  ["[edge] metrics_port", "65535"]),
    "edge-syntax": (EDGE, '[edge\ndevice_id = "pi-1"\n', ["not valid TOML", "line 1"]),
    "flow-kafka-typo": (FLOW, '[kafka]\nbootstrap_server = "k:9092"\n', ["[kafka] bootstrap_server", "did you mean bootstrap_servers"]),
    "flow-runtime-type": (FLOW, '[runtime]\nbatch_size = "lots"\n', ["[runtime] batch_size", "EDDYLINE_RUNTIME_BATCH_SIZE"]),
    "flow-runtime-memory": (FLOW, '[runtime]\ndecoded_bytes = 0\n', ["[runtime] decoded_bytes", "greater than 0",
                                                                     "EDDYLINE_RUNTIME_DECODED_BYTES"]),
    "flow-sink-typo": (FLOW, '[influx]\nurll = "http://influx:8086"\n', ["[influx] urll", "did you mean url"]),
    "flow-syntax": (FLOW, 'kafka]\n', ["not valid TOML"]),
    "gateway-typo": (GATEWAY, '[gateway]\nallow_anonymous = true\nportt = 1\n', ["[gateway] portt", "did you mean port"]),
    "gateway-kafka-type": (GATEWAY_MODULE, '[gateway]\nallow_anonymous = true\n[kafka]\nlinger_ms = "soon"\n',
                           ["[kafka] linger_ms", "'soon'"]),
    "live-typo": (LIVE, '[kafka]\nnamespce = "prod."\n', ["[kafka] namespce", "did you mean namespace"]),
    # a misspelt table was skipped whole: the program ran on the defaults (Kafka at 127.0.0.1:9092)
    "edge-table-typo": (EDGE, '[edge]\nbuffer_path = "b.sqlite"\n[kafak]\nbootstrap_servers = "kafka-1:9092"\n',
                        ["unknown table [kafak]", "did you mean [kafka]?"]),
    "edge-check-table-typo": (EDGE_CHECK, '[edge]\n[kafka]\n[schema_registy]\nurl = "http://registry:8081"\n',
                              ["unknown table [schema_registy]", "did you mean [schema_registry]?"]),
    "flow-table-typo": (FLOW, '[kafak]\nbootstrap_servers = "kafka-1:9092"\n', ["unknown table [kafak]",
                                                                             "did you mean [kafka]?"]),
    "flow-key-outside-tables": (FLOW, 'bootstrap_servers = "kafka-1:9092"\n[kafka]\n',
                                ["bootstrap_servers is outside any table", "under its table"]),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_a_broken_config_exits_2_naming_the_key(name: str, tmp_path: Path) -> None:
    command, toml, words = CASES[name]
    config = tmp_path / "eddyline.toml"
    config.write_text(toml)
    env = {**os.environ, "EDDYLINE_CONFIG": str(config), "EDDYLINE_KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:9"}
    args = [*command, str(config)] if command[-1] == "--config" else command
    done = subprocess.run(args, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120)
    assert done.returncode == 2, (done.returncode, done.stderr[-2000:])
    assert "Traceback" not in done.stderr, done.stderr[-2000:]
    for word in words:
        assert word in done.stderr, (word, done.stderr[-2000:])


def test_a_table_that_another_eddyline_program_reads_is_not_an_error(tmp_path: Path) -> None:
    """A file shared by the platform and an agent holds tables the agent never reads: only typos are refused."""
    config = tmp_path / "eddyline.toml"
    config.write_text('[audio]\n[routing]\n[edge]\nbuffer_path = "b.sqlite"\n'
                      'sources = [{kind = "simulated", sensors = 1}]\n[kafka]\n')
    done = subprocess.run([*EDGE_CHECK, str(config)], capture_output=True, text=True, cwd=tmp_path, timeout=120,
                          env={**os.environ, "EDDYLINE_KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:9"})
    assert done.returncode == 0, done.stderr[-2000:]
    assert "config OK" in done.stdout, done.stdout[-2000:]


@pytest.mark.parametrize("command", [FLOW, GATEWAY, GATEWAY_MODULE, LIVE], ids=["flow", "gateway", "gateway-module", "live"])
def test_a_config_path_that_names_no_file_exits_2_saying_what_to_do(command: list[str], tmp_path: Path) -> None:
    """A mistyped EDDYLINE_CONFIG must not run on the defaults: the working directory's file is there to tempt it."""
    (tmp_path / "eddyline.toml").write_text('[gateway]\nallow_anonymous = true\n')
    typo = tmp_path / "eddylin.toml"
    env = {**os.environ, "EDDYLINE_CONFIG": str(typo), "EDDYLINE_KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:9",
           "PYTHONPATH": str(ROOT)}  # this checkout's code, whatever checkout the environment was installed from
    done = subprocess.run(command, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120)
    assert done.returncode == 2, (done.returncode, done.stderr[-2000:])
    assert "Traceback" not in done.stderr, done.stderr[-2000:]
    assert f"EDDYLINE_CONFIG names {typo}, which does not exist" in done.stderr, done.stderr[-2000:]
    assert "unset EDDYLINE_CONFIG" in done.stderr, done.stderr[-2000:]


def test_units_do_not_restart_on_a_config_error() -> None:
    units = sorted(DEPLOY.glob("*.service"))
    assert units
    for unit in units:
        text = unit.read_text()
        assert "Restart=" in text and "RestartPreventExitStatus=2" in text, unit.name
