"""Dead letters of transcripts are redacted as the flows' outputs are: a transcript the sentiment flow could not take
went to ``dlq.transcripts`` with the card number, phone number and e-mail address its caller said, for weeks."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from types import SimpleNamespace

import pytest

from connectors.dlq import dlq_info
from connectors.kafka import KafkaSettings
from schemas import TRANSCRIPT, AvroSerde
from streams.engines import bytewax
from streams.engines.faust import _FlowRunner
from streams.engines.output import PROCESSING_FAILED, FlowOutput
from streams.flows.audio import AudioFlowConfig, sentiment_flow
from streams.flows.redaction import RedactionConfig
from streams.processor import Event
from tests.unit.test_engine_faust import _Producer, _StoreTable

SETTINGS = KafkaSettings(namespace="t7.")
SAID = "my card is 4111 1111 1111 1111, call me on 415 555 0134 or mail ann.lee@example.com"
REDACTED = "my card is [CARD], call me on [PHONE] or mail [EMAIL]"
BROKEN = sentiment_flow(AudioFlowConfig(sentiment_model="/no/such/model"))  # every call raises: its events go


def transcript(offset: int, **changes) -> Event:
    return Event("transcripts", "c1", {"event_id": f"t{offset}", "event_time": 1000 + offset, "producer": "p",
                                       "conversation_id": "c1", "segment": offset, "start_ms": 0, "end_ms": 900,
                                       "text": SAID, "language": "en", "confidence": None, "model": "m", **changes},
                 0, offset)


def letters_of(messages) -> list[tuple[dict, dict]]:
    return [(AvroSerde().decode(m[2], TRANSCRIPT), dlq_info(m[3])) for m in messages if m[0] == "t7.dlq.transcripts"]


@pytest.mark.parametrize("engine", ["bytewax", "faust"])
def test_a_transcript_the_flow_could_not_take_is_dead_lettered_redacted_with_its_reason(engine: str) -> None:
    if engine == "bytewax":
        logic = bytewax._ProcessorLogic(BROKEN, FlowOutput(BROKEN, SETTINGS), None, None, None)
        [out], _ = logic.on_batch([transcript(5)])
        letters = letters_of(out.messages)
    else:  # the Faust adapter hands the message's own bytes to the dead letter
        app = SimpleNamespace(producer=_Producer())
        runner = _FlowRunner(BROKEN, SETTINGS, app=app, table=_StoreTable(), idle_after_s=None)
        ev = transcript(5)
        msg = SimpleNamespace(topic="t7.transcripts", key=b"c1", partition=0, offset=5, timestamp=0, headers=None,
                              value=AvroSerde().encode(TRANSCRIPT, ev.record))
        asyncio.run(runner.handle([SimpleNamespace(message=msg)], repartitioned=False))
        letters = letters_of(app.producer.sent)
    [(record, info)] = letters
    assert record == {**transcript(5).record, "text": REDACTED}, "still a transcript, to send again"
    assert (info["reason"], info["offset"]) == (PROCESSING_FAILED, "5")
    assert "no sentiment model at /no/such/model" in info["error"]


def test_an_invalid_transcript_is_dead_lettered_redacted_and_an_unreadable_one_keeps_no_value() -> None:
    output = FlowOutput(BROKEN, SETTINGS)
    serde = AvroSerde()
    invalid = serde.encode(TRANSCRIPT, transcript(7, event_time=-5).record, check=False)
    dead = output.decode("t7.transcripts", b"c1", invalid, 0, 7)
    assert serde.decode(dead.value, TRANSCRIPT, check=False)["text"] == REDACTED
    assert dead.reason == "invalid" and "before 1970" in dead.error
    unreadable = output.decode("t7.transcripts", b"c1", invalid[:5] + SAID.encode(), 0, 8)
    assert unreadable.value is None and unreadable.reason != "invalid"
    letter = output.dead_letter(unreadable)
    assert dlq_info(letter.headers)["offset"] == "8", "where the original is, on the source topic"


def test_a_dead_letter_is_redacted_with_the_flows_own_redaction_and_a_flow_reading_speech_must_give_one() -> None:
    """The engine redacted with the [audio] settings it read itself: a flow built to redact account numbers dead-
    lettered them in clear."""
    spec = sentiment_flow(AudioFlowConfig(sentiment_model="/no/such/model",
                                          redaction=RedactionConfig(patterns=[r"acct-\d+"])))
    output = FlowOutput(spec, SETTINGS)
    [(record, info)] = letters_of(output.processing_failed([transcript(9, text="my account is ACCT-991")],
                                                           RuntimeError("ACCT-991 refused"), output.reencoded))
    assert (record["text"], info["error"]) == ("my account is [REDACTED]", "RuntimeError: [REDACTED] refused")
    with pytest.raises(ValueError, match="FlowSpec.redact"):
        FlowOutput(replace(spec, redact=None), SETTINGS)
