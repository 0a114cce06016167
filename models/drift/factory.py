"""Drift detectors by name, as settings and benchmarks ask for them."""

from __future__ import annotations

from typing import Any

from models.drift.base import StreamDriftDetector
from models.drift.members import make_member


def make_detector(name: str, **kwargs: Any) -> StreamDriftDetector:
    """A detector by name: ``ours`` (CUSUM + ADWIN), ``cusum``, ``adwin`` or ``page_hinkley`` (river).

    Parameters
    ----------
    name
        ``ours`` is the ensemble the flows use; the others are its members alone.
    kwargs
        Passed to the detector's constructor; ``settle`` (``models.drift.settle``) is the warm-up before alarms
        count: 800 values by default for ``ours``, none for the others unless given.

    Examples
    --------
    >>> import numpy as np
    >>> from models.drift import make_detector
    >>> detector = make_detector("ours")
    >>> stream = np.r_[np.zeros(1000), np.ones(500)] + np.random.default_rng(0).normal(0, 0.1, 1500)
    >>> drifts = detector.update(stream)  # no alarm counts before the stream has settled (800 values)
    >>> len(drifts) == 1 and 1000 <= int(drifts[0]) < 1100
    True
    """
    if name == "ours":
        from models.drift.ensemble import DriftEnsemble

        return DriftEnsemble(**kwargs)
    if kwargs.get("settle"):
        from models.drift.settle import Settled

        return Settled(name, **kwargs)
    kwargs.pop("settle", None)
    return make_member(name, **kwargs)
