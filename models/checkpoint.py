"""How every stateful object in eddyline checkpoints: its constructor arguments plus its state, as plain data.

Detectors, online models and flow processors all keep state that must survive a restart. Pickling the
object itself would tie checkpoints to today's class layout and would run code from whoever wrote the
checkpoint; ``params()`` and ``snapshot()`` are plain data instead (numbers, strings, bytes; a numpy array
as typed bytes via ``pack_array``), so ``restore`` can validate what it loads and refuse what it cannot read.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

ARRAY_DTYPES = frozenset({"<f8", "<f4", "<i8", "<i4", "<u4", "<u2", "|u1"})
"""The dtypes a packed array may carry: little-endian numbers only, never objects."""


class Checkpointed:
    """Subclasses override ``params`` (constructor arguments), ``snapshot`` and ``restore``."""

    def snapshot(self) -> dict[str, Any]:
        return {}

    def restore(self, state: dict[str, Any]) -> None:
        return None

    def params(self) -> dict[str, Any]:
        """Constructor arguments, so that a checkpoint is rebuilt with the same configuration."""
        return {}

    def __getstate__(self) -> dict[str, Any]:
        return {"params": self.params(), "state": self.snapshot()}

    def __setstate__(self, data: dict[str, Any]) -> None:
        self.__init__(**data["params"])  # type: ignore[misc]
        self.restore(data["state"])


def pack_array(array: np.ndarray) -> dict[str, Any]:
    """A numpy array as plain data: ``{"dtype", "shape", "data"}`` (dtype string, list of ints, raw bytes).

    Parameters
    ----------
    array
        A numeric array whose dtype is in ``ARRAY_DTYPES`` (after conversion to little-endian).

    Examples
    --------
    >>> import numpy as np
    >>> packed = pack_array(np.arange(3, dtype=np.float64))
    >>> packed["dtype"], packed["shape"], len(packed["data"])
    ('<f8', [3], 24)
    >>> unpack_array(packed, "x").tolist()
    [0.0, 1.0, 2.0]
    """
    a = np.ascontiguousarray(array)
    a = a.astype(a.dtype.newbyteorder("<"), copy=False)
    if a.dtype.str not in ARRAY_DTYPES:
        raise ValueError(f"cannot pack an array of dtype {a.dtype.str!r}; packable: {', '.join(sorted(ARRAY_DTYPES))}")
    return {"dtype": a.dtype.str, "shape": list(a.shape), "data": a.tobytes()}


def unpack_array(packed: Any, what: str, dtype: str | None = None, shape: tuple[int, ...] | None = None) -> np.ndarray:
    """The array that ``pack_array`` packed, as a fresh writable copy; anything else is a ``ValueError``.

    Parameters
    ----------
    packed
        The ``{"dtype", "shape", "data"}`` mapping.
    what
        Names the array in error messages (``"seasonal: window"``).
    dtype
        If given, the dtype string the array must have.
    shape
        If given, the shape the array must have.
    """
    if not isinstance(packed, Mapping) or set(packed) != {"dtype", "shape", "data"}:
        raise ValueError(f"{what}: expected a packed array {{dtype, shape, data}}, got {_describe(packed)}")
    dt, shp, data = packed["dtype"], packed["shape"], packed["data"]
    if not isinstance(dt, str) or dt not in ARRAY_DTYPES:
        raise ValueError(f"{what}: dtype {dt!r} is not one of {', '.join(sorted(ARRAY_DTYPES))}")
    if not isinstance(shp, (list, tuple)) or not all(type(d) is int and d >= 0 for d in shp):
        raise ValueError(f"{what}: shape {shp!r} is not a list of non-negative ints")
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise ValueError(f"{what}: data must be bytes, got {type(data).__name__}")
    expected = int(np.prod(shp, dtype=np.int64)) * np.dtype(dt).itemsize
    if len(data) != expected:
        raise ValueError(f"{what}: {len(data)} bytes of data, but dtype {dt} and shape {list(shp)} need {expected}")
    if dtype is not None and dt != dtype:
        raise ValueError(f"{what}: dtype {dt}, expected {dtype}")
    if shape is not None and tuple(shp) != tuple(shape):
        raise ValueError(f"{what}: shape {list(shp)}, expected {list(shape)}")
    return np.frombuffer(bytes(data), dtype=dt).reshape(shp).copy()


def plain_nbytes(value: Any) -> int:
    """The size of plain data as a compact binary encoding would store it (8 bytes a number, the length of each
    string and byte string, keys included); a non-plain value is a ``TypeError``. Used to bound snapshot sizes.

    Parameters
    ----------
    value
        Numbers, strings, bytes, ``None``, and lists, tuples and mappings of those.

    Examples
    --------
    >>> plain_nbytes({"version": 1, "data": b"abcd"})
    23
    """
    if value is None or isinstance(value, (bool, int, float)):
        return 8
    if isinstance(value, str):
        return len(value.encode())
    if isinstance(value, (bytes, bytearray)):
        return len(value)
    if isinstance(value, Mapping):
        return sum(plain_nbytes(k) + plain_nbytes(v) for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return sum(plain_nbytes(v) for v in value)
    raise TypeError(f"not plain data: {type(value).__name__}")


def _describe(value: Any) -> str:
    return f"keys {sorted(map(str, value))}" if isinstance(value, Mapping) else type(value).__name__
