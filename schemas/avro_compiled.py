"""Avro bodies read and written by code compiled once per schema: fastavro's records and bytes, at less cost.

``fastavro`` walks the schema for every record and every array item. Flows read and write the same few
schemas millions of times, each message carrying arrays of readings, so ``compile_reader`` and
``compile_writer`` turn a parsed schema into nested closures once; arrays of ``double`` are one numpy copy,
arrays of ``long`` (varints) one compiled loop (numba) instead of one call per item. Asked to
(``compile_reader(parsed, arrays=True)``), the reader leaves those arrays as numpy arrays instead of lists, and
the writer takes numpy arrays as they are: a flow that computes on arrays never makes a Python object per reading.

Both take only what they are sure fastavro handles the same way. The writer: ``str`` for strings, ``int``
(not ``bool``) in range for ``int``/``long``, ``float`` for ``float``/``double``, ``bytes``, a ``dict`` with
every field of a record, ``[null, X]`` unions. The reader: well-formed single-block arrays and maps,
union and enum indices in range, strict UTF-8. Anything else raises (``Unsupported`` or the error met), and
the caller (``schemas.serde.AvroSerde``) hands that record to fastavro: so an unusual record gets fastavro's
result or fastavro's error, never a different answer. Schemas with arrays of numbers need numpy and numba
(the platform install; ``AvroSerde(compiled=True)``, as flows use it); the edge agent keeps fastavro.
``tests/unit/test_avro_compiled.py`` compares both with fastavro on every schema, and on corrupted bodies.
"""

from __future__ import annotations

import struct
import sys
from collections.abc import Callable
from functools import cache
from typing import Any, NamedTuple

__all__ = ["Unsupported", "compile_reader", "compile_writer"]

Write = Callable[[bytearray, Any], None]
Read = Callable[[bytes, int], tuple[Any, int]]

_INT64 = (-(1 << 63), (1 << 63) - 1)
_INT32 = (-(1 << 31), (1 << 31) - 1)
_np: Any = None  # numpy, imported by ``_kernels`` where arrays of numbers are compiled
_DOUBLE = struct.Struct("<d")
_FLOAT = struct.Struct("<f")
_LE_FLOAT64 = "<f8"  # numpy compares a dtype with this spelling: float64 in native order only on little-endian


class Unsupported(Exception):
    """A schema or value the compiled writer leaves to fastavro (which then writes it or says what is wrong)."""


def _varint(out: bytearray, n: int) -> None:
    z = (n << 1) ^ (n >> 63)
    while z > 0x7F:
        out.append((z & 0x7F) | 0x80)
        z >>= 7
    out.append(z)


def _long(bounds: tuple[int, int]) -> Write:
    lo, hi = bounds

    def write(out: bytearray, datum: Any) -> None:
        if type(datum) is not int or not lo <= datum <= hi:
            raise Unsupported
        _varint(out, datum)

    return write


def _real(pack: Callable[[float], bytes]) -> Write:
    def write(out: bytearray, datum: Any) -> None:
        if not isinstance(datum, float):
            raise Unsupported
        out += pack(datum)

    return write


def _string(out: bytearray, datum: Any) -> None:
    if type(datum) is not str:
        raise Unsupported
    data = datum.encode()
    _varint(out, len(data))
    out += data


def _bytes(out: bytearray, datum: Any) -> None:
    if type(datum) is not bytes:
        raise Unsupported
    _varint(out, len(datum))
    out += datum


def _boolean(out: bytearray, datum: Any) -> None:
    if type(datum) is not bool:
        raise Unsupported
    out.append(1 if datum else 0)


def _null(out: bytearray, datum: Any) -> None:
    if datum is not None:
        raise Unsupported


def _block(out: bytearray, n: int, body: bytes) -> None:
    _varint(out, n)
    out += body
    out.append(0)


def _encode_varints(values: Any, out: Any) -> int:  # pragma: no cover - compiled by _kernels
    j = 0
    for v in values:
        z = _np.uint64((v << 1) ^ (v >> 63))
        while z > 0x7F:
            out[j] = _np.uint8((z & 0x7F) | 0x80)
            j += 1
            z >>= _np.uint64(7)
        out[j] = _np.uint8(z)
        j += 1
    return j


