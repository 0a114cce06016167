"""Every refusal the gateway's WebSockets close with: its reason fits a close frame (RFC 6455: 123 bytes) and ends
with advice that this kind of client can follow."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from contextlib import ExitStack
from typing import Any

import pytest
from starlette.testclient import TestClient
from starlette.websockets import WebSocketDisconnect

from connectors.broker import free_port
from connectors.gateway import GatewaySettings, calls, create_app
from connectors.gateway.errors import GatewayError
from connectors.kafka import DeliveryError, EventProducer, KafkaSettings

TOKEN, OTHER = "close-unit-token-0123456789", "close-edge-token-0123456789"
AUTH, EDGE = {"Authorization": f"Bearer {TOKEN}"}, {"Authorization": f"Bearer {OTHER}"}
SID = "CA" + "0" * 32  # a Twilio call id's length
START = json.dumps({"event": "start", "start": {"callSid": SID}})
MEDIA = json.dumps({"event": "media", "media": {"payload": base64.b64encode(b"\xff" * 1600).decode()}})
STOP = json.dumps({"event": "stop"})
CLOSE_REASON_BYTES = 123  # RFC 6455 5.5: 125 bytes of payload, two of them the code
LONG_ID = "conversation-" + "x" * 80
GONE = "cannot produce: the broker went away (KafkaError{code=_TRANSPORT,val=-195,str=\"Disconnected\"})"


def _without_denials(app: Any) -> Any:
    """A server that cannot answer a WebSocket with HTTP (no ``websocket.http.response``): refusals before
    ``accept`` are closes with a reason too."""

    async def served(scope: dict, receive: Any, send: Any) -> None:
        await app({**scope, "extensions": {}} if scope["type"] == "websocket" else scope, receive, send)

    return served


@pytest.fixture
def gateway() -> Iterator[Any]:
    """Make a gateway with settings of its own, whose producer points at a closed port; yields its maker."""
    with ExitStack() as opened:

        def make(**overrides: Any) -> tuple[TestClient, Any]:
            settings = GatewaySettings(**{"tokens": {"unit": TOKEN, "edge": OTHER}, "create_topics": False,
                                          "shutdown_flush_s": 0, **overrides})
            kafka = KafkaSettings(bootstrap_servers=f"127.0.0.1:{free_port()}")
            app = create_app(settings, kafka, EventProducer(kafka, log_level=0))
            return opened.enter_context(TestClient(_without_denials(app))), app.state.gateway

        yield make


def _closed_with(client: TestClient, path: str, sends: list[str | bytes], headers: dict | None = None) -> str:
    """The reason of the close that answers ``sends`` on ``path``."""
    try:
        with client.websocket_connect(path, headers=AUTH if headers is None else headers) as ws:
            for frame in sends:
                ws.send_bytes(frame) if isinstance(frame, bytes) else ws.send_text(frame)
            while (message := ws.receive())["type"] != "websocket.close":
                assert json.loads(message["text"])["status"] == 202, message
            return message["reason"]
    except WebSocketDisconnect as closed:  # refused before accept
        return closed.reason


def _broker_gone(gateway: Any, after: int) -> None:
    """The broker takes ``after`` events, then refuses every one."""
    produce, taken = gateway.producer.produce_raw, []

    def broker(*args: Any) -> None:
        if len(taken) >= after:
            raise DeliveryError(GONE)
        taken.append(produce(*args))

    gateway.producer.produce_raw = broker


def _case(make: Any, refusal: str) -> tuple[str, str]:
    """Construct ``refusal``; the close reason it gets, and how that reason must end."""
    stream = "/v1/audio/stream?conversation_id="
    if refusal == "stream: a token without the audio scope":
        client, _ = make(scopes={"edge": ["sensor_batch", "click"]})
        return _closed_with(client, f"{stream}a", [], EDGE), "ask for a token with that scope in [gateway] scopes"
    if refusal == "twilio: a token without the audio scope":
        client, _ = make(scopes={"edge": ["sensor_batch", "click"]})
        start = {"event": "start", "start": {"callSid": SID, "customParameters": {"token": OTHER}}}
        return (_closed_with(client, "/v1/audio/twilio", [json.dumps(start)], {}),
                "ask for a token with that scope in [gateway] scopes")
    if refusal.endswith("a token whose key scopes do not cover the call"):
        client, _ = make(key_scopes={"edge": ["edge-*"]})
        start = {"event": "start", "start": {"callSid": SID, "customParameters": {"token": OTHER}}}
        closed = (_closed_with(client, "/v1/audio/twilio", [json.dumps(start)], {}) if refusal.startswith("twilio")
                  else _closed_with(client, f"{stream}{LONG_ID}", [], EDGE))
        return closed, "ask for one whose [gateway] key_scopes cover it"
    if refusal == "twilio: no token in time":
        client, _ = make(head_timeout_s=0.05)
        return (_closed_with(client, "/v1/audio/twilio", [json.dumps({"event": "connected"})], {}),
                'give the TwiML <Stream> a <Parameter name="token">')
    client, gateway = make(rates={"edge": 2}, rate_burst_s=1, max_body_bytes=24_000)
    gateway.rates.clock = lambda: 0.0  # no refill while the test runs
    if refusal == "stream: a call streaming on another connection":
        with client.websocket_connect(f"{stream}{LONG_ID}", headers=AUTH):
            return (_closed_with(client, f"{stream}{LONG_ID}", []),
                    "close it first, or wait until it is noticed gone")
    if refusal == "stream: a seq that is no number":
        return _closed_with(client, f"{stream}a&seq={'x' * 120}", []), "send a whole number"
    if refusal == "stream: a sample rate not supported":
        return _closed_with(client, f"{stream}a&sample_rate={'9' * 60}", []), "32000, 44100, 48000"
    if refusal == "stream: a frame over the size limit":
        return _closed_with(client, f"{stream}a", [b"\0" * 24_002]), "and send shorter frames"
    if refusal == "stream: a frame of more chunks than the token may send at once":
        return (_closed_with(client, f"{stream}a&chunk_ms=10", [b"\0\0" * 480], EDGE),
                "send again the audio from chunk 0 on, in shorter frames")
    if refusal == "stream: over the token's rate":
        return (_closed_with(client, f"{stream}a&chunk_ms=10", [b"\0\0" * 320, b"\0\0" * 160], EDGE),
                "reconnect in 1 s with &seq=2 and send again the audio from chunk 2 on")
    if refusal == "stream: the broker refuses part of the way":
        _broker_gone(gateway, 1)
        return (_closed_with(client, f"{stream}a", [b"\0\0" * 9600]),
                "reconnect in 1 s with &seq=0 and send again the audio from chunk 0 on")
    if refusal == "stream: the broker is behind":
        gateway.backpressure.max_queue = 1  # the first chunk waits for a broker that is not there
        return (_closed_with(client, f"{stream}a", [b"\0\0" * 3200, b"\0\0" * 3200]),
                "reconnect in 1 s with &seq=1 and send again the audio from chunk 1 on")
    if refusal == "twilio: over the token's rate":
        return (_closed_with(client, "/v1/audio/twilio", [START] + [MEDIA] * 5 + [STOP], EDGE),
                "Twilio cannot send audio again: raise this token's [gateway] rates")
    if refusal == "twilio: the broker refuses part of the way":
        _broker_gone(gateway, 1)
        return (_closed_with(client, "/v1/audio/twilio", [START] + [MEDIA] * 3 + [STOP]),
                "Twilio cannot send audio again: see the gateway's /health and log")
    if refusal == "twilio: the broker is behind":
        gateway.backpressure.max_queue = 1  # the first chunk waits for a broker that is not there
        return (_closed_with(client, "/v1/audio/twilio", [START] + [MEDIA] * 3 + [STOP]),
                "Twilio cannot send audio again: see the gateway's /health and log")
    if refusal == "twilio: a frame over the size limit":
        return (_closed_with(client, "/v1/audio/twilio", ["x" * 24_001]),
                "Twilio sizes its frames: raise [gateway] max_body_bytes")
    if refusal == "twilio: a call started again at another rate":
        again = {"event": "start", "start": {"callSid": SID, "mediaFormat": {"sampleRate": 16000}}}
        return (_closed_with(client, "/v1/audio/twilio", [START, MEDIA, json.dumps(again)]),
                "open a new stream for a new format")
    if refusal == "twilio: a rate not supported":
        start = {"event": "start", "start": {"callSid": SID, "mediaFormat": {"sampleRate": 4000}}}
        return _closed_with(client, "/v1/audio/twilio", [json.dumps(start)]), "32000, 44100, 48000"
    if refusal == "twilio: an unknown event":
        return (_closed_with(client, "/v1/audio/twilio", [json.dumps({"event": "x" * 200})]),
                "send connected, start, media, mark, dtmf or stop")
    if refusal == "twilio: a media format that is no object of integers":
        start = {"event": "start", "start": {"callSid": SID, "mediaFormat": {"sampleRate": "x"}}}
        return _closed_with(client, "/v1/audio/twilio", [json.dumps(start)]), '{"sampleRate": 8000, "channels": 1}'
    if refusal == "ws: an unknown token":
        return _closed_with(client, "/v1/ws", [], {"Authorization": "Bearer nope"}), "ask for one in [gateway] tokens"
    raise AssertionError(refusal)


REFUSALS = [
    "stream: a token without the audio scope",
    "twilio: a token without the audio scope",
    "twilio: no token in time",
    "stream: a token whose key scopes do not cover the call",
    "twilio: a token whose key scopes do not cover the call",
    "stream: a call streaming on another connection",
    "stream: a seq that is no number",
    "stream: a sample rate not supported",
    "stream: a frame over the size limit",
    "stream: a frame of more chunks than the token may send at once",
    "stream: over the token's rate",
    "stream: the broker refuses part of the way",
    "stream: the broker is behind",
    "twilio: over the token's rate",
    "twilio: the broker refuses part of the way",
    "twilio: the broker is behind",
    "twilio: a frame over the size limit",
    "twilio: a call started again at another rate",
    "twilio: a rate not supported",
    "twilio: an unknown event",
    "twilio: a media format that is no object of integers",
    "ws: an unknown token",
]


@pytest.mark.parametrize("refusal", REFUSALS)
def test_every_close_reason_fits_and_ends_with_advice_its_client_can_follow(gateway, monkeypatch,
                                                                            refusal: str) -> None:
    monkeypatch.setattr(calls, "BACKPRESSURE_WAIT_S", 0.05)
    reason, advice = _case(gateway, refusal)
    assert len(reason.encode()) <= CLOSE_REASON_BYTES, reason
    assert reason.endswith(advice), reason
    assert "event_id" not in reason and "array" not in reason, reason  # a call client has neither


def test_a_close_reason_shortens_what_is_wrong_and_keeps_what_to_do_whole() -> None:
    refusal = GatewayError(503, "broker_unavailable", "é" * 200 + "; retry with the same event_id")
    reason = refusal.close_reason()
    assert len(reason.encode()) <= CLOSE_REASON_BYTES and reason.startswith("broker_unavailable: éé")
    assert reason.endswith("…; retry with the same event_id")
    short = GatewayError(429, "rate_limited", "too fast; retry after 1 s")
    assert short.close_reason() == "rate_limited: too fast; retry after 1 s"
    assert short.advise("reconnect later").message == "too fast; reconnect later"
