"""Recorded calls streamed into the gateway as binary PCM16 frames and as a Twilio media stream (mu-law, 8 kHz),
through the real broker and the audio flow with the shipped models: each way yields the transcript and sentiment."""

from __future__ import annotations

import base64
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import uuid
from typing import Any

import numpy as np
import pytest
from scipy.signal import resample_poly
from websockets.exceptions import ConnectionClosed, ConnectionClosedError, InvalidStatus
from websockets.sync.client import connect

from benchmarks.wer import read_references
from connectors.gateway import GatewaySettings
from connectors.gateway.audio import mulaw_encode
from connectors.kafka import KafkaSettings, read_topic
from connectors.wav import read_wav
from models.speech import word_error_rate
from schemas import AUDIO_CHUNK, SENTIMENT_SCORE, TRANSCRIPT, AvroSerde
from tests.fixtures.gateway import serve_gateway
from tests.integration.test_audio_flow import CALL, DATA, FLOW, collect

pytestmark = pytest.mark.integration
TOKEN = "calls-token-0123456789abcdef"
serde = AvroSerde()


def _recording() -> np.ndarray:
    silence = np.zeros(8000, dtype="<i2").tobytes()
    pcm = b"".join(silence + read_wav(DATA / f"{n}.wav").pcm for n in CALL) + silence
    return np.frombuffer(pcm, dtype="<i2")


def _stream_binary(url: str, conversation: str, samples: np.ndarray) -> list[dict]:
    with connect(f"{url}/v1/audio/stream?conversation_id={conversation}&sample_rate=16000",
                 additional_headers={"Authorization": f"Bearer {TOKEN}"}) as ws:
        for i in range(0, len(samples), 320):  # 20 ms frames
            ws.send(samples[i : i + 320].tobytes())
        ws.send(json.dumps({"event": "stop"}))
        acks = [json.loads(m) for m in ws]
    return acks


