"""The speech-to-text contract every backend meets."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

import numpy as np

from models.speech.audio import SAMPLE_RATE, resample, to_float32


@dataclass(frozen=True, slots=True)
class Segment:
    """A stretch of transcribed speech; times in seconds from the start of the audio given.

    Parameters
    ----------
    start, end
        Where it starts and ends, seconds.
    text
        What was said.
    language
        The language code the model used or detected.
    confidence
        Mean token probability, where the backend reports one.
    """

    start: float
    end: float
    text: str
    language: str
    confidence: float | None = None  # mean token probability, where the backend reports one


class Transcriber(ABC):
    """Audio in, segments out. Backends get float32 mono at 16 kHz; other rates are resampled here."""

    name: str = "transcriber"

    def transcribe(self, audio: bytes | np.ndarray, sample_rate: int = SAMPLE_RATE) -> list[Segment]:
        """The segments of speech in the audio, times from its start.

        Parameters
        ----------
        audio
            Mono samples: PCM16 bytes, an int16 or a float array.
        sample_rate
            Their rate; other rates than 16 kHz are resampled here.
        """
        samples = to_float32(audio)
        if sample_rate != SAMPLE_RATE:
            samples = resample(samples, sample_rate, SAMPLE_RATE)
        if samples.size == 0:
            return []
        return self._transcribe(samples)

    def text(self, audio: bytes | np.ndarray, sample_rate: int = SAMPLE_RATE) -> str:
        """The transcript as one line of text.

        Parameters
        ----------
        audio, sample_rate
            As for ``transcribe``.
        """
        return " ".join(s.text for s in self.transcribe(audio, sample_rate)).strip()

    @abstractmethod
    def _transcribe(self, samples: np.ndarray) -> list[Segment]: ...
