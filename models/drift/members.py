"""Single drift detectors by name: what an ensemble is made of."""

from __future__ import annotations

from typing import Any

from models.drift.base import StreamDriftDetector

MEMBERS = ("cusum", "adwin", "page_hinkley")


def make_member(name: str, **kwargs: Any) -> StreamDriftDetector:
    """A single detector: ``cusum`` (ours), or river's ``adwin`` or ``page_hinkley``.

    Parameters
    ----------
    name
        One of ``cusum``, ``adwin``, ``page_hinkley``.
    kwargs
        The detector's own parameters (thresholds, river's ``delta``...).
    """
    if name == "cusum":
        from models.drift.cusum import SelfStartingCusum

        return SelfStartingCusum(**kwargs)
    if name in ("adwin", "page_hinkley"):
        from models.drift.river_detectors import RiverDetector

        return RiverDetector(name, **kwargs)
    raise ValueError(f"unknown drift detector {name!r}: expected ours, {', '.join(MEMBERS)}")
