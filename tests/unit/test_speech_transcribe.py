"""Real speech through the real offline model: espeak-ng recordings checked in with their scripts."""

from pathlib import Path

import numpy as np
import pytest

from benchmarks.wer import read_references
from connectors.wav import read_wav
from models.speech import load_transcriber, resample, to_float32, word_error_rate

DATA = Path(__file__).resolve().parents[1] / "data" / "audio"


@pytest.fixture(scope="module")
def transcriber():
    return load_transcriber()


def test_recordings_have_references():
    refs = read_references(DATA)
    assert len(refs) >= 10
    assert all((DATA / f"{name}.wav").is_file() for name in refs)


def test_transcribes_most_words_of_a_recording(transcriber):
    ref = read_references(DATA)["call03"]
    segments = transcriber.transcribe(read_wav(DATA / "call03.wav").pcm, 16000)
    assert segments and all(s.language == "en" and s.end > s.start >= 0 for s in segments)
    assert word_error_rate(ref, " ".join(s.text for s in segments)) <= 0.25


def test_other_sample_rates_are_resampled_first(transcriber):
    ref = read_references(DATA)["call12"]
    at_8k = resample(to_float32(read_wav(DATA / "call12.wav").pcm), 16000, 8000)
    assert word_error_rate(ref, transcriber.text(at_8k, 8000)) <= 0.25


def test_silence_gives_no_text(transcriber):
    assert transcriber.transcribe(np.zeros(16000, dtype=np.float32)) == []
