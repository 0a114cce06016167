"""Whisper through faster-whisper (CTranslate2): int8 on CPU, the default backend."""

from __future__ import annotations

import math
import os
from typing import Any

import numpy as np

from models.speech.base import Segment, Transcriber


class FasterWhisperTranscriber(Transcriber):
    """Whisper through faster-whisper (CTranslate2) on CPU.

    ``vad_filter`` runs faster-whisper's Silero VAD first, which matters for whole files with pauses; the
    streaming flow segments utterances itself and leaves it off.

    Parameters
    ----------
    model
        A CTranslate2 model directory or a name/hub id faster-whisper knows (that one downloads).
    compute_type
        CTranslate2's compute type (``int8``, ``float32``, ...).
    cpu_threads
        Threads; 0 for up to 4.
    beam_size
        1 is greedy decoding, the fastest.
    language
        Force a language code; None for English on English-only models, else detection.
    vad_filter
        Run faster-whisper's own VAD first.
    """

    def __init__(
        self,
        model: str,
        *,
        compute_type: str = "int8",
        cpu_threads: int = 0,
        beam_size: int = 1,
        language: str | None = None,
        vad_filter: bool = False,
    ) -> None:
        from faster_whisper import WhisperModel

        self.model_ref = str(model)
        self.name = f"faster-whisper:{os.path.basename(self.model_ref.rstrip('/')) or self.model_ref}"
        threads = cpu_threads or min(4, os.cpu_count() or 1)
        self._model = WhisperModel(self.model_ref, device="cpu", compute_type=compute_type, cpu_threads=threads)
        self.beam_size = beam_size
        self.vad_filter = vad_filter
        self.language = language if language is not None else ("en" if not self._model.model.is_multilingual else None)

    def _transcribe(self, samples: np.ndarray) -> list[Segment]:
        kwargs: dict[str, Any] = {"beam_size": self.beam_size, "vad_filter": self.vad_filter}
        if self.language:
            kwargs["language"] = self.language
        # Whisper falls back to sampling at a higher temperature when greedy decoding loops; a fixed seed per
        # utterance makes that reproducible, so a replayed chunk gives the same transcript (and the same event).
        import ctranslate2

        ctranslate2.set_random_seed(0)
        segments, info = self._model.transcribe(samples, **kwargs)
        out = []
        for s in segments:
            text = s.text.strip()
            if text:
                out.append(Segment(float(s.start), float(s.end), text, info.language, math.exp(s.avg_logprob)))
        return out