def _decode_varints(buf: Any, pos: int, out: Any) -> int:  # pragma: no cover - compiled by _kernels
    """Fills ``out`` from ``buf[pos:]``; the position after the last varint, or -1 (truncated, or beyond 64 bits)."""
    for i in range(out.shape[0]):
        z = _np.uint64(0)
        shift = 0
        while True:
            if pos >= buf.shape[0] or shift > 63 or (shift == 63 and buf[pos] > 1):
                return -1
            b = buf[pos]
            pos += 1
            z |= _np.uint64(b & 0x7F) << _np.uint64(shift)
            shift += 7
            if b < 0x80:
                break
        out[i] = _np.int64(z >> _np.uint64(1)) ^ -_np.int64(z & _np.uint64(1))
    return pos


@cache
def _kernels() -> tuple[Callable[..., int], Callable[..., int]]:
    """The zigzag-varint loops compiled (numba): encode an int64 array into bytes, decode ``len(out)`` of them.

    Varints are variable-length, so neither direction vectorises well in numpy (10-20 us per 50 values
    measured here, against 1-2.5 us compiled and fastavro's 5-10 us); these loops are why numba is needed.
    """
    global _np
    import numba
    import numpy as _np

    jit = numba.njit(cache=True, nogil=True)
    return jit(_encode_varints), jit(_decode_varints)


def _numbers_ready() -> None:
    """Arrays of numbers need numpy and numba (compiled on first use); without them the schema stays with fastavro."""
    try:
        _kernels()
    except ImportError:
        raise Unsupported("arrays of numbers need numpy and numba") from None


def _numbers(datum: Any, kinds: str) -> Any:
    """``datum`` (a list or a numpy array) as a 1-D numpy array of one of ``kinds``, or ``Unsupported``."""
    np = sys.modules["numpy"]
    if not isinstance(datum, (list, np.ndarray)):
        raise Unsupported
    try:
        values = np.asarray(datum)
    except (OverflowError, ValueError):
        raise Unsupported from None
    if values.ndim != 1 or values.dtype.kind not in kinds:
        raise Unsupported
    return values


def _long_array(out: bytearray, datum: Any) -> None:
    if len(datum) == 0:
        out.append(0)
        return
    np = sys.modules["numpy"]
    values = datum if type(datum) is np.ndarray and datum.dtype == np.int64 and datum.ndim == 1 else \
        _numbers(datum, "i").astype(np.int64, copy=False)
    data = np.empty(10 * len(values), dtype=np.uint8)
    size = _kernels()[0](values, data)
    _block(out, len(values), data[:size].tobytes())


def _double_array(out: bytearray, datum: Any) -> None:
    if len(datum) == 0:
        out.append(0)
        return
    np = sys.modules["numpy"]
    if type(datum) is np.ndarray and datum.dtype == _LE_FLOAT64 and datum.ndim == 1:  # a float64 array: its bytes
        _block(out, len(datum), datum.tobytes())
        return
    values = _numbers(datum, "f")
    _block(out, len(values), values.astype("<f8", copy=False).tobytes())


def _array(items: Write) -> Write:
    def write(out: bytearray, datum: Any) -> None:
        if not isinstance(datum, list):
            raise Unsupported
        if datum:
            _varint(out, len(datum))
            for item in datum:
                items(out, item)
        out.append(0)

    return write


def _map(values: Write) -> Write:
    def write(out: bytearray, datum: Any) -> None:
        if type(datum) is not dict:
            raise Unsupported
        if datum:
            _varint(out, len(datum))
            for key, value in datum.items():
                _string(out, key)
                values(out, value)
        out.append(0)

    return write


def _enum(symbols: list[str]) -> Write:
    index = {s: i for i, s in enumerate(symbols)}

    def write(out: bytearray, datum: Any) -> None:
        i = index.get(datum) if type(datum) is str else None
        if i is None:
            raise Unsupported
        _varint(out, i)

    return write


def _optional(null_at: int, other: Write) -> Write:
    tag_null, tag_other = bytes([null_at << 1]), bytes([(1 - null_at) << 1])

    def write(out: bytearray, datum: Any) -> None:
        if datum is None:
            out += tag_null
        else:
            out += tag_other
            other(out, datum)

    return write


