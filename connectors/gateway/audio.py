"""A call's audio as it streams in: mu-law or PCM16 at any rate, out as numbered 16 kHz ``audio_chunk`` records.

Call platforms send small frames (20 ms is common) at 8 kHz; the stream carries PCM16 mono 16 kHz chunks
of ``chunk_ms``. ``StreamResampler`` resamples frame by frame and gives the same samples as resampling the
whole call at once (it holds back the filter's reach until the next frame arrives), so frame boundaries
leave no clicks for the voice detector to hear.
"""

from __future__ import annotations

import time
from math import gcd
from typing import Any

import numpy as np

from connectors.wav import SAMPLE_RATE, audio_chunk


def _mulaw_table() -> np.ndarray:
    u = ~np.arange(256, dtype=np.int32) & 0xFF
    magnitude = (((u & 0x0F) << 3) + 0x84) << ((u >> 4) & 0x07)
    return np.where(u & 0x80, 0x84 - magnitude, magnitude - 0x84).astype("<i2")


_MULAW = _mulaw_table()
_MULAW_ORDER = np.argsort(_MULAW, kind="stable")
_MULAW_SORTED = _MULAW[_MULAW_ORDER].astype(np.int32)


def mulaw_decode(data: bytes) -> np.ndarray:
    """G.711 mu-law bytes (Twilio's ``audio/x-mulaw``) to PCM16 samples."""
    return _MULAW[np.frombuffer(data, dtype=np.uint8)]


def mulaw_encode(samples: np.ndarray) -> bytes:
    """PCM16 samples to the nearest G.711 mu-law codes, as a telephone network would send them."""
    x = np.asarray(samples, dtype=np.int32)
    i = np.clip(np.searchsorted(_MULAW_SORTED, x), 1, 255)
    nearer = np.where(x - _MULAW_SORTED[i - 1] <= _MULAW_SORTED[i] - x, i - 1, i)
    return _MULAW_ORDER[nearer].astype(np.uint8).tobytes()


class StreamResampler:
    """Polyphase resampling of a stream in pieces, equal to ``scipy.signal.resample_poly`` over the whole.

    Parameters
    ----------
    rate_in, rate_out
        Sample rates in Hz.
    """

    def __init__(self, rate_in: int, rate_out: int = SAMPLE_RATE) -> None:
        if rate_in <= 0 or rate_out <= 0:
            raise ValueError(f"sample rates must be positive, got {rate_in} -> {rate_out}")
        g = gcd(rate_in, rate_out)
        self.up, self.down = rate_out // g, rate_in // g
        reach = -(-10 * max(self.up, self.down) // self.up) + 1  # resample_poly's filter half-length, input samples
        self.hold = -(-reach // self.down) * self.down  # kept on both sides, a whole number of output steps
        self._buf = np.zeros(0, dtype=np.float64)
        self._start = 0  # input index in _buf of the first sample not yet emitted

    def feed(self, samples: np.ndarray, final: bool = False) -> np.ndarray:
        """Resampled output for the input so far, except the last ``hold`` samples' (unless ``final``)."""
        from scipy.signal import resample_poly

        if self.up == self.down:
            return samples.astype(np.float64)
        buf = np.concatenate([self._buf, samples.astype(np.float64)])
        end = len(buf) if final else (len(buf) - self.hold) // self.down * self.down
        if end <= self._start:
            self._buf = buf
            return np.zeros(0, dtype=np.float64)
        y = resample_poly(buf, self.up, self.down)
        out = y[self._start * self.up // self.down : -(-end * self.up // self.down)]
        keep = max(0, end - self.hold)
        self._buf, self._start = buf[keep:], end - keep
        return out


class CallAudio:
    """One conversation's audio: feed PCM16 or mu-law frames, take ``audio_chunk`` records, ``finish`` at the end.

    Parameters
    ----------
    conversation_id
        The stream's key; chunk ids derive from it and the sequence number.
    sample_rate
        The rate the frames come at; anything but 16 kHz is resampled.
    chunk_ms
        Audio per record.
    producer
        The records' ``producer`` field.
    """

    def __init__(self, conversation_id: str, sample_rate: int = SAMPLE_RATE, chunk_ms: int = 200,
                 producer: str = "gateway") -> None:
        if not conversation_id:
            raise ValueError("a conversation id is required")
        if not 10 <= chunk_ms <= 10_000:
            raise ValueError(f"chunk_ms must be between 10 and 10000, got {chunk_ms}")
        self.conversation_id = conversation_id
        self.chunk_bytes = SAMPLE_RATE * chunk_ms // 1000 * 2
        self.producer = producer
        self.resampler = StreamResampler(sample_rate) if sample_rate != SAMPLE_RATE else None
        self.started_ms = int(time.time() * 1000)
        self.seq = 0
        self.finished = False
        self._odd = b""
        self._pcm = bytearray()

    def feed_pcm16(self, data: bytes) -> list[dict[str, Any]]:
        """PCM16 little-endian frames; a sample split across frames is joined."""
        data = self._odd + data
        whole = len(data) // 2 * 2
        self._odd = data[whole:]
        return self.feed(np.frombuffer(data[:whole], dtype="<i2"))

    def feed_mulaw(self, data: bytes) -> list[dict[str, Any]]:
        return self.feed(mulaw_decode(data))

    def feed(self, samples: np.ndarray, final: bool = False) -> list[dict[str, Any]]:
        if self.finished:
            raise ValueError(f"conversation {self.conversation_id} has ended")
        if self.resampler is not None:
            out = self.resampler.feed(samples, final=final)
            samples = np.clip(np.round(out), -32768, 32767)
        self._pcm += samples.astype("<i2").tobytes()
        records = []
        while len(self._pcm) >= self.chunk_bytes and not (final and len(self._pcm) == self.chunk_bytes):
            records.append(self._record(bytes(self._pcm[: self.chunk_bytes]), final=False))
            del self._pcm[: self.chunk_bytes]
        return records

    def finish(self) -> list[dict[str, Any]]:
        """The rest of the audio, the last record marked ``final`` (an empty one if nothing is left)."""
        records = self.feed(np.zeros(0, dtype="<i2"), final=True)
        records.append(self._record(bytes(self._pcm), final=True))
        self._pcm.clear()
        self.finished = True
        return records

    def resume(self, seq: int) -> None:
        """Number on from ``seq``, where a call that reconnected stopped: the offsets go on from the audio before,
        so that the flow places this audio after it; the event times go on from now.

        Parameters
        ----------
        seq
            The number of the next chunk.
        """
        self.started_ms -= self._offset_ms(seq) - self._offset_ms(self.seq)
        self.seq = seq

    def _offset_ms(self, seq: int) -> int:
        return seq * self.chunk_bytes // 2 * 1000 // SAMPLE_RATE

    def _record(self, pcm: bytes, final: bool) -> dict[str, Any]:
        offset_ms = self._offset_ms(self.seq)
        rec = audio_chunk(self.conversation_id, self.seq, pcm, offset_ms, self.started_ms + offset_ms,
                          final=final, producer=self.producer)
        self.seq += 1
        return rec