def _stream_twilio(url: str, call_sid: str, samples: np.ndarray) -> None:
    mulaw = mulaw_encode(resample_poly(samples.astype(np.float64), 1, 2).round().clip(-32768, 32767))
    with connect(f"{url}/v1/audio/twilio") as ws:  # Twilio cannot send headers: the token is a parameter
        ws.send(json.dumps({"event": "connected", "protocol": "Call", "version": "1.0.0"}))
        ws.send(json.dumps({"event": "start", "sequenceNumber": "1", "streamSid": "MZ1", "start": {
            "callSid": call_sid, "streamSid": "MZ1", "tracks": ["inbound"], "customParameters": {"token": TOKEN},
            "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1}}}))
        for n, i in enumerate(range(0, len(mulaw), 160)):
            ws.send(json.dumps({"event": "media", "sequenceNumber": str(n + 2), "streamSid": "MZ1", "media": {
                "track": "inbound", "chunk": str(n + 1), "timestamp": str(n * 20),
                "payload": base64.b64encode(mulaw[i : i + 160]).decode()}}))
        ws.send(json.dumps({"event": "stop", "streamSid": "MZ1", "stop": {"callSid": call_sid}}))
        for _ in ws:  # the gateway answers nothing and closes when the stop is handled
            pass


def test_a_call_streamed_both_ways_yields_transcripts_and_sentiment(kafka_settings: KafkaSettings) -> None:
    samples = _recording()
    binary, twilio = f"bin-{uuid.uuid4().hex[:6]}", f"CA{uuid.uuid4().hex[:12]}"
    settings = GatewaySettings(tokens={"calls": TOKEN}, shutdown_flush_s=5)
    with serve_gateway(settings, kafka_settings) as gw:
        url = gw.url.replace("http://", "ws://")
        acks = _stream_binary(url, binary, samples)
        _stream_twilio(url, twilio, samples)
        with pytest.raises(InvalidStatus):  # no token, no audio
            connect(f"{url}/v1/audio/stream?conversation_id=x").close()
    chunks = [serde.decode(m.value(), AUDIO_CHUNK) for m in read_topic(kafka_settings, "audio.chunks", idle=2)]
    for conversation in (binary, twilio):
        mine = sorted((c for c in chunks if c["conversation_id"] == conversation), key=lambda c: c["seq"])
        assert [c["seq"] for c in mine] == list(range(len(mine)))
        assert mine[-1]["final"] and not any(c["final"] for c in mine[:-1])
        assert abs(sum(len(c["pcm"]) for c in mine) / 2 - len(samples)) <= 2
    assert [a["seq"] for a in acks] == list(range(len(acks))) and acks[-1]["final"]
    env = {**os.environ, "EDDYLINE_KAFKA_BOOTSTRAP_SERVERS": kafka_settings.bootstrap_servers,
           "EDDYLINE_KAFKA_NAMESPACE": kafka_settings.namespace}
    proc = subprocess.Popen([sys.executable, "-c", FLOW], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            start_new_session=True)
    try:
        transcripts = collect(kafka_settings, "transcripts", TRANSCRIPT, 2 * len(CALL), timeout=240)
        scores = collect(kafka_settings, "scores.sentiment", SENTIMENT_SCORE, 2 * len(CALL), timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        log = proc.communicate(timeout=30)[0].decode(errors="replace")[-3000:]
    refs = read_references(DATA)
    by_source = {s["source_event_id"]: s for s in scores.values()}
    # telephone audio (mu-law, 8 kHz) loses the upper half of the band: Whisper tiny misses a word more
    for conversation, max_wer in ((binary, 0.2), (twilio, 0.35)):
        mine = sorted((t for t in transcripts.values() if t["conversation_id"] == conversation),
                      key=lambda t: t["segment"])
        assert len(mine) == len(CALL), log
        wer = word_error_rate([refs[n] for n in CALL], [t["text"] for t in mine])
        assert wer < max_wer, (conversation, wer, [t["text"] for t in mine])
        assert [by_source[t["event_id"]]["label"] for t in mine] == ["negative", "positive"], log


def test_call_streams_say_what_is_wrong(kafka_settings: KafkaSettings) -> None:
    settings = GatewaySettings(tokens={"calls": TOKEN}, shutdown_flush_s=5)
    auth = {"Authorization": f"Bearer {TOKEN}"}
    with serve_gateway(settings, kafka_settings) as gw:
        url = gw.url.replace("http://", "ws://")
        with pytest.raises(InvalidStatus):  # no conversation id: refused before the socket opens
            connect(f"{url}/v1/audio/stream?sample_rate=16000", additional_headers=auth).close()
        with pytest.raises(InvalidStatus):
            connect(f"{url}/v1/audio/stream?conversation_id=c&sample_rate=7000", additional_headers=auth).close()
        with connect(f"{url}/v1/audio/stream?conversation_id=c-text", additional_headers=auth) as ws:
            ws.send("hello")
            with pytest.raises(ConnectionClosed) as closed:
                ws.recv()
        assert closed.value.rcvd.code == 1003 and "binary PCM16" in closed.value.rcvd.reason
        with connect(f"{url}/v1/audio/twilio") as ws:
            ws.send(json.dumps({"event": "start", "start": {"callSid": "CA1", "customParameters": {"token": "wrong"}}}))
            with pytest.raises(ConnectionClosed) as closed:
                ws.recv()
        assert closed.value.rcvd.code == 1008
        with connect(f"{url}/v1/audio/twilio", additional_headers=auth) as ws:
            ws.send(json.dumps({"event": "media", "media": {"payload": "AAAA"}}))
            with pytest.raises(ConnectionClosed) as closed:
                ws.recv()
        assert closed.value.rcvd.code == 1003 and "before 'start'" in closed.value.rcvd.reason
    assert not read_topic(kafka_settings, "audio.chunks", timeout=3, idle=1)


def test_audio_cut_off_between_produce_and_ack_is_sent_again_under_its_numbers(kafka_settings: KafkaSettings) -> None:
    audio = (np.arange(3 * 3200) % 97).astype("<i2").tobytes()  # three chunks of 200 ms, each its own
    two, third = audio[: 2 * 6400], audio[2 * 6400 :]
    with serve_gateway(GatewaySettings(tokens={"calls": TOKEN}, shutdown_flush_s=5), kafka_settings) as gw:
        url = gw.url.replace("http://", "ws://") + "/v1/audio/stream?conversation_id=c-cut"
        gateway, auth = gw.app.state.gateway, {"Authorization": f"Bearer {TOKEN}"}
        produce, cut = gateway.produce_records, threading.Event()

        def then_cut_off(*args: Any) -> list[str]:
            ids = produce(*args)
            if not cut.is_set():  # the broker took the chunks; the connection goes before their acknowledgements
                cut.set()
                client.socket.shutdown(socket.SHUT_RDWR)
            return ids

        gateway.produce_records = then_cut_off
        with connect(url, additional_headers=auth) as client:
            client.send(two)
            with pytest.raises(ConnectionClosedError) as closed:
                client.recv()
        assert cut.is_set(), closed.value
        with connect(url + "&seq=0", additional_headers=auth) as ws:  # no seq acknowledged: from chunk 0, again
            ws.send(two + third)
            ws.send(json.dumps({"event": "stop"}))
            acks = [json.loads(m)["seq"] for m in ws]
    assert acks == [0, 1, 2, 3]
    first: dict[int, dict] = {}
    for m in read_topic(kafka_settings, "audio.chunks", idle=2):  # the flow keeps a number's first chunk
        chunk = serde.decode(m.value(), AUDIO_CHUNK)
        first.setdefault(chunk["seq"], chunk)
    assert sorted(first) == [0, 1, 2, 3] and first[3]["final"]
    assert b"".join(first[n]["pcm"] for n in sorted(first)) == audio  # each piece of the call once, in its place
