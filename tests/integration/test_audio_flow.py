"""A recorded call through the real broker and the audio flow on Bytewax, in its own process."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from benchmarks.wer import read_references
from connectors.kafka import EventProducer, KafkaSettings, create_topics, read_topic
from connectors.wav import chunk_records, read_wav
from models.speech import word_error_rate
from schemas import AUDIO_CHUNK, SENTIMENT_SCORE, TRANSCRIPT, AvroSerde

pytestmark = pytest.mark.integration
DATA = Path(__file__).resolve().parents[1] / "data" / "audio"
CALL = ["call03", "call12"]
FLOW = (
    "from connectors.kafka import KafkaSettings\n"
    "from streams.flows.audio import AudioFlowConfig, audio_flow\n"
    "from streams.engines.bytewax import run\n"
    "from datetime import timedelta\n"
    "run(audio_flow(AudioFlowConfig(sentiment_model='vader')), KafkaSettings(), epoch_interval=timedelta(seconds=0.5))\n"
)
serde = AvroSerde()


def collect(settings: KafkaSettings, topic: str, event_type: str, expected: int, timeout: float) -> dict[str, dict]:
    deadline = time.monotonic() + timeout
    seen: dict[str, dict] = {}
    while time.monotonic() < deadline and len(seen) < expected:
        for msg in read_topic(settings, topic, timeout=5, idle=0.5):
            rec = serde.decode(msg.value(), event_type)
            seen[rec["event_id"]] = rec
        time.sleep(0.5)
    return seen


def test_recording_through_broker_yields_transcripts_and_sentiment(kafka_settings: KafkaSettings) -> None:
    silence = np.zeros(8000, dtype="<i2").tobytes()
    pcm = b"".join(silence + read_wav(DATA / f"{n}.wav").pcm for n in CALL) + silence
    create_topics(kafka_settings, ["audio.chunks"])
    with EventProducer(kafka_settings) as producer:
        for rec in chunk_records(pcm, "call-e2e", chunk_ms=200):
            producer.produce("audio.chunks", AUDIO_CHUNK, rec, key=rec["conversation_id"])
    env = {**os.environ, "EDDYLINE_KAFKA_BOOTSTRAP_SERVERS": kafka_settings.bootstrap_servers,
           "EDDYLINE_KAFKA_NAMESPACE": kafka_settings.namespace}
    proc = subprocess.Popen([sys.executable, "-c", FLOW], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            start_new_session=True)
    try:
        transcripts = collect(kafka_settings, "transcripts", TRANSCRIPT, len(CALL), timeout=180)
        scores = collect(kafka_settings, "scores.sentiment", SENTIMENT_SCORE, len(CALL), timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        log = proc.communicate(timeout=30)[0].decode(errors="replace")[-3000:]
    ordered = sorted(transcripts.values(), key=lambda t: t["segment"])
    assert len(ordered) == len(CALL), log
    refs = read_references(DATA)
    assert word_error_rate([refs[n] for n in CALL], [t["text"] for t in ordered]) < 0.2
    by_source = {s["source_event_id"]: s for s in scores.values()}
    assert set(by_source) == set(transcripts), log
    assert [by_source[t["event_id"]]["label"] for t in ordered] == ["negative", "positive"]


def test_a_call_whose_final_chunk_is_lost_is_transcribed_once_its_key_is_idle(kafka_settings: KafkaSettings,
                                                                               tmp_path: Path) -> None:
    pcm = np.zeros(16000, dtype="<i2").tobytes() + read_wav(DATA / "call03.wav").pcm  # hung up as the caller stopped
    create_topics(kafka_settings, ["audio.chunks"])
    with EventProducer(kafka_settings) as producer:
        for rec in list(chunk_records(pcm, "call-cut", chunk_ms=200))[:-1]:  # the final chunk never came
            producer.produce("audio.chunks", AUDIO_CHUNK, rec, key=rec["conversation_id"])
    flow = FLOW.replace("epoch_interval=", f"state_dir=Path({str(tmp_path)!r}), idle_after=timedelta(seconds=1), "
                                           "epoch_interval=")
    env = {**os.environ, "EDDYLINE_KAFKA_BOOTSTRAP_SERVERS": kafka_settings.bootstrap_servers,
           "EDDYLINE_KAFKA_NAMESPACE": kafka_settings.namespace}
    proc = subprocess.Popen([sys.executable, "-c", "from pathlib import Path\n" + flow], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        transcripts = collect(kafka_settings, "transcripts", TRANSCRIPT, 1, timeout=180)
        scores = collect(kafka_settings, "scores.sentiment", SENTIMENT_SCORE, 1, timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        log = proc.communicate(timeout=30)[0].decode(errors="replace")[-3000:]
    assert [t["conversation_id"] for t in transcripts.values()] == ["call-cut"], log
    assert word_error_rate([read_references(DATA)["call03"]], [t["text"] for t in transcripts.values()]) < 0.2
    assert [s["label"] for s in scores.values()] == ["negative"], log
