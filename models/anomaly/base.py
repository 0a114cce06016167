"""The contract every streaming anomaly detector keeps.

A detector watches one series (one sensor of one device). ``score_learn`` takes the next values in order
and returns one score per value, each computed *before* the detector learns from that value: splitting a
series into batches differently never changes a score, and no score sees the future. State is plain data
(numbers, strings and typed bytes, with a version) so that the flow can checkpoint it across processes
without pickle and a restart resumes exactly.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, ClassVar

import numpy as np

from models.checkpoint import Checkpointed


class AnomalyDetector(Checkpointed, ABC):
    """Scores in [0, 1]; at or above ``threshold`` a value is anomalous.

    A snapshot is plain data (numbers, strings, bytes; arrays as typed bytes), versioned, never pickle:
    ``restore`` refuses what it cannot read with a ``ValueError`` and leaves the detector as it was.
    """

    name: ClassVar[str]
    threshold: float = 0.5

    @abstractmethod
    def score_learn(self, values: np.ndarray, timestamps: np.ndarray) -> np.ndarray:
        """Score then learn each value in order; one score per value, each computed before learning it.

        Parameters
        ----------
        values
            The next readings of the series, in order (1-D, finite; converted to float64).
        timestamps
            Their times, int64 epoch milliseconds, same length as ``values``.
        """

    @abstractmethod
    def snapshot(self) -> dict[str, Any]:
        """The whole state as plain data; ``restore`` on a fresh instance continues identically."""

    @abstractmethod
    def restore(self, state: dict[str, Any]) -> None: ...
