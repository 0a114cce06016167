"""Streaming anomaly detectors behind one contract (``base.AnomalyDetector``), looked up by name.

Importing this package imports neither numba nor river: kernels compile on first use and river is
imported when a HalfSpaceTrees is built (``hst`` asks river for its trees' splits once per parameters;
``hst-river`` is river's own pipeline, the baseline speed claims are measured against).
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from models.anomaly._array import ArrayDetector
from models.anomaly.base import AnomalyDetector
from models.anomaly.gauss import GaussianDetector
from models.anomaly.hst import HalfSpaceTrees
from models.anomaly.hst_river import RiverHalfSpaceTrees
from models.anomaly.likelihood import LikelihoodDetector
from models.anomaly.robust import RobustLikelihoodDetector
from models.anomaly.seasonal import SeasonalDetector

DETECTORS: dict[str, type[AnomalyDetector]] = {
    GaussianDetector.name: GaussianDetector,
    HalfSpaceTrees.name: HalfSpaceTrees,
    LikelihoodDetector.name: LikelihoodDetector,
    RiverHalfSpaceTrees.name: RiverHalfSpaceTrees,
    RobustLikelihoodDetector.name: RobustLikelihoodDetector,
    SeasonalDetector.name: SeasonalDetector,
}

DEFAULT_DETECTOR = SeasonalDetector.name  # best NAB score that still catches lone extremes (BENCHMARKS-nab.md)


def make_detector(name: str, **params: Any) -> AnomalyDetector:
    """Build a detector by name; an unknown name is an error that lists the known ones.

    Parameters
    ----------
    name
        A key of ``DETECTORS``.
    params
        Constructor arguments of that detector.

    Examples
    --------
    >>> det = make_detector("robust", window=32)
    >>> det.name, det.window
    ('robust', 32)
    """
    try:
        cls = DETECTORS[name]
    except KeyError:
        raise ValueError(f"unknown anomaly detector {name!r}; known: {', '.join(sorted(DETECTORS))}") from None
    if issubclass(cls, ArrayDetector):
        try:
            return _pristine(cls, tuple(sorted(params.items())))._copy()
        except TypeError:  # an unhashable parameter: built directly, which says what is wrong with it
            pass
    return cls(**params)


@lru_cache(maxsize=64)
def _pristine(cls: type[ArrayDetector], params: tuple[tuple[str, Any], ...]) -> ArrayDetector:
    """One never-used detector per parameter set, which ``make_detector`` copies: a fleet builds a detector per
    series whenever a device is first seen or its state is decoded, and building one costs 20 times a copy."""
    return cls(**dict(params))


__all__ = ["DEFAULT_DETECTOR", "DETECTORS", "AnomalyDetector", "make_detector"]
