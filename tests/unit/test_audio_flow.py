"""The audio flow over real recordings, in memory (run_local): real VAD, real Whisper, VADER's lexicon as the
sentiment model so the expected alert is known from the scripts."""

import pickle
from pathlib import Path

import numpy as np
import pytest

from benchmarks.wer import read_references
from connectors.wav import chunk_records, read_wav
from models.speech import word_error_rate
from schemas import AvroSerde
from streams.flows.audio import AudioFlowConfig, SentimentPolicy, SentimentProcessor, audio_flow, sentiment_flow
from streams.processor import Event, run_local

DATA = Path(__file__).resolve().parents[1] / "data" / "audio"
CALL = ["call01", "call03", "call10", "call08", "call03", "call04", "call12", "call07"]  # turns bad, then recovers
CONFIG = AudioFlowConfig(sentiment_model="vader")


def conversation(names: list[str], cid: str, chunk_ms: int = 250) -> list[Event]:
    silence = np.zeros(16000, dtype="<i2").tobytes()
    pcm = silence + b"".join(read_wav(DATA / f"{n}.wav").pcm + silence for n in names)
    return [Event("audio.chunks", cid, r, 0, i) for i, r in enumerate(chunk_records(pcm, cid, chunk_ms=chunk_ms, start_ms=0))]


@pytest.fixture(scope="module")
def outputs():
    events = conversation(CALL, "conv-1")
    return events, run_local(audio_flow(CONFIG), events)


def by_topic(emits, topic):
    return [e.record for e in emits if e.topic == topic]


def sentiment_alerts(emits):
    """The rolling-sentiment alerts (routing escalations are tested in test_routing.py)."""
    return [a for a in by_topic(emits, "alerts") if a["source"] == "audio-sentiment"]


def test_one_transcript_per_utterance_with_timing(outputs):
    _, emits = outputs
    transcripts = by_topic(emits, "transcripts")
    refs = read_references(DATA)
    assert [t["segment"] for t in transcripts] == list(range(len(CALL)))
    assert word_error_rate([refs[n] for n in CALL], [t["text"] for t in transcripts]) < 0.15
    starts = [t["start_ms"] for t in transcripts]
    assert starts == sorted(starts) and all(t["end_ms"] > t["start_ms"] for t in transcripts)
    assert transcripts[0]["start_ms"] < 1000 < transcripts[0]["end_ms"]  # speech starts after 1 s of silence
    assert all(t["language"] == "en" and t["conversation_id"] == "conv-1" for t in transcripts)


def test_sentiment_per_transcript_and_one_alert_that_resolves(outputs):
    _, emits = outputs
    transcripts = by_topic(emits, "transcripts")
    scores = by_topic(emits, "scores.sentiment")
    assert [s["source_event_id"] for s in scores] == [t["event_id"] for t in transcripts]
    assert scores[1]["label"] == "negative" and scores[0]["label"] == "positive"
    alerts = sentiment_alerts(emits)
    assert [a["status"] for a in alerts] == ["OPENED", "RESOLVED"]
    assert alerts[0]["alert_key"] == alerts[1]["alert_key"] and alerts[0]["entity"] == "conv-1"
    assert alerts[0]["details"]["segment"] == "4" and alerts[0]["value"] <= -0.3


@pytest.fixture(scope="module")
def short():
    events = conversation(["call03", "call12"], "conv-2")
    return events, run_local(audio_flow(CONFIG), events)


def test_outputs_are_valid_events(outputs):
    serde = AvroSerde()
    for e in outputs[1]:
        assert serde.decode(serde.encode(e.event_type, e.record), e.event_type)["event_id"] == e.record["event_id"]


def test_replays_repeat_their_ids(short):
    events, emits = short
    assert len(by_topic(emits, "transcripts")) == 2
    redelivered = events[:10] + events[5:]  # a consumer restart re-reads chunks 5..9
    again = run_local(audio_flow(CONFIG), redelivered)
    assert [e.record["event_id"] for e in again] == [e.record["event_id"] for e in emits]


def test_checkpointed_processor_resumes_where_it_stopped(short):
    events, emits = short
    spec = audio_flow(CONFIG)
    cut = 20  # inside the first utterance
    procs: dict = {}
    first = run_local(spec, events[:cut], procs)
    restored = {k: pickle.loads(pickle.dumps(p)) for k, p in procs.items()}
    second = run_local(spec, events[cut:], restored)
    assert [e.record["event_id"] for e in first + second] == [e.record["event_id"] for e in emits]


def transcript(cid: str, segment: int, text: str) -> Event:
    return Event("transcripts", cid, {
        "event_id": f"{cid}-{segment}", "event_time": 1000 * segment, "producer": "test", "conversation_id": cid,
        "segment": segment, "start_ms": 1000 * segment, "end_ms": 1000 * segment + 900, "text": text,
        "language": "en", "confidence": None, "model": "test"})


def test_one_bad_remark_does_not_open_an_alert():
    lines = ["thanks, that is great", "this is terrible", "ok, that is great, thank you", "wonderful, thanks"]
    emits = run_local(sentiment_flow(CONFIG), [transcript("c", i, t) for i, t in enumerate(lines)])
    assert by_topic(emits, "alerts") == [] and by_topic(emits, "routing") == []
    assert len(by_topic(emits, "scores.sentiment")) == 4


def test_conversations_are_tracked_apart_and_escalate():
    policy = SentimentPolicy(window=2, open_after=2, error_below=-0.7)
    cfg = AudioFlowConfig(sentiment_model="vader", policy=policy)
    bad = ["this is bad", "this is awful and terrible", "the worst, horrible, disgusting service, I hate it", "I hate this, awful"]
    events = [transcript("a", i, t) for i, t in enumerate(bad)] + [transcript("b", 0, "lovely, thank you")]
    alerts = sentiment_alerts(run_local(sentiment_flow(cfg), events))
    assert [(a["entity"], a["status"], a["severity"]) for a in alerts] == [("a", "OPENED", "WARNING"), ("a", "UPDATED", "ERROR")]


def test_a_segment_repeated_within_one_batch_counts_once():
    policy = SentimentPolicy(window=2, open_after=2)
    proc = SentimentProcessor("c", AudioFlowConfig(sentiment_model="vader", policy=policy).to_dict())
    redelivered = transcript("c", 0, "this is awful and terrible")  # a producer's retry, in the same poll
    emits = proc.process([redelivered, redelivered, transcript("c", 1, "thanks, that is great")])
    assert [r["segment"] for r in by_topic(emits, "scores.sentiment")] == [0, 1]
    assert by_topic(emits, "alerts") == []  # one negative segment, not two in a row
