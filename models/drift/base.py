"""The contract every concept-drift detector keeps: a stream of numbers in, the positions of drifts out.

A detector sees one series (a model's per-prediction errors, a metric). ``update`` takes the next values
in order and returns the indices (into that batch) where a drift was declared; after a detection the
detector starts afresh, so the next alarm is about the next change. Splitting a series into batches
differently never changes the detections.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import ClassVar

import numpy as np

from models.checkpoint import Checkpointed


class StreamDriftDetector(Checkpointed, ABC):
    """A concept-drift detector on one series: values in, in order; positions of the drifts out.

    Subclasses take their thresholds as constructor parameters, restart after each detection, and
    checkpoint as plain data (``snapshot``/``restore``). Build one by name with ``make_detector``.
    """

    name: ClassVar[str]

    @abstractmethod
    def update(self, values: np.ndarray) -> np.ndarray:
        """Feed values in order; return int64 indices into ``values`` where a drift was detected.

        Parameters
        ----------
        values
            The next values of the series (a model's 0/1 errors, a metric); any batch size gives the same
            detections.
        """

    @property
    @abstractmethod
    def statistic(self) -> float:
        """The current test statistic, for drift events and dashboards."""

    @property
    @abstractmethod
    def threshold(self) -> float: ...
