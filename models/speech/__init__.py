"""Speech-to-text behind one interface, and the voice-activity segmentation that feeds it utterances.

Importing this package is cheap: the Whisper backends load faster_whisper or whisper only when a
transcriber is made.
"""

from models.speech.audio import SAMPLE_RATE, AudioFormatError, resample, to_float32, to_pcm16
from models.speech.base import Segment, Transcriber
from models.speech.factory import default_model_path, load_transcriber
from models.speech.vad import EnergyVAD, Utterance, VADConfig
from models.speech.wer import normalize_words, word_error_rate

__all__ = [
    "SAMPLE_RATE",
    "AudioFormatError",
    "EnergyVAD",
    "Segment",
    "Transcriber",
    "Utterance",
    "VADConfig",
    "default_model_path",
    "load_transcriber",
    "normalize_words",
    "resample",
    "to_float32",
    "to_pcm16",
    "word_error_rate",
]
