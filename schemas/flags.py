"""A device's local anomaly flags as carried in ``sensor_batch`` v2: one bit per reading in a byte string.

A bitmask costs an eighth of a byte per reading, whatever share is flagged, and packs and unpacks in one
numpy call each; reading i is bit ``i % 8`` of byte ``i // 8`` (numpy's little bit order).
"""

from __future__ import annotations

import numpy as np

__all__ = ["pack_flags", "unpack_flags"]


def pack_flags(flags: np.ndarray) -> bytes:
    """The bitmask of a boolean array, one bit per reading."""
    return np.packbits(np.asarray(flags, dtype=bool), bitorder="little").tobytes()


def unpack_flags(mask: bytes, n: int) -> np.ndarray:
    """The ``n`` booleans of a bitmask; raises ``ValueError`` when it does not hold exactly ``n`` bits' bytes."""
    if len(mask) != (n + 7) // 8:
        raise ValueError(f"a flag bitmask of {len(mask)} bytes for {n} readings; it needs {(n + 7) // 8}")
    return np.unpackbits(np.frombuffer(mask, dtype=np.uint8), count=n, bitorder="little").astype(bool)
