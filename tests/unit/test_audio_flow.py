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
from streams.engines.output import flushed
from streams.flows.audio import (
    AudioFlowConfig,
    ConversationProcessor,
    SentimentPolicy,
    SentimentProcessor,
    audio_flow,
    sentiment_flow,
)
from streams.processor import Event, run_local
from streams.state import decode_processor, encode_processor

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


def test_a_transcript_without_words_is_not_scored():
    """Another transcriber's segments of silence or noise ("", "...", "[inaudible]") say nothing of the caller's
    mood: scored, they would move the rolling sentiment toward neutral and hide an angry caller who pauses."""
    policy = SentimentPolicy(window=2, open_after=2, error_below=-0.7)
    cfg = AudioFlowConfig(sentiment_model="vader", policy=policy)
    bad = ["this is bad", "", "this is awful and terrible", "  ...  ", "the worst, horrible service, I hate it"]
    emits = run_local(sentiment_flow(cfg), [transcript("a", i, t) for i, t in enumerate(bad)])
    assert [(a["status"], a["severity"]) for a in sentiment_alerts(emits)] == [("OPENED", "WARNING"), ("UPDATED", "ERROR")]
    assert [r["segment"] for r in by_topic(emits, "scores.sentiment")] == [0, 2, 4]


@pytest.fixture(scope="module")
def pause():
    """Two utterances 3 s apart (call03 at 1.0-5.3 s, call12 from 8.3 s), in 250 ms chunks, and the flow's output."""
    silence = lambda s: np.zeros(int(16000 * s), dtype="<i2").tobytes()  # noqa: E731
    pcm = silence(1) + read_wav(DATA / "call03.wav").pcm + silence(3) + read_wav(DATA / "call12.wav").pcm + silence(1)
    events = [Event("audio.chunks", "g", r) for r in chunk_records(pcm, "g", chunk_ms=250, start_ms=1_000_000)]
    return events, run_local(audio_flow(CONFIG), events)


def placed(emits) -> list[tuple]:
    return [(t["event_id"], t["start_ms"], t["end_ms"], t["event_time"]) for t in by_topic(emits, "transcripts")]


@pytest.mark.parametrize("lost", [[24], [23, 24, 25, 26], [10], [10, 11, 12]],
                         ids=["in-a-pause", "a-second-in-a-pause", "in-speech", "750ms-in-speech"])
def test_lost_chunks_leave_later_transcripts_where_they_were_in_the_call(pause, lost):
    events, whole = pause
    procs: dict = {}
    emits = run_local(audio_flow(CONFIG), [e for e in events if e.record["seq"] not in lost], procs)
    assert procs["g"].gaps == 1
    assert placed(emits)[-1] == placed(whole)[-1]  # the utterance after the gap: same times, same id
    if lost[0] > 20:  # lost in the pause: nothing of either utterance changes
        assert placed(emits) == placed(whole)
    elif len(lost) * 250 >= CONFIG.vad.min_silence_ms:  # as long as a pause: it ends the utterance where it broke
        assert [t["end_ms"] for t in by_topic(emits, "transcripts")][:1] == [lost[0] * 250]


def test_a_call_whose_final_chunk_never_comes_ends_its_last_utterance_when_its_key_is_evicted():
    pcm = np.zeros(16000, dtype="<i2").tobytes() + read_wav(DATA / "call03.wav").pcm  # hung up as the caller stopped
    events = [Event("audio.chunks", "h", r) for r in chunk_records(pcm, "h", chunk_ms=250, start_ms=0)]
    spec = audio_flow(CONFIG)
    procs: dict = {}
    emits = run_local(spec, events[:-1], procs)
    assert by_topic(emits, "transcripts") == []
    emits += flushed(spec, procs["h"]) or []  # what both engines do before an idle key leaves memory
    said = lambda emits: [(t["event_id"], t["text"]) for t in by_topic(emits, "transcripts")]  # noqa: E731
    assert said(emits) == said(run_local(spec, events))
    assert [s["label"] for s in by_topic(emits, "scores.sentiment")] == ["negative"]
    assert flushed(spec, procs["h"]) == []  # nothing is left to end


