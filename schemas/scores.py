"""Anomaly scores in either of the two encodings of ``anomaly_score`` v2: arrays, or packed bytes.

Packed, a series' timestamps are little-endian int64 and its scores little-endian float32 in two byte
strings: encoding and decoding them is one copy each instead of one Avro item per reading, which is what
writing scores cost the sensor flow. float32 keeps a score in [0, 1] to within 6e-8, far below any alert
threshold's resolution. Consumers call ``series_scores`` and never care which encoding a producer chose.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["pack_series", "series_scores"]

_TIMES = np.dtype("<i8")
_SCORES = np.dtype("<f4")


def pack_series(sensor: str, timestamps: np.ndarray, scores: np.ndarray) -> dict[str, Any]:
    """One ``ScoredSeries`` record, packed."""
    return {"sensor": sensor, "timestamps": [], "scores": [],
            "packed_timestamps": np.asarray(timestamps, dtype=_TIMES).tobytes(),
            "packed_scores": np.asarray(scores, dtype=_SCORES).tobytes()}


def series_scores(series: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """(timestamps int64, scores float64) of one ``ScoredSeries`` record, whichever encoding it uses.

    Raises ``ValueError`` when packed bytes do not hold one timestamp per score.
    """
    packed = series.get("packed_scores")
    if packed is None:
        return np.asarray(series["timestamps"], dtype=np.int64), np.asarray(series["scores"], dtype=np.float64)
    times = series.get("packed_timestamps") or b""
    if len(packed) % _SCORES.itemsize or len(times) % _TIMES.itemsize \
            or len(packed) // _SCORES.itemsize != len(times) // _TIMES.itemsize:
        raise ValueError(f"packed series {series.get('sensor')!r}: {len(times)} timestamp bytes do not match "
                         f"{len(packed)} score bytes")
    return (np.frombuffer(times, dtype=_TIMES).astype(np.int64),
            np.frombuffer(packed, dtype=_SCORES).astype(np.float64))
