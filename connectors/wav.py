"""WAV files as the stream's audio: PCM16 mono 16 kHz chunks, the ``audio_chunk`` records of a conversation.

Other rates are resampled (polyphase, anti-aliased) and stereo is averaged to mono, so any PCM WAV a
phone system writes can be replayed. Anything that is not integer PCM is refused with the reason.
"""

from __future__ import annotations

import struct
import time
import wave
from collections.abc import Iterator
from dataclasses import dataclass
from math import gcd
from pathlib import Path
from typing import Any

import numpy as np

from schemas import derive_id

SAMPLE_RATE = 16000
MIN_RATE, MAX_RATE = 1000, 384_000
MAX_POLY_FACTOR = 1000


class WavError(ValueError):
    """A file that cannot become PCM16 mono 16 kHz audio."""


@dataclass(frozen=True)
class WavAudio:
    """Audio as the stream carries it, and what the file was before conversion.

    Parameters
    ----------
    pcm
        PCM16 little-endian mono at 16 kHz.
    source_rate
        The file's sample rate, Hz.
    source_channels
        The file's channels (mixed down to mono).
    source_width
        The file's bytes per sample.
    """

    pcm: bytes  # PCM16 little-endian mono at SAMPLE_RATE
    source_rate: int
    source_channels: int
    source_width: int  # bytes per sample

    @property
    def duration_s(self) -> float:
        return len(self.pcm) / 2 / SAMPLE_RATE