def test_a_call_that_goes_on_after_its_key_was_evicted_keeps_its_transcripts_in_place(pause):
    events, whole = pause
    spec = audio_flow(CONFIG)
    procs: dict = {}
    emits = run_local(spec, events[:26], procs)  # 6.5 s: in the pause, mid-frame
    emits += flushed(spec, procs["g"]) or []
    emits += run_local(spec, events[26:], procs)
    assert placed(emits) == placed(whole)


def test_silence_filling_a_gap_does_not_teach_the_voice_detector_the_line_is_quiet():
    hiss = (np.random.default_rng(3).normal(0, 0.0018, 16000 * 3) * 32767).astype("<i2").tobytes()  # about -55 dBFS
    events = [Event("audio.chunks", "n", r) for r in chunk_records(hiss, "n", chunk_ms=250, start_ms=0)]
    proc = ConversationProcessor("n", CONFIG.to_dict())
    proc.process(events[:6])
    level = proc.vad.noise_db
    proc.process(events[8:9])  # 500 ms lost, filled with silence; the chunk after it is the same hiss
    assert proc.gaps == 1 and proc.vad.noise_db == pytest.approx(level, abs=1.5)


def test_a_late_chunk_is_counted_apart_from_a_repeat_and_not_used(pause):
    events, whole = pause
    order = events[:24] + events[25:27] + [events[24], events[26]] + events[27:]  # 24 comes late; 26 twice
    procs: dict = {}
    emits = run_local(audio_flow(CONFIG), order, procs)
    proc = procs["g"]
    assert (proc.gaps, proc.late, proc.duplicates) == (1, 1, 1)
    assert placed(emits) == placed(whole)  # its 250 ms were silence by the time it came


def test_an_audio_snapshot_from_before_late_chunks_and_realignment_restores(pause):
    events, whole = pause
    procs: dict = {}
    first = run_local(audio_flow(CONFIG), events[:12], procs)
    state = procs["g"].snapshot()
    old = {k: v for k, v in state.items() if k not in ("sequence", "fed", "late")}
    old["duplicates"] = 0
    old["tracker"] = {k: v for k, v in state["tracker"].items() if k != "sequence"} | {"last_segment": -1}
    proc = audio_flow(CONFIG).make_processor("g")
    proc.restore(old)
    assert proc.fed == 12 * 4000 and proc.sequence.hwm == 11
    rest = [e for e in events[12:] if e.record["seq"] != 24]  # a gap after the restore realigns from there
    second = run_local(audio_flow(CONFIG), [events[10]] + rest, {"g": proc})  # a redelivery first
    assert proc.duplicates == 1 and proc.gaps == 1
    assert placed(first + second) == placed(whole)
    again = decode_processor(encode_processor(proc, "g"), audio_flow(CONFIG).make_processor("g"))
    assert (again.fed, again.duplicates, again.gaps, again.late) == (proc.fed, 1, 1, 0)


def test_a_late_segment_is_scored_and_counted_apart_from_a_repeat():
    from prometheus_client import REGISTRY

    def late() -> float:
        return REGISTRY.get_sample_value("eddyline_sequence_late_total", {"flow": "transcript-sentiment"}) or 0

    before = late()
    proc = SentimentProcessor("c", AudioFlowConfig(sentiment_model="vader").to_dict())
    emits = proc.process([transcript("c", 0, "this is awful, I hate it"), transcript("c", 2, "terrible, the worst")])
    emits += proc.process([transcript("c", 1, "horrible and useless, I am furious"),  # crossed on the way
                           transcript("c", 2, "terrible, the worst")])  # a redelivery
    scores = by_topic(emits, "scores.sentiment")
    assert [s["segment"] for s in scores] == [0, 2, 1]
    assert scores[2]["rolling_score"] == pytest.approx(sum(s["score"] for s in scores) / 3)  # the newest in the mean
    counts = proc.tracker.sequence.counts
    assert (counts.late, counts.duplicates) == (1, 1) and late() == before + 1
    restored = decode_processor(encode_processor(proc, "c"), SentimentProcessor("c"))
    assert restored.process([transcript("c", 1, "horrible and useless, I am furious")]) == []  # now a repeat


