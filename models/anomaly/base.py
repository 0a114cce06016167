"""The contract every streaming anomaly detector keeps.

A detector watches one series (one sensor of one device). ``score_learn`` takes the next values in order
and returns one score per value, each computed *before* the detector learns from that value: splitting a
series into batches differently never changes a score, and no score sees the future. State is plain data
(numbers and numpy arrays) so that the flow can checkpoint it and a restart resumes exactly.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, ClassVar

import numpy as np

from models.checkpoint import Checkpointed


class AnomalyDetector(Checkpointed, ABC):
    """Scores in [0, 1]; at or above ``threshold`` a value is anomalous."""

    name: ClassVar[str]
    threshold: float = 0.5

    @abstractmethod
    def score_learn(self, values: np.ndarray, timestamps: np.ndarray) -> np.ndarray:
        """Score then learn each value in order. ``values`` float64, ``timestamps`` int64 epoch ms."""

    @abstractmethod
    def snapshot(self) -> dict[str, Any]:
        """The whole state as plain data; ``restore`` on a fresh instance continues identically."""

    @abstractmethod
    def restore(self, state: dict[str, Any]) -> None: ...
