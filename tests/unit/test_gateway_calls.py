"""Call audio over the gateway's WebSocket endpoints, without a broker: how a call's chunks are numbered."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from starlette.testclient import TestClient

from connectors.broker import free_port
from connectors.gateway import GatewaySettings, calls, create_app
from connectors.gateway.calls import CallNumbers
from connectors.kafka import DeliveryError, EventProducer, KafkaSettings
from schemas import AUDIO_CHUNK, AvroSerde
from streams.flows.audio import ConversationProcessor
from streams.processor import Event

TOKEN = "calls-unit-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture
def client() -> Iterator[tuple[TestClient, list[dict]]]:
    """A gateway whose producer points at a closed port, and the records it produced (they wait in its queue)."""
    settings = GatewaySettings(tokens={"calls": TOKEN}, create_topics=False, shutdown_flush_s=0)
    kafka = KafkaSettings(bootstrap_servers=f"127.0.0.1:{free_port()}")
    with TestClient(create_app(settings, kafka, EventProducer(kafka, log_level=0))) as c:
        gateway, produced = c.app.state.gateway, []
        produce = gateway.produce_records

        def keep(endpoint: Any, records: list[tuple[dict, str]], client: str, *args: Any) -> list[str]:
            produced.extend(r for r, _ in records)
            return produce(endpoint, records, client, *args)

        gateway.produce_records = keep
        yield c, produced


def stream(c: TestClient, query: str, pcm: bytes) -> list[dict]:
    with c.websocket_connect(f"/v1/audio/stream?{query}", headers=AUTH) as ws:
        ws.send_bytes(pcm)
        ws.send_text(json.dumps({"event": "stop"}))
        acks = []
        while not acks or not acks[-1]["final"]:
            acks.append(ws.receive_json())
    return acks


def test_a_call_that_reconnects_goes_on_numbering_and_its_audio_reaches_the_flow(client) -> None:
    c, produced = client
    second = np.zeros(16000, dtype="<i2").tobytes()
    first = stream(c, "conversation_id=c1", second)
    again = stream(c, "conversation_id=c1", second)  # the client lost its connection and came back
    assert [a["seq"] for a in first + again] == list(range(len(first) + len(again)))
    assert len({a["event_id"] for a in first + again}) == len(first) + len(again)
    proc = ConversationProcessor("c1")
    proc.process([Event("audio.chunks", "c1", r) for r in produced])
    assert proc.duplicates == 0 and proc.fed == 2 * 16000
    assert [r["offset_ms"] for r in produced] == [200 * i for i in range(len(produced))]  # the call's audio goes on


@pytest.mark.parametrize("refusal", ["backpressure", "partway"])
def test_a_call_refused_by_the_broker_goes_on_after_its_last_acknowledged_chunk(client, monkeypatch,
                                                                               refusal: str) -> None:
    c, _ = client
    gateway, taken, tries = c.app.state.gateway, [], []
    produce = gateway.producer.produce_raw

    def broker(topic: str, data: bytes, *args: Any) -> None:
        tries.append(topic)
        if refusal == "partway" and len(tries) == 4:  # it takes chunks 0 to 2 and refuses chunk 3
            raise DeliveryError("cannot produce: the broker went away")
        produce(topic, data, *args)
        taken.append(AvroSerde().decode(data, AUDIO_CHUNK))

    monkeypatch.setattr(gateway.producer, "produce_raw", broker)
    if refusal == "backpressure":  # the first two chunks wait for a broker that is not there: the queue is full
        monkeypatch.setattr(calls, "BACKPRESSURE_WAIT_S", 0.1)
        monkeypatch.setattr(gateway.backpressure, "max_queue", 2)
    two = np.zeros(6400, dtype="<i2").tobytes()  # two chunks of 200 ms
    with c.websocket_connect("/v1/audio/stream?conversation_id=c7", headers=AUTH) as ws:
        ws.send_bytes(two)
        acked = [ws.receive_json()["seq"] for _ in range(2)]
        ws.send_bytes(two)
        closed = ws.receive()
    assert closed["type"] == "websocket.close"  # a call cannot retry an event: it is told how to go on
    assert closed["reason"].endswith("with &seq=2 and send again the audio from chunk 2 on"), closed["reason"]
    gateway.backpressure.max_queue = 100  # the broker caught up
    acked += [a["seq"] for a in stream(c, "conversation_id=c7&seq=2", two)]  # the audio not acknowledged, again
    assert acked == [0, 1, 2, 3, 4]
    proc = ConversationProcessor("c7")
    proc.process([Event("audio.chunks", "c7", r) for r in taken])
    assert proc.gaps == 0 and proc.fed == 4 * 3200  # no silence where no audio was lost
    assert [r["offset_ms"] for r in taken if r["seq"] == 3] == [600]


def test_a_call_streams_on_one_connection_at_a_time(client) -> None:
    from starlette.testclient import WebSocketDenialResponse

    c, _ = client
    with c.websocket_connect("/v1/audio/stream?conversation_id=c2", headers=AUTH) as ws:
        with pytest.raises(WebSocketDenialResponse) as refused, c.websocket_connect(
                "/v1/audio/stream?conversation_id=c2", headers=AUTH):
            pass
        assert refused.value.status_code == 409 and "another connection" in refused.value.json()["message"]
        ws.send_bytes(b"\0\0" * 3200)
        assert ws.receive_json()["seq"] == 0
    assert [a["seq"] for a in stream(c, "conversation_id=c2", b"\0\0" * 3200)] == [2, 3]  # after its final, 1


def test_a_reconnect_to_another_gateway_process_says_where_to_go_on(client) -> None:
    c, produced = client
    assert [a["seq"] for a in stream(c, "conversation_id=c3&seq=40", b"\0\0" * 3200)] == [40, 41]
    assert produced[0]["offset_ms"] == 40 * 200
    assert [a["seq"] for a in stream(c, "conversation_id=c3&seq=7", b"")] == [42]  # never back over numbers used
    from starlette.testclient import WebSocketDenialResponse

    with pytest.raises(WebSocketDenialResponse) as refused, c.websocket_connect(
            "/v1/audio/stream?conversation_id=c3&seq=-1", headers=AUTH):
        pass
    assert refused.value.status_code == 400


def test_a_second_twilio_stream_of_a_call_goes_on_numbering_its_tracks(client) -> None:
    c, produced = client
    payload = base64.b64encode(bytes([0xFF]) * 1600).decode()  # 200 ms of mu-law silence at 8 kHz
    for _ in range(2):
        with c.websocket_connect("/v1/audio/twilio", headers=AUTH) as ws:
            ws.send_text(json.dumps({"event": "start", "start": {"callSid": "CA9"}}))
            for track in ("inbound", "outbound"):
                ws.send_text(json.dumps({"event": "media", "media": {"track": track, "payload": payload}}))
            ws.send_text(json.dumps({"event": "stop"}))
            assert ws.receive()["type"] == "websocket.close"
    for conversation in ("CA9", "CA9/outbound"):
        seqs = [r["seq"] for r in produced if r["conversation_id"] == conversation]
        assert seqs == [0, 1], conversation  # a final chunk each


def test_a_twilio_call_ended_by_the_next_calls_start_numbers_on_after_its_final_chunk(client) -> None:
    c, produced = client
    payload = base64.b64encode(bytes([0xFF]) * 1600).decode()
    for calls_started in (["CA7", "CA8"], ["CA7"]):  # CA7's final chunk goes out after CA8's start closed its track
        with c.websocket_connect("/v1/audio/twilio", headers=AUTH) as ws:
            for sid in calls_started:
                ws.send_text(json.dumps({"event": "start", "start": {"callSid": sid}}))
                ws.send_text(json.dumps({"event": "media", "media": {"payload": payload}}))
            ws.send_text(json.dumps({"event": "stop"}))
            assert ws.receive()["type"] == "websocket.close"
    assert [r["seq"] for r in produced if r["conversation_id"] == "CA7"] == [0, 1]


def test_a_twilio_stream_naming_a_track_twilio_never_sends_is_refused(client) -> None:
    """Every track is a call of its own until the stream ends, with a final chunk then: a stream naming new tracks
    without end held a call each in memory and produced thousands of final chunks at its stop."""
    c, produced = client
    payload = base64.b64encode(b"\xff").decode()
    with c.websocket_connect("/v1/audio/twilio", headers=AUTH) as ws:
        ws.send_text(json.dumps({"event": "start", "start": {"callSid": "CA5"}}))
        for track in ("inbound", "outbound", "t1", "t2"):
            ws.send_text(json.dumps({"event": "media", "media": {"track": track, "payload": payload}}))
        ws.send_text(json.dumps({"event": "stop"}))
        closed = ws.receive()
    assert closed["type"] == "websocket.close" and closed["code"] == 1003 and "inbound or outbound" in closed["reason"]
    assert {r["conversation_id"] for r in produced} <= {"CA5", "CA5/outbound"}
    assert not calls.call_numbers(c.app.state.gateway).live


def test_a_gateway_process_remembers_a_bounded_number_of_calls() -> None:
    from connectors.gateway.audio import CallAudio

    numbers = CallNumbers(size=2)
    for conversation in ("a", "b", "c"):
        call = CallAudio(conversation)
        numbers.open(call)
        numbers.produced(call.feed(np.zeros(3200, dtype="<i2")))
        numbers.close(call)
    assert {c: n.after for c, n in numbers.ended.items()} == {"b": 1, "c": 1} and not numbers.live


def test_a_reconnect_goes_back_only_over_the_chunks_of_its_calls_last_connection() -> None:
    from connectors.gateway.audio import CallAudio

    numbers, seqs = CallNumbers(), []

    def connection(first: int | None, chunks: int, chunk_ms: int = 200) -> None:
        call = CallAudio("c", chunk_ms=chunk_ms)
        numbers.open(call, first)
        records = call.feed(np.zeros(chunks * call.chunk_bytes // 2, dtype="<i2"))
        numbers.produced(records)
        numbers.close(call)
        seqs.append([r["seq"] for r in records])

    connection(None, 3)  # 0 to 2 produced; the client heard of 0 only
    connection(1, 3)  # it sends 1 and 2 again, and 3
    connection(2, 2)  # cut off again, having heard of 1: from 2 (acknowledgements before 1 it had already)
    connection(0, 1)  # not audio sent again, but numbers it knew were taken: a stream of its own goes on
    connection(4, 1, chunk_ms=100)  # other boundaries: its chunk 4 would be other audio than the one taken
    assert seqs == [[0, 1, 2], [1, 2, 3], [2, 3], [4], [5]]


@pytest.mark.parametrize(("path", "frame"), [
    ("/v1/audio/twilio", "[" * 100_000 + "]" * 100_000),  # deeper than the JSON parser goes
    ("/v1/audio/twilio", '{"event": "start", "start": {"callSid": "CA1", "mediaFormat": {"sampleRate": 1e400}}}'),
    ("/v1/audio/twilio", '{"event": "start", "start": {"callSid": "CA1", "mediaFormat": {"sampleRate": NaN}}}'),
    ("/v1/audio/stream?conversation_id=c5", "[" * 100_000 + "]" * 100_000),
])
def test_a_malformed_call_frame_is_refused_with_1003_and_a_reason(client, path: str, frame: str) -> None:
    c, produced = client
    with c.websocket_connect(path, headers=AUTH) as ws:
        ws.send_text(frame)
        closed = ws.receive()
    assert closed["type"] == "websocket.close" and closed["code"] == 1003 and closed["reason"]
    assert not produced


@pytest.mark.parametrize("path", ["/v1/audio/stream?conversation_id=c6", "/v1/audio/twilio"])
def test_a_call_whose_handling_fails_unexpectedly_is_closed_with_1011_and_a_reason(client, path: str,
                                                                                    caplog) -> None:
    c, _ = client

    def broken(*args: Any) -> list[str]:
        raise KeyError("a bug")

    c.app.state.gateway.produce_records = broken
    with c.websocket_connect(path, headers=AUTH) as ws:
        if "twilio" in path:
            ws.send_text(json.dumps({"event": "start", "start": {"callSid": "CA6"}}))
            payload = base64.b64encode(b"\xff" * 4000).decode()  # 500 ms: a chunk to produce
            ws.send_text(json.dumps({"event": "media", "media": {"payload": payload}}))
        else:
            ws.send_bytes(b"\0\0" * 3200)
        closed = ws.receive()
    assert closed["type"] == "websocket.close" and closed["code"] == 1011 and "internal_error" in closed["reason"]
    assert "a bug" in caplog.text  # the traceback is in the gateway's log, not the client's


def test_a_twilio_stream_that_sends_no_token_in_time_is_closed() -> None:
    """A Twilio stream is accepted before its token, which comes in its 'start': one that never sent it held its
    connection for ever, however little or much else it sent. On real WebSockets; one that sends its token in
    time streams on past the deadline."""
    from websockets.exceptions import ConnectionClosed
    from websockets.sync.client import connect

    from tests.fixtures.gateway import serve_gateway

    settings = GatewaySettings(tokens={"calls": TOKEN}, create_topics=False, shutdown_flush_s=0, head_timeout_s=0.5)
    start = {"event": "start", "start": {"callSid": "CA1", "customParameters": {"token": TOKEN}}}
    media = {"event": "media", "media": {"payload": base64.b64encode(b"\xff" * 160).decode()}}
    with serve_gateway(settings, KafkaSettings(bootstrap_servers=f"127.0.0.1:{free_port()}")) as gw:
        url = gw.url.replace("http://", "ws://") + "/v1/audio/twilio"
        with connect(url) as twilio, connect(url) as quiet, connect(url) as chatty:
            twilio.send(json.dumps(start))
            chatty.send(json.dumps({"event": "connected"}))
            for ws in (quiet, chatty):
                with pytest.raises(ConnectionClosed) as closed:
                    ws.recv(timeout=60)  # only ends a hung test
                assert closed.value.rcvd.code == 1008 and closed.value.rcvd.reason.startswith("missing_token")
            twilio.send(json.dumps(media))  # past its deadline too (it connected first): authenticated, it goes on
            twilio.send(json.dumps({"event": "stop"}))
            with pytest.raises(ConnectionClosed) as ended:
                twilio.recv(timeout=60)
            assert ended.value.rcvd.code == 1000
