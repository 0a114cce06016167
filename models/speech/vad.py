"""Energy-based voice activity detection over a stream of chunks, so that Whisper sees whole utterances.

Chunk boundaries are arbitrary (a producer slices audio by size), so the detector keeps its own frame
remainder, a short pre-roll, and the utterance in progress; all of it snapshots to plain data and
survives a restart. The threshold follows the background level: a frame is speech when it is louder
than both an absolute floor and the running noise estimate plus a margin.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from models.speech.audio import SAMPLE_RATE, AudioFormatError, to_float32, to_pcm16


@dataclass
class VADConfig:
    """How audio is cut into utterances.

    Parameters
    ----------
    frame_ms
        Analysis frame length.
    floor_db
        Nothing quieter than this is speech.
    margin_db
        Speech is this much louder than the running noise level.
    min_speech_ms
        Shorter bursts are clicks, not utterances.
    min_silence_ms
        A pause this long ends an utterance.
    pad_ms
        Audio kept either side of the speech.
    max_utterance_ms
        Long monologues are cut here, so transcripts keep flowing.
    """

    frame_ms: int = 30
    floor_db: float = -45.0  # never call anything quieter than this speech
    margin_db: float = 12.0  # speech is this much louder than the running noise level
    min_speech_ms: int = 240  # shorter bursts are clicks, not utterances
    min_silence_ms: int = 600  # a pause this long ends an utterance
    pad_ms: int = 200  # audio kept either side of the speech
    max_utterance_ms: int = 20000  # cut long monologues so transcripts keep flowing


@dataclass(frozen=True, slots=True)
class Utterance:
    """One stretch of speech, padded, as the transcriber gets it.

    Parameters
    ----------
    start, end
        Sample offsets from the start of the stream.
    samples
        float32 samples at the stream's rate.
    """

    start: int  # sample offsets from the start of the stream
    end: int
    samples: np.ndarray  # float32 at the stream's rate

    @property
    def duration_s(self) -> float:
        return (self.end - self.start) / SAMPLE_RATE


class EnergyVAD:
    """Energy-based voice activity detection over a stream of chunks of any size.

    ``feed`` returns the utterances that ended inside the audio given; ``flush`` ends the one in progress
    (at the end of a conversation, or when it went quiet for good); ``skip`` takes the place of audio lost on the
    way. Its state snapshots to plain data.

    Parameters
    ----------
    config
        Thresholds and timings; ``VADConfig()`` by default.
    sample_rate
        The rate of the audio fed, Hz.

    Examples
    --------
    >>> import numpy as np
    >>> from models.speech import EnergyVAD
    >>> rate = 16000
    >>> tone = 0.3 * np.sin(2 * np.pi * 220 * np.arange(rate) / rate)  # one second of "speech"
    >>> audio = np.concatenate([np.zeros(rate), tone, np.zeros(rate)]).astype(np.float32)
    >>> vad = EnergyVAD()
    >>> utterances = [u for chunk in np.array_split(audio, 15) for u in vad.feed(chunk)] + vad.flush()
    >>> [(round(u.start / rate, 1), round(u.end / rate, 1)) for u in utterances]
    [(0.8, 2.2)]
    """

    def __init__(self, config: VADConfig | None = None, sample_rate: int = SAMPLE_RATE) -> None:
        self.config = config or VADConfig()
        self.sample_rate = sample_rate
        c = self.config
        self.frame = sample_rate * c.frame_ms // 1000
        if self.frame < 1:
            raise AudioFormatError(f"a {c.frame_ms} ms frame at {sample_rate} Hz holds no samples: give the audio's "
                                   f"rate in Hz ({SAMPLE_RATE} on the stream) and a frame_ms of at least 1")
        self._min_speech = max(1, c.min_speech_ms // c.frame_ms)
        self._min_silence = max(1, c.min_silence_ms // c.frame_ms)
        self._pad = c.pad_ms // c.frame_ms
        self._max_frames = max(1, c.max_utterance_ms // c.frame_ms)
        self._reset()

    def _reset(self) -> None:
        self.position = 0  # samples consumed into whole frames
        self.noise_db = -70.0
        self._rest = np.zeros(0, dtype=np.float32)
        self._frames: list[np.ndarray] = []  # pre-roll while idle, the utterance while in speech
        self._start = 0  # sample offset of _frames[0]
        self._in_speech = False
        self._speech_frames = 0
        self._silence_run = 0

    def feed(self, audio: bytes | np.ndarray) -> list[Utterance]:
        """The utterances that ended inside this chunk; the rest waits for the next chunk (or ``flush``).

        Parameters
        ----------
        audio
            The next chunk, of any length: PCM16 bytes, an int16 or a float array, at ``sample_rate``.
        """
        x = to_float32(audio)
        if self._rest.size:
            x = np.concatenate([self._rest, x])
        n = x.size // self.frame
        self._rest = x[n * self.frame :].copy()
        if n == 0:
            return []
        frames = x[: n * self.frame].reshape(n, self.frame)
        energy = 10.0 * np.log10(np.mean(frames.astype(np.float64) ** 2, axis=1) + 1e-12)
        out: list[Utterance] = []
        for i in range(n):
            out.extend(self._step(frames[i], float(energy[i])))
        return out

    def flush(self) -> list[Utterance]:
        """End of stream: whatever speech is pending becomes the last utterance, its partial frame included. The
        stream may still go on (a call that came back), so the partial frame stays too, and the frames after it
        fall where they would have."""
        if self._in_speech:
            self._frames.append(self._rest)
            return self._close(trailing=0)
        self._frames = []  # the pre-roll: no speech to pad
        return []

    def skip(self, samples: int) -> list[Utterance]:
        """Audio lost on the way, so that what follows keeps its place in the stream. A gap shorter than the pause
        that ends an utterance is silence, which must not teach the noise level that the line is quiet; a longer
        one ends the utterance in progress, as that pause would have, and moves on on the same grid of frames.

        Parameters
        ----------
        samples
            How much audio is missing, at ``sample_rate``.
        """
        if samples <= 0:
            return []
        if samples * 1000 < self.config.min_silence_ms * self.sample_rate:
            noise = self.noise_db
            out = self.feed(np.zeros(samples, dtype=np.float32))
            self.noise_db = noise
            return out
        out = self.flush()
        end = self.position + self._rest.size + samples
        self.position = end - end % self.frame
        self._rest = np.zeros(end % self.frame, dtype=np.float32)
        return out

    def _step(self, frame: np.ndarray, db: float) -> list[Utterance]:
        c = self.config
        speech = db > max(c.floor_db, self.noise_db + c.margin_db)
        if not speech:
            # quiet frames teach the noise level; clamp so digital silence does not drag it to -inf
            self.noise_db = 0.95 * self.noise_db + 0.05 * max(db, -90.0)
        if not self._in_speech:
            self._frames.append(frame)
            if len(self._frames) == 1:
                self._start = self.position
            self.position += frame.size
            if speech:
                self._in_speech, self._speech_frames, self._silence_run = True, 1, 0
            elif len(self._frames) > self._pad:
                self._frames.pop(0)
                self._start += frame.size
            return []
        self._frames.append(frame)
        self.position += frame.size
        if speech:
            self._speech_frames += 1
            self._silence_run = 0
        else:
            self._silence_run += 1
        if self._silence_run >= self._min_silence:
            return self._close(trailing=self._silence_run - self._pad)
        if len(self._frames) >= self._max_frames:
            return self._close(trailing=0)
        return []

    def _close(self, trailing: int) -> list[Utterance]:
        """End the utterance in progress, dropping ``trailing`` silent frames beyond the padding."""
        keep = len(self._frames) - max(0, trailing)
        frames, start, enough = self._frames[:keep], self._start, self._speech_frames >= self._min_speech
        self._frames, self._in_speech, self._speech_frames, self._silence_run = [], False, 0, 0
        if not enough or not frames:
            return []
        samples = np.concatenate(frames)
        return [Utterance(start, start + samples.size, samples)]

    def snapshot(self) -> dict[str, Any]:
        pending = np.concatenate(self._frames) if self._frames else np.zeros(0, dtype=np.float32)
        return {
            "position": self.position,
            "noise_db": self.noise_db,
            "rest": to_pcm16(self._rest),
            "pending": to_pcm16(pending),
            "frames": len(self._frames),
            "start": self._start,
            "in_speech": self._in_speech,
            "speech_frames": self._speech_frames,
            "silence_run": self._silence_run,
        }

    def restore(self, state: dict[str, Any]) -> None:
        self.position = state["position"]
        self.noise_db = state["noise_db"]
        self._rest = to_float32(state["rest"])
        pending = to_float32(state["pending"])
        n = state["frames"]
        self._frames = [pending[i * self.frame : (i + 1) * self.frame] for i in range(n)]
        self._start = state["start"]
        self._in_speech = state["in_speech"]
        self._speech_frames = state["speech_frames"]
        self._silence_run = state["silence_run"]

    def params(self) -> dict[str, Any]:
        return {"config": asdict(self.config), "sample_rate": self.sample_rate}
