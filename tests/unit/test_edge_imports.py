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


def test_the_running_agent_leaves_registry_http_and_codec_libraries_out(tmp_path: Path) -> None:
    """What the agent has loaded after a real (short) run of the lean runtime: no urllib.request / http
    (schema-registry client only), no cramjam (fastavro's snappy codec for files): 6 MB of the 40 MB budget."""
    from connectors.broker import free_port
    from connectors.kafka import KafkaSettings
    from edge_agent.launch import plan
    from edge_agent.settings import EdgeSettings

    edge = EdgeSettings(device_id="pi", buffer_path=tmp_path / "b.sqlite", heartbeat_interval_s=0.1,
                        sources=[{"kind": "simulated"}])
    the_plan = json.dumps(plan(edge, KafkaSettings(bootstrap_servers=f"127.0.0.1:{free_port()}")))
    code = (
        "import os\nfrom edge_agent.runner import main\n"
        f"r, w = os.pipe()\nos.write(w, {the_plan!r}.encode())\nos.close(w)\n"
        "assert main(['--plan-fd', str(r), '--duration', '0.5', '--flush-timeout', '0.1']) == 0\n"
        "import sys\nfor name in [k for k, v in sys.modules.items() if v is None]:  # hidden, never loaded\n"
        "    del sys.modules[name]"
    )
    loaded = loaded_after(code)
    assert "edge_agent" in loaded and "confluent_kafka" in loaded and "fastavro" in loaded
    assert not loaded & {"cramjam", "http", "email", "pydantic"}, loaded & {"cramjam", "http", "email", "pydantic"}