def _record(fields: list[tuple[str, Write]]) -> Write:
    def write(out: bytearray, datum: Any) -> None:
        if type(datum) is not dict:
            raise Unsupported
        for name, field in fields:
            try:
                value = datum[name]
            except KeyError:  # fastavro fills in the default
                raise Unsupported from None
            field(out, value)

    return write


_PRIMITIVES: dict[str, Write] = {
    "null": _null, "boolean": _boolean, "int": _long(_INT32), "long": _long(_INT64),
    "float": _real(_FLOAT.pack), "double": _real(_DOUBLE.pack), "bytes": _bytes, "string": _string,
}


class _Builders(NamedTuple):
    """How one direction (reading or writing) builds each kind of schema node."""

    primitives: dict[str, Any]
    numbers: dict[str, Any]  # arrays of "long" and of "double"
    optional: Callable[[int, Any], Any]
    array: Callable[[Any], Any]
    map: Callable[[Any], Any]
    enum: Callable[[list[str]], Any]
    record: Callable[[list[tuple[str, Any]]], Any]


def _compile(schema: Any, named: dict[str, Any], build: _Builders) -> Any:
    """The reader or writer of one parsed schema node; ``Unsupported`` for what stays with fastavro."""
    if isinstance(schema, str):
        if schema in build.primitives:
            return build.primitives[schema]
        if schema in named:
            return lambda *args: named[schema](*args)
        raise Unsupported(f"unknown type {schema!r}")
    if isinstance(schema, list):
        if len(schema) != 2 or "null" not in schema:
            raise Unsupported("only [null, X] unions")
        null_at = schema.index("null")
        return build.optional(null_at, _compile(schema[1 - null_at], named, build))
    if not isinstance(schema, dict) or "logicalType" in schema:
        raise Unsupported(f"schema {schema!r}")
    kind = schema["type"]
    if kind == "array":
        items = schema["items"]
        if isinstance(items, str) and items in build.numbers:
            _numbers_ready()
            return build.numbers[items]
        return build.array(_compile(items, named, build))
    if kind == "map":
        return build.map(_compile(schema["values"], named, build))
    if kind == "enum":
        named[schema["name"]] = node = build.enum(schema["symbols"])
        return node
    if kind == "record":
        fields: list[tuple[str, Any]] = []
        named[schema["name"]] = node = build.record(fields)
        fields.extend((f["name"], _compile(f["type"], named, build)) for f in schema["fields"])
        return node
    if kind in build.primitives:
        return build.primitives[kind]
    raise Unsupported(f"type {kind!r}")


_WRITE = _Builders(_PRIMITIVES, {"long": _long_array, "double": _double_array}, _optional, _array, _map, _enum,
                   _record)


def compile_writer(parsed: Any) -> Callable[[Any], bytes] | None:
    """A function record -> Avro body (raising ``Unsupported`` for what it leaves to fastavro), or ``None``
    when the schema uses something it does not compile (logical types, unions other than [null, X]).

    Parameters
    ----------
    parsed
        A schema as ``fastavro.parse_schema`` returns it (named types spelled out once, then by full name).

    Examples
    --------
    >>> import io, fastavro
    >>> from schemas import catalog
    >>> parsed = catalog.latest("anomaly_score").parsed
    >>> record = {"event_id": "s-1", "event_time": 1, "producer": "docs", "source_event_id": "b-1",
    ...           "device_id": "d", "model": "gauss", "threshold": 0.99,
    ...           "series": [{"sensor": "t", "timestamps": [1, 2], "scores": [0.5, 0.25],
    ...                       "packed_timestamps": None, "packed_scores": None}]}
    >>> body = io.BytesIO()
    >>> fastavro.schemaless_writer(body, parsed, record)
    >>> compile_writer(parsed)(record) == body.getvalue()
    True
    """
    try:
        write = _compile(parsed, {}, _WRITE)
    except Unsupported:
        return None

    def encode(record: Any) -> bytes:
        out = bytearray()
        write(out, record)
        return bytes(out)

    return encode


# Reading: each compiled reader takes (body, position) and returns (value, next position).


