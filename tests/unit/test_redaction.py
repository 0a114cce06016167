"""Transcripts lose card and phone numbers and e-mail addresses: on text, and on recorded calls through the flow."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from connectors.wav import chunk_records, read_wav
from streams.flows.audio import AudioFlowConfig, AudioSettings, SentimentProcessor, audio_flow
from streams.flows.redaction import RedactionConfig, Redactor, luhn_ok, number_runs
from streams.processor import Event, run_local

PRIVATE = Path(__file__).resolve().parents[1] / "data" / "audio" / "private"
PLAIN = Path(__file__).resolve().parents[1] / "data" / "audio" / "call02.wav"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("my card is 4111 1111 1111 1111 thanks", "my card is [CARD] thanks"),
        ("card 4111-1111-1111-1111.", "card [CARD]."),
        ("four one one one one one one one one one one one one one one one", "[CARD]"),
        ("it is 5555 5555 5555 4444, expiry", "it is [CARD], expiry"),
        ("card 4,111,101, 111,101,101,101,101", "card [NUMBER]"),  # a misheard card: 22 digits
        ("call 202-555-0199 please", "call [PHONE] please"),
        ("call (415) 555 2671", "call [PHONE]"),
        ("call +44 20 7946 0958 now", "call [PHONE] now"),
        ("two zero two five five five zero one nine nine", "[PHONE]"),
        ("five five five, twelve thirty-four, double oh seven", "[PHONE]"),
        ("mail ann.lee+x@example.co.uk today", "mail [EMAIL] today"),
        ("my email is john dot smith at example dot com.", "my email is [EMAIL]."),
        ("my email is john dot smith and example dot com", "my email is [EMAIL]"),
        ("it is john underscore doe at gmail dot com", "it is [EMAIL]"),  # said punctuation: no "john" left
        ("it is ann dash lee hyphen x at mail dot co dot uk", "it is [EMAIL]"),
        ("it's j o h n dot s m i t h at gmail dot com", "it's [EMAIL]"),  # spelled out, letter by letter
        ("my email is j o h n at a c m e dot com", "my email is [EMAIL]"),  # a spelled domain: all of it was left
        ("it is john dot smith at k w x dash c o dot io", "it is [EMAIL]"),
        ("one one one one one one one one one one one one one one one one one one", "[NUMBER]"),
    ],
)
def test_card_phone_and_email_are_redacted(text: str, expected: str) -> None:
    assert Redactor().redact(text)[0] == expected


@pytest.mark.parametrize(
    "text",
    [
        "I waited three weeks for a refund of 120 dollars",
        "order 4111 1111 1111 1112",  # 16 digits failing Luhn: too long for a phone, kept as [NUMBER]
        "oh no, one more thing at nine",
        "we met at the office",
        "call me in 5 minutes or 10",
    ],
)
def test_ordinary_speech_keeps_its_numbers(text: str) -> None:
    redacted, found = Redactor().redact(text)
    if "1112" in text:
        assert redacted == "order [NUMBER]"
    else:
        assert (redacted, found) == (text, {})


def test_digits_that_are_no_decimal_digits_are_text_not_a_crash() -> None:
    """``str.isdigit`` holds for "²" and "④", which ``int`` refuses: one such chat message failed its whole batch."""
    assert Redactor().redact("a room of 12 m², see note ¹²³⁴⁵⁶⁷⁸⁹¹²³⁴ and ①②③④⑤⑥⑦⑧⑨①②③④")[1] == {}
    assert Redactor().redact("card ٤١١١ ١١١١ ١١١١ ١١١١")[0] == "card [CARD]"  # other scripts' digits still count
    proc = SentimentProcessor("c1", AudioFlowConfig(sentiment_model="vader").to_dict())
    texts = ["my card is 4111 1111 1111 1111", "footnote ¹²³⁴⁵⁶⁷⁸⁹¹²³⁴ of the contract"]
    out = proc.process([Event("transcripts", "c1", {"event_id": f"t{i}", "event_time": i, "conversation_id": "c1",
                                                    "segment": i, "text": t}) for i, t in enumerate(texts)])
    assert [e.record["text"] for e in out if e.topic == "scores.sentiment"] == ["my card is [CARD]", texts[1]]


def test_luhn_and_runs() -> None:
    assert luhn_ok("79927398713") and not luhn_ok("79927398710")
    assert [d for *_, d in number_runs("4 1 1 1-2 and then twenty one and double five")] == ["41112", "21", "55"]
    # "two" heard as "to" between single digits (Whisper on an AMD EPYC): still one number, to be redacted whole
    assert Redactor(RedactionConfig()).redact("call me to 0 to 5, 5, 5, 0, 1, 9, anytime")[0] == \
        "call me to [PHONE], anytime"
    assert [d for *_, d in number_runs("open 9 to 5, to 4 people")] == ["925", "4"]


def test_extra_patterns_and_switches_come_from_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EDDYLINE_AUDIO_REDACT_PATTERNS", '["account\\\\s+\\\\w+\\\\d"]')
    config = AudioSettings().flow_config()
    assert config.redaction.enabled and config.redaction.patterns
    assert Redactor(config.redaction).redact("my account AB12 is locked")[0] == "my [REDACTED] is locked"
    assert AudioFlowConfig.from_dict(config.to_dict()).redaction == config.redaction
    monkeypatch.setenv("EDDYLINE_AUDIO_REDACT", "false")
    off = AudioSettings().flow_config().redaction
    assert Redactor(off).redact("call 202-555-0199")[0] == "call 202-555-0199"
    with pytest.raises(ValueError, match="not a valid regular expression"):
        RedactionConfig(patterns=["(unclosed"])


def test_transcripts_from_elsewhere_are_redacted_before_scoring() -> None:
    proc = SentimentProcessor("c1", AudioFlowConfig(sentiment_model="vader").to_dict())
    out = proc.process([Event("transcripts", "c1", {"event_id": "t0", "event_time": 0, "conversation_id": "c1",
                                                    "segment": 0, "text": "awful, my card 4111 1111 1111 1111"})])
    assert all("4111" not in str(e.record) for e in out) and "[CARD]" in out[0].record["text"]


def _call(names: list[Path], cid: str) -> list[Event]:
    silence = np.zeros(16000, dtype="<i2").tobytes()
    pcm = silence + b"".join(read_wav(p).pcm + silence for p in names)
    return [Event("audio.chunks", cid, r, 0, i) for i, r in enumerate(chunk_records(pcm, cid, chunk_ms=250, start_ms=0))]


def test_recorded_calls_leave_the_flow_without_the_numbers_they_say() -> None:
    recordings = [PRIVATE / f"{n}.wav" for n in ("card", "card_words", "phone")] + [PLAIN]
    emits = run_local(audio_flow(AudioFlowConfig(sentiment_model="vader")), _call(recordings, "pii-call"))
    texts = [e.record["text"] for e in emits if e.topic == "transcripts"]
    assert len(texts) == len(recordings), texts
    card, card_words, phone, plain = texts
    # Whisper hears the cards with extra digits ("4,111,101, 111,..."): too long for a phone, so [NUMBER]
    assert all("[CARD]" in t or "[NUMBER]" in t for t in (card, card_words)) and "[PHONE]" in phone, texts
    for text in (card, card_words, phone):
        assert not any(ch.isdigit() for ch in text), text
        assert sum(text.lower().split().count(w) for w in ("one", "two", "five", "zero", "nine")) <= 1, text
    assert "[" not in plain and "refund" in plain, "a call without such numbers is left alone"
    leaked = [e for e in emits if e.topic != "transcripts" and any(s in str(e.record) for s in ("4,111", "202"))]
    assert not leaked, "sentiment scores and alerts carry the redacted text only"


def test_and_before_the_last_digit_word_stays_in_the_number() -> None:
    assert number_runs("zero, two, five, five, five, zero, and nine, any time") == [(0, 43, "0255509")]
    assert [d for *_, d in number_runs("twenty one and double five")] == ["21", "55"]
    assert number_runs("five and") == [(0, 4, "5")]
    assert number_runs("cats and dogs") == []
