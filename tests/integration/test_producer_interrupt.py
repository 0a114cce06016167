"""Ctrl-C is how a producer without ``--count`` or ``--duration`` ends: what it produced is flushed and summed up.

Before, ``eddyline produce sensors`` died on the interrupt without a summary and without writing ``--truth``, and
``eddyline produce audio`` without a count and without flushing its producer (chunks still queued were lost).
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import pytest

from connectors.kafka import KafkaSettings, read_topic
from schemas import SENSOR_BATCH, AvroSerde
from tests.integration.test_sensor_flow import flow_env, stop

pytestmark = pytest.mark.integration
AUDIO = Path(__file__).resolve().parents[1] / "data" / "audio" / "call01.wav"
serde = AvroSerde()


def _interrupt(settings: KafkaSettings, command: list[str], topic: str, started: int) -> tuple[int, str]:
    """Run ``eddyline COMMAND``; once ``started`` messages reached ``topic``, press Ctrl-C."""
    proc = subprocess.Popen([sys.executable, "-m", "streams.cli", *command], env=flow_env(settings),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        assert len(read_topic(settings, topic, expected=started, timeout=90)) >= started, stop(proc)
        proc.send_signal(signal.SIGINT)
        out = proc.communicate(timeout=90)[0].decode(errors="replace")
    finally:
        stop(proc)
    return proc.returncode, out


def test_ctrl_c_ends_produce_sensors_with_its_summary_its_truth_and_every_message_sent(
    kafka_settings: KafkaSettings, tmp_path: Path
) -> None:
    truth = tmp_path / "truth.json"
    code, out = _interrupt(kafka_settings, ["produce", "sensors", "--devices", "1", "--rate", "3000",
                                            "--anomaly-rate", "0.02", "--bad-events", "3", "--truth", str(truth)],
                           "sensor.readings", started=20)
    assert code == 0, out[-3000:]
    assert "Traceback" not in out and "produce sensors stopped" in out, out[-3000:]
    summary = re.search(r"produced (\d+) messages, (\d+) readings, (\d+) malformed, (\d+) injected anomalies", out)
    assert summary, out[-3000:]
    messages, _, malformed, injected = map(int, summary.groups())
    sent = read_topic(kafka_settings, "sensor.readings", timeout=60, idle=3)
    bad = [m for m in sent if m.key().startswith(b"bad-")]
    assert (len(sent) - len(bad), len(bad)) == (messages, malformed) == (messages, 3)  # the rest of the bad ones too
    last_sent: dict[tuple[str, str], int] = defaultdict(int)
    for m in sent:
        if m not in bad:
            record = serde.decode(m.value(), SENSOR_BATCH)
            for series in record["series"]:
                key = (record["device_id"], series["sensor"])
                last_sent[key] = max(last_sent[key], series["timestamps"][-1])
    anomalies = json.loads(truth.read_text())
    assert len(anomalies) == injected > 0
    assert all(a["start_ms"] <= last_sent[(a["device_id"], a["sensor"])] for a in anomalies)  # only what was sent


def test_ctrl_c_ends_produce_audio_with_its_count_and_every_chunk_counted_sent(kafka_settings: KafkaSettings) -> None:
    code, out = _interrupt(kafka_settings, ["produce", "audio", str(AUDIO), "--speed", "0.25", "--chunk-ms", "200"],
                           "audio.chunks", started=3)
    assert code == 0, out[-3000:]
    assert "Traceback" not in out and "produce audio stopped" in out, out[-3000:]
    summary = re.search(r"produced (\d+) audio chunks from 1 file", out)
    assert summary, out[-3000:]
    chunks = int(summary.group(1))
    assert 3 <= chunks < 24  # stopped before the end of the call's 4.7 s
    assert len(read_topic(kafka_settings, "audio.chunks", timeout=60, idle=3)) == chunks


def test_ctrl_c_ends_produce_clicks_with_its_summary_and_every_event_counted_sent(
    kafka_settings: KafkaSettings,
) -> None:
    code, out = _interrupt(kafka_settings, ["produce", "clicks", "--rate", "200"], "clicks", started=50)
    assert code == 0, out[-3000:]
    assert "Traceback" not in out and "produce clicks stopped" in out, out[-3000:]
    summary = re.search(r"produced (\d+) click events \((\d+) impressions, (\d+) clicks\) from (\d+) ratings", out)
    assert summary, out[-3000:]
    events, impressions, _, ratings = map(int, summary.groups())
    assert 50 <= events and impressions == ratings < 100_000  # stopped long before the end of the replay
    assert len(read_topic(kafka_settings, "clicks", timeout=60, idle=3)) == events