def test_a_sentiment_snapshot_from_before_late_segments_restores():
    proc = SentimentProcessor("c", CONFIG.to_dict())
    proc.process([transcript("c", i, "fine, thanks") for i in range(3)])
    old = {k: v for k, v in proc.snapshot().items() if k != "sequence"} | {"last_segment": 2}
    restored = SentimentProcessor("c", CONFIG.to_dict())
    restored.restore(old)
    emits = restored.process([transcript("c", 1, "fine, thanks"), transcript("c", 3, "great")])
    assert [s["segment"] for s in by_topic(emits, "scores.sentiment")] == [3]
    assert restored.tracker.sequence.counts.duplicates == 1


@pytest.fixture(scope="module")
def angry_call():
    """A call that turns bad and ends so (call03, call10), in 250 ms chunks: the last one ``final``."""
    return conversation(["call03", "call10"], "e")


@pytest.mark.parametrize("ending", ["final-chunk", "evicted"])
def test_a_call_that_ends_negative_resolves_its_sentiment_alert(angry_call, ending):
    """Nobody is left on a call that is over to recover: its alert stayed open for good, an incident for ever."""
    spec = audio_flow(CONFIG)
    procs: dict = {}
    if ending == "final-chunk":
        emits = run_local(spec, angry_call, procs)
    else:  # the final chunk never came: the engine evicts the idle key
        emits = run_local(spec, angry_call[:-1], procs)
        emits += flushed(spec, procs["e"]) or []
    alerts = sentiment_alerts(emits)
    assert [a["status"] for a in alerts] == ["OPENED", "RESOLVED"]
    assert alerts[1]["alert_key"] == alerts[0]["alert_key"] and alerts[1]["summary"].startswith("conversation e ")
    assert alerts[1]["event_time"] == by_topic(emits, "transcripts")[-1]["event_time"]
    assert sentiment_alerts(flushed(spec, procs["e"]) or []) == []  # resolved once
    escalation = [a for a in by_topic(emits, "alerts") if a["source"] == "audio-routing"]
    assert [a["status"] for a in escalation] == ["OPENED", "RESOLVED"]
    assert [r["action"] for r in by_topic(emits, "routing")] == ["escalate_supervisor", "keep"]


def test_a_transcript_conversation_evicted_while_negative_resolves_its_alert_and_keeps_that_across_a_restore():
    proc = SentimentProcessor("c", CONFIG.to_dict())
    emits = proc.process([transcript("c", i, t) for i, t in enumerate(["this is awful", "terrible, the worst"])])
    assert [a["status"] for a in sentiment_alerts(emits)] == ["OPENED"]
    restored = decode_processor(encode_processor(proc, "c"), SentimentProcessor("c", CONFIG.to_dict()))
    out = flushed(sentiment_flow(CONFIG), restored) or []
    ended = sentiment_alerts(out)
    assert [(a["status"], a["details"]["segment"], a["event_time"]) for a in ended] == [("RESOLVED", "1", 1000)]
    assert "went silent" in ended[0]["summary"]
    assert [(e.topic, e.record.get("action") or e.record["status"]) for e in out if e.topic != "scores.sentiment"] == [
        ("routing", "keep"), ("alerts", "RESOLVED"), ("alerts", "RESOLVED")]  # the escalation's, and the sentiment's
    again = decode_processor(encode_processor(restored, "c"), SentimentProcessor("c", CONFIG.to_dict()))
    assert sentiment_alerts(again.flush()) == []


def test_a_call_ends_after_its_newest_segment_though_a_late_one_was_scored_last():
    """A late segment, scored after later ones, dated and numbered the call's end before the alert it resolved."""
    proc = SentimentProcessor("c", CONFIG.to_dict())
    emits = proc.process([transcript("c", i, t) for i, t in [(0, "hello"), (2, "this is awful, I am furious"),
                                                              (3, "terrible, the worst, I am so angry")]])
    emits += proc.process([transcript("c", 1, "ok")])  # its gap was skipped: scored late
    assert [a["status"] for a in sentiment_alerts(emits)] == ["OPENED"]
    ended = proc.flush()
    assert {(r["event_time"], int(r["details"]["segment"])) for r in by_topic(ended, "alerts")} == {(3000, 3)}
    assert [(r["segment"], r["action"]) for r in by_topic(ended, "routing")] == [(3, "keep")]
