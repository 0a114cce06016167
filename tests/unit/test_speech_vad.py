import numpy as np
import pytest

from models.speech import AudioFormatError, EnergyVAD, VADConfig, to_pcm16

SR = 16000


def tone(seconds: float, amp: float = 0.3) -> np.ndarray:
    t = np.arange(int(seconds * SR)) / SR
    return (amp * np.sin(2 * np.pi * 220 * t)).astype(np.float32)


def quiet(seconds: float, rng: np.random.Generator) -> np.ndarray:
    return rng.normal(0, 0.002, int(seconds * SR)).astype(np.float32)


def stream(rng: np.random.Generator) -> np.ndarray:
    return np.concatenate([quiet(0.5, rng), tone(1.0), quiet(1.0, rng), tone(0.05), quiet(1.0, rng), tone(1.5), quiet(0.3, rng)])


def run(vad: EnergyVAD, x: np.ndarray, chunk: int) -> list[tuple[int, int]]:
    out = []
    for i in range(0, x.size, chunk):
        out += vad.feed(x[i : i + chunk])
    out += vad.flush()
    return [(u.start, u.end) for u in out]


def test_finds_utterances_and_ignores_clicks():
    x = stream(np.random.default_rng(1))
    spans = run(EnergyVAD(), x, 3200)
    assert len(spans) == 2  # the 50 ms click is not an utterance
    (s1, e1), (s2, e2) = spans
    assert s1 <= 0.5 * SR <= e1 and e1 >= 1.5 * SR and e1 < 2.5 * SR
    assert s2 < 3.55 * SR < e2  # the last one runs to the end of the stream: flush closes it


def test_chunking_does_not_change_the_result():
    x = stream(np.random.default_rng(2))
    assert run(EnergyVAD(), x, 480) == run(EnergyVAD(), x, 7777) == run(EnergyVAD(), x, x.size)


def test_pcm16_bytes_and_floats_agree():
    x = stream(np.random.default_rng(3))
    a = EnergyVAD().feed(to_pcm16(x))
    b = EnergyVAD().feed(x)
    assert [(u.start, u.end) for u in a] == [(u.start, u.end) for u in b]


def test_snapshot_restore_mid_utterance_continues_the_same():
    x = stream(np.random.default_rng(4))
    whole = run(EnergyVAD(), x, 1600)
    first = EnergyVAD()
    cut = int(4.0 * SR)  # inside the second utterance
    early = [(u.start, u.end) for u in first.feed(x[:cut])]
    state = first.snapshot()
    params = first.params()
    second = EnergyVAD(VADConfig(**params["config"]), params["sample_rate"])
    second.restore(state)
    assert early + run(second, x[cut:], 1600) == whole


def test_long_speech_is_cut_at_the_maximum():
    vad = EnergyVAD(VADConfig(max_utterance_ms=3000))
    spans = run(vad, tone(7.0), 1600)
    assert len(spans) == 3 and all(e - s <= 3 * SR for s, e in spans)


@pytest.mark.parametrize("rate", [0, 10, -16000])
def test_a_rate_with_no_samples_in_a_frame_is_refused_when_built_not_on_the_first_chunk(rate):
    with pytest.raises(AudioFormatError, match=f"at {rate} Hz holds no samples"):
        EnergyVAD(sample_rate=rate).feed(np.zeros(4800, dtype=np.float32))


def test_odd_and_empty_chunks_are_a_clear_error_or_nothing():
    vad = EnergyVAD()
    with pytest.raises(AudioFormatError, match="even number of bytes"):
        vad.feed(b"\x00\x01\x02")
    assert vad.feed(b"") == [] and vad.feed(np.zeros(0, dtype=np.int16)) == []
    assert vad.position == 0 and vad.snapshot()["rest"] == b""
