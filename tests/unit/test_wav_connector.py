import struct
import wave

import numpy as np
import pytest

from connectors.wav import SAMPLE_RATE, WavError, chunk_records, read_wav, write_wav


def write(path, samples: np.ndarray, rate: int, channels: int = 1, width: int = 2) -> None:
    if width == 2:
        raw = (samples * 32767).astype("<i2").tobytes()
    elif width == 3:
        v = (samples * 8388607).astype("<i4")
        raw = b"".join(int(x).to_bytes(4, "little", signed=True)[:3] for x in v)
    else:
        raise AssertionError(width)
    with wave.open(str(path), "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(width)
        w.setframerate(rate)
        w.writeframes(raw)


def sine(rate: int, seconds: float = 1.0, hz: float = 440.0) -> np.ndarray:
    t = np.arange(int(rate * seconds)) / rate
    return 0.5 * np.sin(2 * np.pi * hz * t)


def test_16k_mono_pcm16_is_read_unchanged(tmp_path):
    x = sine(SAMPLE_RATE)
    write(tmp_path / "a.wav", x, SAMPLE_RATE)
    audio = read_wav(tmp_path / "a.wav")
    assert audio.source_rate == SAMPLE_RATE and audio.duration_s == pytest.approx(1.0)
    assert audio.pcm == (x * 32767).astype("<i2").tobytes()


def test_other_rates_are_resampled_and_keep_the_pitch(tmp_path):
    write(tmp_path / "a.wav", sine(8000, 2.0), 8000)
    audio = read_wav(tmp_path / "a.wav")
    y = np.frombuffer(audio.pcm, dtype="<i2").astype(float)
    assert y.size == 2 * SAMPLE_RATE and audio.source_rate == 8000
    peak_hz = np.argmax(np.abs(np.fft.rfft(y))) * SAMPLE_RATE / y.size
    assert peak_hz == pytest.approx(440, abs=2)


def test_resampling_can_be_refused(tmp_path):
    write(tmp_path / "a.wav", sine(44100, 0.1), 44100)
    with pytest.raises(WavError, match="44100 Hz"):
        read_wav(tmp_path / "a.wav", resample=False)


def test_stereo_is_averaged_and_24_bit_is_read(tmp_path):
    left, right = sine(SAMPLE_RATE), np.zeros(SAMPLE_RATE)
    inter = np.stack([left, right], axis=1).reshape(-1)
    write(tmp_path / "s.wav", inter, SAMPLE_RATE, channels=2)
    y = np.frombuffer(read_wav(tmp_path / "s.wav").pcm, dtype="<i2") / 32767
    assert np.allclose(y, left / 2, atol=2e-4)
    write(tmp_path / "d.wav", sine(SAMPLE_RATE), SAMPLE_RATE, width=3)
    z = np.frombuffer(read_wav(tmp_path / "d.wav").pcm, dtype="<i2") / 32767
    assert np.allclose(z, sine(SAMPLE_RATE), atol=2e-4)


def test_float_wav_and_garbage_are_rejected_with_a_reason(tmp_path):
    data = np.zeros(100, dtype="<f4").tobytes()
    fmt = struct.pack("<HHIIHH", 3, 1, SAMPLE_RATE, SAMPLE_RATE * 4, 4, 32)  # WAVE_FORMAT_IEEE_FLOAT
    body = b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt + b"data" + struct.pack("<I", len(data)) + data
    (tmp_path / "f.wav").write_bytes(b"RIFF" + struct.pack("<I", len(body)) + body)
    with pytest.raises(WavError, match="not a PCM WAV"):
        read_wav(tmp_path / "f.wav")
    (tmp_path / "g.wav").write_bytes(b"not audio at all")
    with pytest.raises(WavError, match="not a PCM WAV"):
        read_wav(tmp_path / "g.wav")
    with pytest.raises(WavError, match="no such file"):
        read_wav(tmp_path / "missing.wav")
    (tmp_path / "short.wav").write_bytes(b"host\n")  # too short for a header: EOFError, whose message is empty
    with pytest.raises(WavError, match=r"not a PCM WAV file \(it ends before its header does\)"):
        read_wav(tmp_path / "short.wav")


def test_chunk_records_cover_the_audio_with_stable_ids(tmp_path):
    pcm = (sine(SAMPLE_RATE, 1.05) * 32767).astype("<i2").tobytes()
    write_wav(tmp_path / "a.wav", pcm)
    audio = read_wav(tmp_path / "a.wav")
    recs = list(chunk_records(audio, "conv-1", chunk_ms=200, start_ms=1_000))
    assert [r["seq"] for r in recs] == list(range(6))
    assert [r["final"] for r in recs] == [False] * 5 + [True]
    assert b"".join(r["pcm"] for r in recs) == pcm
    assert [r["offset_ms"] for r in recs] == [0, 200, 400, 600, 800, 1000]
    assert recs[1]["event_time"] == 1_200
    again = list(chunk_records(audio, "conv-1", chunk_ms=200))
    assert [r["event_id"] for r in again] == [r["event_id"] for r in recs]
    other = list(chunk_records(audio, "conv-2", chunk_ms=200))
    assert not {r["event_id"] for r in other} & {r["event_id"] for r in recs}


def test_chunk_records_are_valid_audio_chunk_events(tmp_path):
    from schemas import AUDIO_CHUNK, AvroSerde

    serde = AvroSerde()
    rec = next(chunk_records(b"\x00\x01" * 3200, "conv-1"))
    assert serde.decode(serde.encode(AUDIO_CHUNK, rec), AUDIO_CHUNK) == rec