def read_wav(path: str | Path, *, resample: bool = True) -> WavAudio:
    """Read a PCM WAV as PCM16 mono 16 kHz; with ``resample=False`` another rate is an error instead.

    Parameters
    ----------
    path
        The WAV file; 8, 16, 24 or 32-bit integer PCM, any channels. Anything else raises ``WavError``
        with how to convert it.
    resample
        Resample other rates to 16 kHz.
    """
    path = Path(path)
    try:
        with wave.open(str(path), "rb") as w:
            rate, channels, width, n = w.getframerate(), w.getnchannels(), w.getsampwidth(), w.getnframes()
            raw = w.readframes(n)
    except FileNotFoundError:
        raise WavError(f"{path}: no such file") from None
    except (wave.Error, EOFError, RuntimeError, struct.error) as exc:  # the last two: chunk sizes past the end
        why = str(exc) or ("it ends before its header does" if isinstance(exc, EOFError) else type(exc).__name__)
        raise WavError(f"{path}: not a PCM WAV file ({why}); convert it, "
                       "e.g. `sox IN -b 16 OUT.wav`") from None
    if width not in (1, 2, 3, 4):
        raise WavError(f"{path}: unsupported sample width of {width} bytes")
    if not MIN_RATE <= rate <= MAX_RATE:  # resampling 1 Hz up to 16 kHz would take 16,000 times the memory
        raise WavError(f"{path}: sample rate {rate} Hz is outside {MIN_RATE}-{MAX_RATE} Hz; is it really audio?")
    if rate != SAMPLE_RATE and not resample:
        raise WavError(f"{path}: sample rate {rate} Hz, the stream carries {SAMPLE_RATE} Hz (resampling is off)")
    raw = raw[: len(raw) // (width * channels) * width * channels]  # a truncated file: whole frames only
    samples = _decode(raw, width).reshape(-1, channels).mean(axis=1)
    if rate != SAMPLE_RATE:
        from scipy.signal import resample_poly

        g = gcd(rate, SAMPLE_RATE)
        up, down = SAMPLE_RATE // g, rate // g
        if max(up, down) <= MAX_POLY_FACTOR:
            samples = resample_poly(samples, up, down)
        else:  # an odd rate (44101 Hz): the polyphase filter would be huge; interpolate instead
            n = int(len(samples) * SAMPLE_RATE / rate)
            samples = np.interp(np.arange(n) * rate / SAMPLE_RATE, np.arange(len(samples)), samples)
    pcm = (np.clip(samples, -1.0, 1.0) * 32767.0).round().astype("<i2").tobytes()
    return WavAudio(pcm, rate, channels, width)


def _decode(raw: bytes, width: int) -> np.ndarray:
    """Integer PCM of any width as float64 in [-1, 1]."""
    if width == 1:
        return (np.frombuffer(raw, dtype=np.uint8).astype(np.float64) - 128.0) / 128.0
    if width == 3:
        b = np.frombuffer(raw, dtype=np.uint8).reshape(-1, 3).astype(np.int32)
        v = b[:, 0] | (b[:, 1] << 8) | (b[:, 2] << 16)
        v = np.where(v >= 1 << 23, v - (1 << 24), v)
        return v.astype(np.float64) / float(1 << 23)
    dtype = "<i2" if width == 2 else "<i4"
    return np.frombuffer(raw, dtype=dtype).astype(np.float64) / float(1 << (8 * width - 1))


def write_wav(path: str | Path, pcm: bytes, sample_rate: int = SAMPLE_RATE) -> None:
    """Write PCM16 mono as a WAV file.

    Parameters
    ----------
    path
        The file to write.
    pcm
        PCM16 little-endian mono samples.
    sample_rate
        Their rate, Hz.

    Examples
    --------
    >>> from connectors.wav import read_wav, write_wav
    >>> write_wav("tone.wav", b"\\x00\\x10" * 8000, sample_rate=8000)  # one second at 8 kHz
    >>> audio = read_wav("tone.wav")
    >>> audio.source_rate, audio.duration_s
    (8000, 1.0)
    """
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(sample_rate)
        w.writeframes(pcm)


def chunk_records(
    audio: WavAudio | bytes,
    conversation_id: str,
    *,
    chunk_ms: int = 200,
    producer: str = "eddyline-wav",
    start_ms: int | None = None,
) -> Iterator[dict[str, Any]]:
    """``audio_chunk`` records for one conversation, the last one marked ``final``.

    Event ids derive from the conversation and sequence number, so producing a file again yields the
    same ids and downstream dedup sees a replay, not new audio.

    Parameters
    ----------
    audio
        The audio, or PCM16 mono 16 kHz bytes.
    conversation_id
        The conversation (the Kafka key of ``audio.chunks``).
    chunk_ms
        Audio per record; positive.
    producer
        The ``producer`` field of every record.
    start_ms
        Event time of the first sample (default: now).

    Examples
    --------
    >>> from connectors.wav import chunk_records
    >>> records = list(chunk_records(bytes(16000), "call-1", chunk_ms=200, start_ms=0))  # 0.5 s of silence
    >>> [(r["seq"], len(r["pcm"]), r["final"]) for r in records]
    [(0, 6400, False), (1, 6400, False), (2, 3200, True)]
    """
    if chunk_ms <= 0:
        raise ValueError(f"chunk_ms must be positive, got {chunk_ms}")
    pcm = audio.pcm if isinstance(audio, WavAudio) else audio
    if len(pcm) % 2:
        raise WavError(f"conversation {conversation_id}: PCM16 needs an even number of bytes, got {len(pcm)}")
    step = SAMPLE_RATE * chunk_ms // 1000 * 2
    t0 = int(time.time() * 1000) if start_ms is None else start_ms
    total = max(1, -(-len(pcm) // step))
    for seq in range(total):
        offset_ms = seq * chunk_ms
        yield audio_chunk(conversation_id, seq, pcm[seq * step : (seq + 1) * step], offset_ms, t0 + offset_ms,
                          final=seq == total - 1, producer=producer)


def audio_chunk(
    conversation_id: str, seq: int, pcm: bytes, offset_ms: int, event_time: int, *, final: bool, producer: str
) -> dict[str, Any]:
    """One ``audio_chunk`` record of PCM16 mono 16 kHz; its id derives from the conversation and ``seq``.

    Parameters
    ----------
    conversation_id
        The call; also the Kafka key, so a call's chunks stay in order on one partition.
    seq
        The chunk's number within the call, from 0; a resent chunk carries the same number and id.
    pcm
        PCM16 little-endian mono samples at 16 kHz.
    offset_ms
        Where the chunk starts in the call.
    event_time
        When it was recorded, ms since the epoch (UTC).
    final
        True on the call's last chunk.
    producer
        Who sent it (a file replay, the gateway).
    """
    return {
        "event_id": derive_id("audio_chunk", conversation_id, seq),
        "event_time": event_time,
        "producer": producer,
        "conversation_id": conversation_id,
        "seq": seq,
        "sample_rate": SAMPLE_RATE,
        "offset_ms": offset_ms,
        "pcm": pcm,
        "final": final,
    }
