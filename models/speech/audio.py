"""Sample formats: the stream carries PCM16 mono at 16 kHz, the models want float32 in [-1, 1]."""

from __future__ import annotations

from math import gcd

import numpy as np

SAMPLE_RATE = 16000


class AudioFormatError(ValueError):
    """Audio that cannot be turned into mono samples at the rate a model needs."""


def to_float32(audio: bytes | np.ndarray) -> np.ndarray:
    """PCM16 bytes, an int16 array or a float array, as float32 in [-1, 1].

    Parameters
    ----------
    audio
        Mono samples; anything else raises ``AudioFormatError`` saying what is expected.

    Examples
    --------
    >>> from models.speech import to_float32, to_pcm16
    >>> samples = to_float32(b"\\x00\\x40\\x00\\xc0")  # PCM16 little-endian: 16384, -16384
    >>> samples.tolist(), to_pcm16(samples) == b"\\x00\\x40\\x00\\xc0"
    ([0.5, -0.5], True)
    """
    if isinstance(audio, bytes | bytearray | memoryview):
        if len(audio) % 2:
            raise AudioFormatError(f"PCM16 needs an even number of bytes, got {len(audio)}")
        return np.frombuffer(audio, dtype="<i2").astype(np.float32) / 32768.0
    arr = np.asarray(audio)
    if arr.ndim != 1:
        raise AudioFormatError(f"expected mono samples (a 1-d array), got shape {arr.shape}")
    if arr.dtype == np.int16:
        return arr.astype(np.float32) / 32768.0
    if np.issubdtype(arr.dtype, np.floating):
        return arr.astype(np.float32, copy=False)
    raise AudioFormatError(f"unsupported sample type {arr.dtype}; use int16 PCM or float")


def to_pcm16(samples: np.ndarray) -> bytes:
    """Float samples in [-1, 1] (clipped) or int16 as little-endian PCM16 bytes.

    Parameters
    ----------
    samples
        Mono samples. Floats scale by 32767, so a round trip through ``to_float32`` (which divides by
        32768) may differ by one step.
    """
    arr = np.asarray(samples)
    if arr.dtype != np.int16:
        arr = (np.clip(arr, -1.0, 1.0) * 32767.0).round().astype(np.int16)
    return arr.astype("<i2", copy=False).tobytes()


def resample(samples: np.ndarray, rate_from: int, rate_to: int = SAMPLE_RATE) -> np.ndarray:
    """Polyphase resampling (anti-aliased), float32 in and out.

    Parameters
    ----------
    samples
        Mono samples (as ``to_float32`` takes them).
    rate_from
        Their rate, Hz.
    rate_to
        The rate wanted, Hz (16 kHz, what the models take, by default).

    Examples
    --------
    >>> import numpy as np
    >>> from models.speech import resample
    >>> resample(np.zeros(8000, dtype=np.float32), 8000).shape
    (16000,)
    """
    if rate_from <= 0 or rate_to <= 0:
        raise AudioFormatError(f"sample rates must be positive, got {rate_from} -> {rate_to}")
    x = to_float32(samples)
    if rate_from == rate_to:
        return x
    from scipy.signal import resample_poly

    g = gcd(rate_from, rate_to)
    return resample_poly(x, rate_to // g, rate_from // g).astype(np.float32)
