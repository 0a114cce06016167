"""Issue 16 end to end: recorded calls through the real broker, the audio flow on Bytewax in its own process
(VAD, Whisper, sentiment, emotion, routing) and the notify flow to the loopback PagerDuty receiver.

- A 36 s turn that opens with complaints and ends in thanks is one utterance, one transcript and one score,
  of the whole turn: the score is the sentiment of the full transcript, not of its opening.
- A call that turns angry gets an ``escalate_supervisor`` recommendation with its reason, and the escalation
  alert reaches PagerDuty through the alerts topic and the notify flow; the call ends so, and with its final chunk
  the recommendation goes back to ``keep`` and the PagerDuty incident resolves.

The flow scores with VADER here (the trained model is not part of a fresh clone); the trained ONNX model's
windows over long texts are tested in tests/unit/test_sentiment_model.py and test_sentiment_windows.py.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from connectors.alerting import AlertDispatcher
from connectors.kafka import EventProducer, KafkaSettings, create_topics, read_topic
from connectors.pagerduty import PagerDutySettings, PagerDutySink
from connectors.wav import chunk_records, read_wav
from models.sentiment.model import load_sentiment
from schemas import ALERT, AUDIO_CHUNK, ROUTING_RECOMMENDATION, SENTIMENT_SCORE, TRANSCRIPT, AvroSerde
from streams.flows.notify import Notifier, NotifyFlow, NotifySettings

pytestmark = pytest.mark.integration
DATA = Path(__file__).resolve().parents[1] / "data" / "audio"
CALLS = {
    "call-long": ["turns/long_turn"],
    "call-angry": ["call01", "call10", "call03", "turns/angry"],  # polite, tired, angry, furious
}
FLOW = (
    "from datetime import timedelta\n"
    "from connectors.kafka import KafkaSettings\n"
    "from models.speech import VADConfig\n"
    "from streams.flows.audio import AudioFlowConfig, audio_flow\n"
    "from streams.engines.bytewax import run\n"
    "config = AudioFlowConfig(sentiment_model='vader', vad=VADConfig(max_utterance_ms=45_000))\n"
    "run(audio_flow(config), KafkaSettings(), epoch_interval=timedelta(seconds=0.5))\n"
)
ROUTING_KEY = "0123456789abcdef0123456789abcdef"
serde = AvroSerde()


def produce_calls(settings: KafkaSettings) -> None:
    silence = np.zeros(16000, dtype="<i2").tobytes()
    create_topics(settings, ["audio.chunks"])
    with EventProducer(settings) as producer:
        for cid, names in CALLS.items():
            pcm = silence + b"".join(read_wav(DATA / f"{n}.wav").pcm + silence for n in names)
            for rec in chunk_records(pcm, cid, chunk_ms=250):
                producer.produce("audio.chunks", AUDIO_CHUNK, rec, key=cid)


def collect(settings: KafkaSettings, topic: str, event_type: str, done, timeout: float) -> list[dict]:
    deadline = time.monotonic() + timeout
    seen: dict[str, dict] = {}
    while time.monotonic() < deadline and not done(list(seen.values())):
        for msg in read_topic(settings, topic, timeout=5, idle=0.5):
            rec = serde.decode(msg.value(), event_type)
            seen[rec["event_id"]] = rec
        time.sleep(0.5)
    return list(seen.values())


def test_a_long_turn_is_scored_whole_and_an_angry_call_is_escalated(kafka_settings, alert_receiver) -> None:
    produce_calls(kafka_settings)
    env = {**os.environ, "EDDYLINE_KAFKA_BOOTSTRAP_SERVERS": kafka_settings.bootstrap_servers,
           "EDDYLINE_KAFKA_NAMESPACE": kafka_settings.namespace}
    proc = subprocess.Popen([sys.executable, "-c", FLOW], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            start_new_session=True)
    pagerduty = PagerDutySink(PagerDutySettings(routing_key=ROUTING_KEY, url=alert_receiver.pagerduty_url,
                                                ca_file=str(alert_receiver.ca_file), max_retries=0, timeout=5))
    notify = NotifyFlow(kafka_settings, Notifier(AlertDispatcher([pagerduty]), NotifySettings(backoff_s=0.05)))
    stop = threading.Event()
    thread = threading.Thread(target=notify.run, args=(stop,), daemon=True)
    thread.start()
    try:
        transcripts = collect(kafka_settings, "transcripts", TRANSCRIPT, lambda got: len(got) >= 5, timeout=240)
        scores = collect(kafka_settings, "scores.sentiment", SENTIMENT_SCORE, lambda got: len(got) >= 5, timeout=60)
        routing = collect(kafka_settings, "routing", ROUTING_RECOMMENDATION, lambda got: len(got) >= 2, timeout=60)
        alerts = collect(kafka_settings, "alerts", ALERT,
                         lambda got: [a["source"] for a in got].count("audio-routing") >= 2, timeout=60)
        escalations = {a["alert_key"] for a in alerts if a["source"] == "audio-routing"}
        delivered = alert_receiver.wait_for(
            lambda r: any(r.incidents.get(k, {}).get("status") == "resolved" for k in escalations), timeout=60)
    finally:
        stop.set()
        thread.join(30)
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        log = proc.communicate(timeout=30)[0].decode(errors="replace")[-3000:]

    # the long turn: one utterance, one transcript of all of it, scored as a whole
    (long_text,) = [t for t in transcripts if t["conversation_id"] == "call-long"]
    (long_score,) = [s for s in scores if s["conversation_id"] == "call-long"]
    words = long_text["text"].split()
    assert len(words) > 90 and long_text["end_ms"] - long_text["start_ms"] > 30_000, long_text
    assert "nightmare" in long_text["text"] and "thank you" in long_text["text"].lower(), long_text["text"]
    vader = load_sentiment("vader")
    opening = " ".join(words[:40])  # what a 64-token window would have read
    assert vader.predict([opening])[0].label == "negative"
    assert long_score["label"] == "positive"
    assert long_score["score"] == pytest.approx(vader.predict([long_text["text"]])[0].score)

    # the call that turns angry: emotions per segment, then an escalation with its reason and an alert delivered
    angry = sorted((s for s in scores if s["conversation_id"] == "call-angry"), key=lambda s: s["segment"])
    assert [s["emotion"] for s in angry][-2:] == ["anger", "anger"], [s["text"] for s in angry]
    escalation, ended = sorted((r for r in routing if r["conversation_id"] == "call-angry"),
                               key=lambda r: r["action"] == "keep")
    assert (ended["previous_action"], ended["action"], ended["reason"]) == (
        "escalate_supervisor", "keep", "the conversation ended"), log
    assert (escalation["action"], escalation["previous_action"], escalation["rule"]) == (
        "escalate_supervisor", "keep", "angry"), log
    assert escalation["segment"] == 3 and "anger in 2 of the last 4 segments" in escalation["reason"]
    assert "furious" in escalation["reason"] and escalation["rolling_score"] < -0.2
    assert not [r for r in routing if r["conversation_id"] == "call-long"]  # a turn that ends well is kept
    opened, resolved = sorted((a for a in alerts if a["source"] == "audio-routing"), key=lambda a: a["status"])
    assert opened["status"] == "OPENED" and opened["entity"] == "call-angry" and "supervisor" in opened["summary"]
    assert (resolved["status"], resolved["alert_key"]) == ("RESOLVED", opened["alert_key"])
    assert delivered, alert_receiver.incidents
    assert alert_receiver.incidents[opened["alert_key"]]["status"] == "resolved"
    assert not alert_receiver.rejected
