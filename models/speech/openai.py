"""Whisper through the ``openai-whisper`` package (PyTorch), where it and a checkpoint are installed."""

from __future__ import annotations

import math

import numpy as np

from models.speech.base import Segment, Transcriber


class OpenAIWhisperTranscriber(Transcriber):
    """Whisper through the ``openai-whisper`` package, in PyTorch: the reference implementation.

    Parameters
    ----------
    model
        A checkpoint path (``.pt``) or a name whisper knows (``tiny.en``; that one downloads).
    language
        Force a language code; None lets the model decide.
    """

    def __init__(self, model: str, *, language: str | None = None) -> None:
        try:
            import whisper
        except ImportError as exc:
            raise RuntimeError("the openai-whisper backend needs `pip install openai-whisper`") from exc
        self.model_ref = str(model)
        self.name = f"openai-whisper:{self.model_ref}"
        self._model = whisper.load_model(self.model_ref, device="cpu")
        self.language = language if language is not None else ("en" if not self._model.is_multilingual else None)

    def _transcribe(self, samples: np.ndarray) -> list[Segment]:
        result = self._model.transcribe(samples, language=self.language, fp16=False)
        lang = result.get("language") or self.language or ""
        out = []
        for s in result["segments"]:
            text = s["text"].strip()
            if text:
                out.append(Segment(float(s["start"]), float(s["end"]), text, lang, math.exp(s["avg_logprob"])))
        return out
