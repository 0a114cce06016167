"""README's "Producing events" examples, run as written against the broker, the gateway and Mosquitto."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from connectors.gateway import GatewaySettings
from connectors.kafka import KafkaSettings, read_topic
from connectors.mqtt.mosquitto import Mosquitto
from schemas import AUDIO_CHUNK, SENSOR_BATCH, AvroSerde
from tests.fixtures.gateway import serve_gateway
from tests.integration.test_mqtt_bridge import wait_for_line

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
TOKEN = "readme-token-0123456789abcdef"
serde = AvroSerde()


def examples() -> list[tuple[str, str]]:
    text = (ROOT / "README.md").read_text()
    section = text.split("\n## Producing events\n", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```(\w+)\n(.*?)```", section, flags=re.S)


def test_the_section_has_every_kind_of_example() -> None:
    kinds = [lang for lang, _ in examples()]
    assert kinds == ["python", "bash", "python", "toml", "console", "bash"]


def test_readme_examples_run_against_the_real_servers(kafka_settings: KafkaSettings, mosquitto: Mosquitto,
                                                      tmp_path: Path) -> None:
    shutil.copy(ROOT / "tests" / "data" / "audio" / "call01.wav", tmp_path / "call.wav")
    blocks = examples()
    with serve_gateway(GatewaySettings(tokens={"readme": TOKEN}), kafka_settings) as gw:
        env = {**os.environ, "EDDYLINE_KAFKA_BOOTSTRAP_SERVERS": kafka_settings.bootstrap_servers,
               "EDDYLINE_KAFKA_NAMESPACE": kafka_settings.namespace, "GATEWAY_URL": gw.url,
               "GATEWAY_TOKEN": TOKEN, "MQTT_PORT": str(mosquitto.port), "EDDYLINE_MQTT_PORT": str(mosquitto.port),
               "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}", "PYTHONPATH": str(ROOT)}
        bridge = None
        log = tmp_path / "bridge.log"
        try:
            for lang, code in blocks:
                if lang == "python":
                    run = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True,
                                         text=True, timeout=120)
                elif lang == "bash":
                    run = subprocess.run(["bash", "-euo", "pipefail", "-c", code], cwd=tmp_path, env=env,
                                         capture_output=True, text=True, timeout=120)
                elif lang == "toml":
                    (tmp_path / "bridge.toml").write_text(code)
                    continue
                else:  # the console line starts the bridge; it runs until stopped
                    command = shlex.split(code.strip().removeprefix("$ "))
                    bridge = subprocess.Popen(command, cwd=tmp_path, env=env, stdout=log.open("wb"),
                                              stderr=subprocess.STDOUT, start_new_session=True)
                    wait_for_line(log, "subscribed")
                    continue
                assert run.returncode == 0, f"{lang} example failed:\n{code}\n{run.stdout}\n{run.stderr}"
            got = {serde.decode(m.value(), SENSOR_BATCH)["device_id"]
                   for m in read_topic(kafka_settings, "sensor.readings", expected=5, timeout=30)}
        finally:
            if bridge is not None:
                os.killpg(bridge.pid, signal.SIGTERM)
                bridge.wait(30)
    assert got == {"press-7", "press-9", "press-10", "press-11", "kitchen"}, log.read_text()
    chunks = [serde.decode(m.value(), AUDIO_CHUNK) for m in read_topic(kafka_settings, "audio.chunks", idle=1)]
    assert {c["conversation_id"] for c in chunks} == {"call-42"} and sum(c["final"] for c in chunks) == 1
    for topic in ("clicks", "predictions", "feedback"):
        assert len(read_topic(kafka_settings, topic, expected=1, timeout=10)) == 1, topic
    assert bridge.returncode == 0, log.read_text()
