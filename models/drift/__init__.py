"""Drift detectors: data drift per feature (PSI, KS) and concept drift on a model's error stream.

Importing this package imports numpy only; river is imported by the module that wraps it.
"""

from models.drift.base import StreamDriftDetector
from models.drift.cusum import SelfStartingCusum
from models.drift.data import FeatureDriftMonitor, ks_test, psi
from models.drift.factory import make_detector

__all__ = ["FeatureDriftMonitor", "SelfStartingCusum", "StreamDriftDetector", "ks_test", "make_detector", "psi"]