def _read_varint(buf: bytes, pos: int) -> tuple[int, int]:
    b = buf[pos]
    pos += 1
    n = b & 0x7F
    shift = 7
    while b & 0x80:
        if shift > 63:
            raise Unsupported("varint longer than 10 bytes")
        b = buf[pos]
        pos += 1
        n |= (b & 0x7F) << shift
        shift += 7
    return (n >> 1) ^ -(n & 1), pos


def _read_long(bounds: tuple[int, int]) -> Read:
    lo, hi = bounds

    def read(buf: bytes, pos: int) -> tuple[int, int]:
        n, pos = _read_varint(buf, pos)
        if not lo <= n <= hi:
            raise Unsupported
        return n, pos

    return read


def _read_real(unpack: struct.Struct) -> Read:
    size, unpack_from = unpack.size, unpack.unpack_from

    def read(buf: bytes, pos: int) -> tuple[float, int]:
        if pos + size > len(buf):
            raise Unsupported("truncated")
        return unpack_from(buf, pos)[0], pos + size

    return read


def _read_length(buf: bytes, pos: int) -> tuple[int, int]:
    n, pos = _read_varint(buf, pos)
    if n < 0 or pos + n > len(buf):
        raise Unsupported("bad length")
    return n, pos


def _read_string(buf: bytes, pos: int) -> tuple[str, int]:
    n, pos = _read_length(buf, pos)
    return buf[pos : pos + n].decode(), pos + n


def _read_bytes(buf: bytes, pos: int) -> tuple[bytes, int]:
    n, pos = _read_length(buf, pos)
    return bytes(buf[pos : pos + n]), pos + n


def _read_boolean(buf: bytes, pos: int) -> tuple[bool, int]:
    b = buf[pos]
    if b > 1:
        raise Unsupported
    return b == 1, pos + 1


def _read_null(buf: bytes, pos: int) -> tuple[None, int]:
    return None, pos


def _read_count(buf: bytes, pos: int) -> tuple[int, int]:
    """One block's item count; a negative count (a block with its byte size) is left to fastavro."""
    n, pos = _read_varint(buf, pos)
    if n < 0:
        raise Unsupported("sized block")
    return n, pos


def _read_blocks(one: Callable[[bytes, int, int], tuple[Any, int]], join: Callable[[list[Any]], Any] | None = None,
                 empty: Callable[[], Any] = list) -> Read:
    """Blocks of ``one``'s items; several blocks are joined (list concatenation, or ``join`` for arrays)."""

    def read(buf: bytes, pos: int) -> tuple[Any, int]:
        n, pos = _read_count(buf, pos)
        if n == 0:
            return empty(), pos
        items, pos = one(buf, pos, n)
        n, pos = _read_count(buf, pos)
        if not n:
            return items, pos
        parts = [items]
        while n:
            more, pos = one(buf, pos, n)
            parts.append(more)
            n, pos = _read_count(buf, pos)
        return (join(parts) if join is not None else [x for part in parts for x in part]), pos

    return read


def _double_view(buf: bytes, pos: int, n: int) -> tuple[Any, int]:
    end = pos + 8 * n
    if end > len(buf):
        raise Unsupported("truncated")
    return sys.modules["numpy"].frombuffer(buf, "<f8", n, pos), end


def _doubles(buf: bytes, pos: int, n: int) -> tuple[list[float], int]:
    values, end = _double_view(buf, pos, n)
    return values.tolist(), end


def _double_copy(buf: bytes, pos: int, n: int) -> tuple[Any, int]:
    values, end = _double_view(buf, pos, n)
    return values.astype(sys.modules["numpy"].float64), end  # a copy: the message's bytes are not kept alive


def _long_values(buf: bytes, pos: int, n: int) -> tuple[Any, int]:
    np = sys.modules["numpy"]
    values = np.empty(n, dtype=np.int64)
    end = _kernels()[1](np.frombuffer(buf, dtype=np.uint8), pos, values)
    if end < 0:
        raise Unsupported("truncated, or a varint beyond 64 bits")
    return values, end


def _longs(buf: bytes, pos: int, n: int) -> tuple[list[int], int]:
    values, end = _long_values(buf, pos, n)
    return values.tolist(), end


def _concatenate(parts: list[Any]) -> Any:
    return sys.modules["numpy"].concatenate(parts)


