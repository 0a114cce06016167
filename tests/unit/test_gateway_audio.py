"""Call audio pieces without a server: mu-law, frame-by-frame resampling, numbered chunks."""

from __future__ import annotations

import base64

import numpy as np
import pytest
from scipy.signal import resample_poly

from connectors.gateway.audio import CallAudio, StreamResampler, mulaw_decode, mulaw_encode
from connectors.gateway.calls import _TwilioCall
from connectors.gateway.errors import GatewayError
from connectors.wav import chunk_records


@pytest.mark.parametrize("rate", [8000, 11025, 44100, 48000])
def test_resampling_in_frames_equals_resampling_the_whole(rate: int) -> None:
    rng = np.random.default_rng(rate)
    x = rng.normal(size=rate)
    r = StreamResampler(rate)
    out, i = [], 0
    while i < len(x):
        n = int(rng.integers(1, 500))
        out.append(r.feed(x[i : i + n]))
        i += n
    out.append(r.feed(np.zeros(0), final=True))
    g = np.gcd(rate, 16000)
    np.testing.assert_allclose(np.concatenate(out), resample_poly(x, 16000 // g, rate // g), atol=1e-9)


def test_mulaw_round_trip_is_within_a_quantisation_step() -> None:
    s = np.arange(-32768, 32768, 7).astype(np.int16)
    d = mulaw_decode(mulaw_encode(s)).astype(np.int64)
    assert np.all(np.abs(d - s) <= np.maximum(8, np.abs(s.astype(np.int64)) // 16))
    assert mulaw_decode(b"\xff\x7f\x00\x80").tolist() == [0, 0, -32124, 32124]


def test_frames_become_the_same_chunks_as_the_file_producer() -> None:
    pcm = (np.sin(np.arange(16000 * 3 + 123) / 10) * 10000).astype("<i2").tobytes()
    call = CallAudio("c1", 16000, chunk_ms=200)
    records = []
    for i in range(0, len(pcm), 333):  # frames that split samples
        records += call.feed_pcm16(pcm[i : i + 333])
    records += call.finish()
    expected = list(chunk_records(pcm, "c1", chunk_ms=200, start_ms=call.started_ms))
    strip = lambda r: {k: v for k, v in r.items() if k != "producer"}  # noqa: E731
    assert [strip(r) for r in records] == [strip(r) for r in expected]


def test_8khz_frames_are_resampled_and_numbered() -> None:
    call = CallAudio("c2", 8000, chunk_ms=100)
    tone = (np.sin(np.arange(8000) * 2 * np.pi * 440 / 8000) * 8000).astype(np.int16)
    records = []
    for i in range(0, len(tone), 160):  # Twilio's 20 ms frames
        records += call.feed_mulaw(mulaw_encode(tone[i : i + 160]))
    records += call.finish()
    assert [r["seq"] for r in records] == list(range(len(records)))
    assert [r["final"] for r in records] == [False] * (len(records) - 1) + [True]
    assert sum(len(r["pcm"]) for r in records) == 16000 * 2
    assert {r["sample_rate"] for r in records} == {16000}
    with pytest.raises(ValueError, match="ended"):
        call.feed_pcm16(b"\x00\x00")


@pytest.mark.parametrize("fmt", [{"sampleRate": "fast"}, {"channels": None}, "audio/x-mulaw",
                                 {"sampleRate": float("inf")}])  # JSON 1e400
def test_a_twilio_start_with_a_malformed_media_format_is_refused_with_what_to_send(fmt: object) -> None:
    with pytest.raises(GatewayError) as refused:
        _TwilioCall(None, "calls").start({"callSid": "CA1", "mediaFormat": fmt})
    assert refused.value.status == 400 and "sampleRate" in refused.value.message


def test_a_twilio_start_whose_parameters_are_not_an_object_is_unauthenticated() -> None:
    from types import SimpleNamespace

    from connectors.gateway import GatewaySettings
    from connectors.gateway.auth import TokenAuth

    gateway = SimpleNamespace(auth=TokenAuth(GatewaySettings(tokens={"calls": "a-token-of-sixteen-chars"})))
    with pytest.raises(GatewayError) as refused:
        _TwilioCall(gateway, None).start({"callSid": "CA1", "customParameters": ["token", "x"]})
    assert refused.value.status == 401


def test_a_second_twilio_start_for_another_call_ends_the_first_calls_tracks() -> None:
    from types import SimpleNamespace

    from connectors.gateway import GatewaySettings
    from connectors.gateway.auth import TokenAuth

    frame = {"payload": base64.b64encode(mulaw_encode(np.full(4000, 800, np.int16))).decode()}
    gateway = SimpleNamespace(auth=TokenAuth(GatewaySettings(tokens={"calls": "a-token-of-sixteen-chars"})))
    call = _TwilioCall(gateway, "calls")  # a start checks the call against the token's key scopes
    assert call.start({"callSid": "CA1"}) == []
    first = call.media(frame) + call.media({**frame, "track": "outbound"})
    assert {r["conversation_id"] for r in first} == {"CA1", "CA1/outbound"}
    assert call.start({"callSid": "CA1"}) == [] and call.media(frame)[0]["seq"] > 0  # the same call goes on
    ended = call.start({"callSid": "CA2"})
    assert {(r["conversation_id"], r["final"]) for r in ended} == {("CA1", True), ("CA1/outbound", True)}
    second = call.media(frame) + call.media({**frame, "track": "outbound"})
    assert {r["conversation_id"] for r in second} == {"CA2", "CA2/outbound"} and second[0]["seq"] == 0
    assert {r["conversation_id"] for r in call.finish()} == {"CA2", "CA2/outbound"}