def _empty(dtype: str) -> Callable[[], Any]:
    return lambda: sys.modules["numpy"].empty(0, dtype=dtype)


def _items(read: Read) -> Callable[[bytes, int, int], tuple[list[Any], int]]:
    def one(buf: bytes, pos: int, n: int) -> tuple[list[Any], int]:
        out = []
        for _ in range(n):
            value, pos = read(buf, pos)
            out.append(value)
        return out, pos

    return one


def _read_map(values: Read) -> Read:
    def read(buf: bytes, pos: int) -> tuple[dict[str, Any], int]:
        out: dict[str, Any] = {}
        n, pos = _read_count(buf, pos)
        while n:
            for _ in range(n):
                key, pos = _read_string(buf, pos)
                out[key], pos = values(buf, pos)
            n, pos = _read_count(buf, pos)
        return out, pos

    return read


def _read_enum(symbols: list[str]) -> Read:
    def read(buf: bytes, pos: int) -> tuple[str, int]:
        i, pos = _read_varint(buf, pos)
        if not 0 <= i < len(symbols):
            raise Unsupported("enum index")
        return symbols[i], pos

    return read


def _read_optional(null_at: int, other: Read) -> Read:
    def read(buf: bytes, pos: int) -> tuple[Any, int]:
        i, pos = _read_varint(buf, pos)
        if i == null_at:
            return None, pos
        if i != 1 - null_at:
            raise Unsupported("union index")
        return other(buf, pos)

    return read


def _read_record(fields: list[tuple[str, Read]]) -> Read:
    def read(buf: bytes, pos: int) -> tuple[dict[str, Any], int]:
        out = {}
        for name, field in fields:
            out[name], pos = field(buf, pos)
        return out, pos

    return read


_READ_PRIMITIVES: dict[str, Read] = {
    "null": _read_null, "boolean": _read_boolean, "int": _read_long(_INT32), "long": _read_long(_INT64),
    "float": _read_real(_FLOAT), "double": _read_real(_DOUBLE), "bytes": _read_bytes, "string": _read_string,
}


_READ = _Builders(_READ_PRIMITIVES, {"long": _read_blocks(_longs), "double": _read_blocks(_doubles)},
                  _read_optional, lambda items: _read_blocks(_items(items)), _read_map, _read_enum, _read_record)
_READ_ARRAYS = _READ._replace(numbers={
    "long": _read_blocks(_long_values, _concatenate, _empty("<i8")),
    "double": _read_blocks(_double_copy, _concatenate, _empty("<f8")),
})


def compile_reader(parsed: Any, arrays: bool = False) -> Callable[[bytes], tuple[Any, int]] | None:
    """A function body -> (record, bytes read) for bodies written with ``parsed`` (raising for anything it
    leaves to fastavro), or ``None`` when the schema uses something it does not compile.

    Parameters
    ----------
    parsed
        The writer's schema as ``fastavro.parse_schema`` returns it; the record comes out in that schema
        (schema resolution against another reader schema stays with fastavro).
    arrays
        Arrays of ``long`` and ``double`` come out as numpy ``int64`` and ``float64`` arrays instead of lists
        (the values fastavro gives, without making a Python object per item): for callers that compute on
        them as arrays, like the sensor flow.

    Examples
    --------
    >>> import io, fastavro
    >>> from schemas import catalog
    >>> parsed = catalog.latest("sensor_batch").parsed
    >>> record = {"event_id": "b-1", "event_time": 1, "producer": "docs", "device_id": "d", "seq": 7,
    ...           "series": [{"sensor": "t", "unit": None, "timestamps": [1, 2], "values": [0.5, 0.25],
    ...                       "local_flags": None}], "local_model": None}
    >>> body = io.BytesIO()
    >>> fastavro.schemaless_writer(body, parsed, record)
    >>> compile_reader(parsed)(body.getvalue()) == (record, len(body.getvalue()))
    True
    """
    try:
        read = _compile(parsed, {}, _READ_ARRAYS if arrays else _READ)
    except Unsupported:
        return None

    def decode(body: bytes) -> tuple[Any, int]:
        return read(body if type(body) is bytes else bytes(body), 0)

    return decode
