"""Processor state across process boundaries: a versioned plain codec and the store of idle keys.

Checkpoints (Bytewax recovery, Faust changelogs) and evicted keys hold a processor as bytes. Those bytes are
read back by another process, possibly another version of eddyline, possibly written by someone else who can
reach the recovery folder or the changelog topic. So they carry data only: ``params()`` and ``snapshot()``
in a small tagged binary format (None, bool, int, float, str, bytes, list, tuple, dict, numeric numpy arrays
as dtype + shape + raw bytes), behind a magic and a format version. The class is never read from the bytes:
the flow decides which processor to build, and a state written for another class, by another format
version, or malformed is refused with a ``StateError`` that says what it was.
"""

from __future__ import annotations

import logging
import sqlite3
import struct
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
from prometheus_client import Counter

from connectors.prometheus import metric
from streams.processor import FlowSpec, Processor

__all__ = [
    "FORMAT_VERSION", "IdleStore", "StateError", "decode", "decode_checkpoint", "decode_processor", "encode",
    "encode_processor", "processor_from", "restore_or_fresh",
]

log = logging.getLogger(__name__)
_REFUSED = metric(Counter, "eddyline_state_refused", "Saved processor states refused (foreign, old or broken); "
                  "each key concerned started fresh.", ["flow"])

PEERS_RELIST_S = 5.0  # how often an idle store looks for other processes' files
MAGIC = b"EDST"
FORMAT_VERSION = 1
MAX_DEPTH = 64
_NUMERIC_KINDS = "biuf"  # bool, signed, unsigned, float: arrays of anything else (objects) are refused

_U32 = struct.Struct("<I")
_I64 = struct.Struct("<q")
_F64 = struct.Struct("<d")


class StateError(ValueError):
    """Bytes that are not a state this version can restore: foreign, from another format version, or broken."""


def encode(value: Any) -> bytes:
    """``value`` (plain data and numeric numpy arrays) as versioned bytes; anything else is a ``TypeError``."""
    parts = [MAGIC, bytes((FORMAT_VERSION,))]
    _put(value, parts, 0)
    return b"".join(parts)


def _put(v: Any, out: list[bytes], depth: int) -> None:
    if depth > MAX_DEPTH:
        raise TypeError(f"state nests deeper than {MAX_DEPTH} levels")
    kind = type(v)  # the exact plain types first: a detector's state is hundreds of them, every epoch
    if kind is float:
        out.append(b"f" + _F64.pack(v))
    elif kind is dict:
        out.append(b"d" + _U32.pack(len(v)))
        for k, item in v.items():
            _put(k, out, depth + 1)
            _put(item, out, depth + 1)
    elif kind is str:
        raw = v.encode()
        out.append(b"s" + _U32.pack(len(raw)) + raw)
    elif kind is int and -(1 << 63) <= v < (1 << 63):
        out.append(b"i" + _I64.pack(v))
    else:
        _put_other(v, out, depth)


def _put_other(v: Any, out: list[bytes], depth: int) -> None:
    if v is None:
        out.append(b"N")
    elif v is True or v is False or isinstance(v, np.bool_):
        out.append(b"T" if v else b"F")
    elif isinstance(v, (int, np.integer)):
        v = int(v)
        if -(1 << 63) <= v < (1 << 63):
            out.append(b"i" + _I64.pack(v))
        else:
            text = str(v).encode()
            out.append(b"I" + _U32.pack(len(text)) + text)
    elif isinstance(v, (float, np.floating)):
        out.append(b"f" + _F64.pack(float(v)))
    elif isinstance(v, str):
        raw = v.encode()
        out.append(b"s" + _U32.pack(len(raw)) + raw)
    elif isinstance(v, (bytes, bytearray, memoryview)):
        raw = bytes(v)
        out.append(b"b" + _U32.pack(len(raw)) + raw)
    elif isinstance(v, np.ndarray):
        if v.dtype.kind not in _NUMERIC_KINDS:
            raise TypeError(f"only numeric arrays go into a state, not dtype {v.dtype}")
        dtype = v.dtype.newbyteorder("<").str.encode()
        data = np.ascontiguousarray(v, dtype=v.dtype.newbyteorder("<")).tobytes()
        out.append(b"a" + bytes((len(dtype),)) + dtype + bytes((v.ndim,))
                   + b"".join(_U32.pack(n) for n in v.shape) + _U32.pack(len(data)) + data)
    elif isinstance(v, (list, tuple)):
        out.append((b"l" if isinstance(v, list) else b"t") + _U32.pack(len(v)))
        for item in v:
            _put(item, out, depth + 1)
    elif isinstance(v, dict):
        out.append(b"d" + _U32.pack(len(v)))
        for k, item in v.items():
            _put(k, out, depth + 1)
            _put(item, out, depth + 1)
    else:
        raise TypeError(f"{type(v).__name__} is not plain data; a state holds numbers, strings, bytes and arrays")


def decode(blob: bytes) -> Any:
    """The value ``encode`` wrote; ``StateError`` for anything else (never executes or imports anything)."""
    if not isinstance(blob, (bytes, bytearray, memoryview)):
        raise StateError(f"a state is bytes, not {type(blob).__name__}")
    blob = bytes(blob)
    if blob[:4] != MAGIC:
        hint = " (a pickle, as eddyline wrote before state format 1)" if blob[:1] == b"\x80" else ""
        raise StateError(f"not an eddyline state: it starts with {blob[:4]!r}{hint}")
    if len(blob) < 5 or blob[4] != FORMAT_VERSION:
        found = blob[4] if len(blob) > 4 else "none"
        raise StateError(f"state format version {found}; this eddyline reads version {FORMAT_VERSION}")
    reader = _Reader(blob, 5)
    value = reader.value(0)
    if reader.pos != len(blob):
        raise StateError(f"{len(blob) - reader.pos} unexpected bytes after the state")
    return value


class _Reader:
    def __init__(self, blob: bytes, pos: int) -> None:
        self.blob = blob
        self.pos = pos

    def take(self, n: int) -> bytes:
        end = self.pos + n
        if n < 0 or end > len(self.blob):
            raise StateError(f"state truncated at byte {self.pos} (needs {n} more)")
        chunk = self.blob[self.pos:end]
        self.pos = end
        return chunk

    def u32(self) -> int:
        return _U32.unpack(self.take(4))[0]

    def value(self, depth: int) -> Any:
        if depth > MAX_DEPTH:
            raise StateError(f"state nests deeper than {MAX_DEPTH} levels")
        tag = self.take(1)
        if tag == b"N":
            return None
        if tag in (b"T", b"F"):
            return tag == b"T"
        if tag == b"i":
            return _I64.unpack(self.take(8))[0]
        if tag == b"I":
            try:
                return int(self.take(self.u32()).decode("ascii"))
            except ValueError:
                raise StateError("a big integer in the state is not a number") from None
        if tag == b"f":
            return _F64.unpack(self.take(8))[0]
        if tag == b"s":
            try:
                return self.take(self.u32()).decode()
            except UnicodeDecodeError:
                raise StateError("a string in the state is not UTF-8") from None
        if tag == b"b":
            return self.take(self.u32())
        if tag == b"a":
            return self.array()
        if tag in (b"l", b"t"):
            items = [self.value(depth + 1) for _ in range(self.u32())]
            return items if tag == b"l" else tuple(items)
        if tag == b"d":
            out = {}
            for _ in range(self.u32()):
                k = self.value(depth + 1)
                try:
                    out[k] = self.value(depth + 1)
                except TypeError:
                    raise StateError(f"a dict key in the state is unhashable: {type(k).__name__}") from None
            return out
        raise StateError(f"unknown tag {tag!r} at byte {self.pos - 1} of the state")

    def array(self) -> np.ndarray:
        try:
            dtype = np.dtype(self.take(self.take(1)[0]).decode("ascii"))
        except (TypeError, ValueError, UnicodeDecodeError):
            raise StateError("an array in the state has an unreadable dtype") from None
        if dtype.kind not in _NUMERIC_KINDS:
            raise StateError(f"an array in the state has non-numeric dtype {dtype}")
        shape = tuple(self.u32() for _ in range(self.take(1)[0]))
        data = self.take(self.u32())
        if len(data) != int(np.prod(shape, dtype=np.int64)) * dtype.itemsize:
            raise StateError(f"an array in the state has {len(data)} bytes for shape {shape} of {dtype}")
        return np.frombuffer(data, dtype=dtype).reshape(shape).astype(dtype.newbyteorder("="), copy=True)


def _class_name(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


_ENVELOPE = ("key", "processor", "version", "params", "state", "offsets")


def encode_processor(processor: Processor, key: str, offsets: dict[tuple[str, int], int] | None = None) -> bytes:
    """A key's processor as versioned plain bytes: its class name (checked on restore, never imported), state
    version, params and state, and the input offsets it has absorbed (for engines that skip replays by them)."""
    return encode({
        "key": key,
        "processor": _class_name(type(processor)),
        "version": processor.state_version,
        "params": processor.params(),
        "state": processor.snapshot(),
        "offsets": offsets or {},
    })


def decode_checkpoint(blob: bytes) -> dict[str, Any]:
    """The envelope ``encode_processor`` wrote (key, offsets, ...), checked; ``StateError`` for anything else."""
    saved = decode(blob)
    if not isinstance(saved, dict) or not set(_ENVELOPE) <= saved.keys():
        raise StateError(f"the state is not a processor checkpoint (fields {', '.join(_ENVELOPE)})")
    return saved


def processor_from(saved: dict[str, Any], fresh: Processor) -> Processor:
    """The processor of a decoded checkpoint, rebuilt as ``fresh``'s class (which the flow chose for the key)."""
    cls = type(fresh)
    if saved["processor"] != _class_name(cls):
        raise StateError(f"the state belongs to {saved['processor']!r}, not {_class_name(cls)!r}")
    if saved["version"] != cls.state_version:
        raise StateError(f"{_class_name(cls)} state version {saved['version']!r}; this eddyline restores "
                         f"version {cls.state_version}")
    try:
        processor = cls(**saved["params"])
        processor.restore(saved["state"])
    except Exception as exc:  # a state that decodes but does not fit: refused like any other
        raise StateError(f"{_class_name(cls)} refused the state: {type(exc).__name__}: {exc}") from None
    return processor


def decode_processor(blob: bytes, fresh: Processor) -> Processor:
    """``processor_from(decode_checkpoint(blob), fresh)``."""
    return processor_from(decode_checkpoint(blob), fresh)


class IdleStore:
    """Where evicted keys' states wait until their key speaks again: one SQLite file per process.

    Bytewax's recovery drops a key that its logic discards, so an evicted key's encoded state goes here first
    (written and committed before the discard can reach a checkpoint). A key that Bytewax resumes with a state
    of its own ignores what is here: that state is the newer one whenever both exist.

    Each process of a cluster writes only its own file. A key moves to another process when a cluster restarts
    with another process count, so a key is also looked up, read-only, in the other files that ``peers``
    matches, and of several copies the one saved last wins.

    Parameters
    ----------
    path
        This process's SQLite file; its folder is created.
    peers
        A glob, in ``path``'s folder, of the other processes' files (``path`` itself is skipped); None: none.
    """

    def __init__(self, path: Path, peers: str | None = None) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.peers = peers
        self._lock = threading.Lock()
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=30)
        # a rollback journal, not WAL: with WAL, another process closing the file (a second worker, a reader)
        # was seen to delete the WAL that held this process's committed writes
        self._db.execute("PRAGMA journal_mode=DELETE")
        self._db.execute("CREATE TABLE IF NOT EXISTS idle (key TEXT PRIMARY KEY, state BLOB NOT NULL, "
                         "saved_ns INTEGER NOT NULL DEFAULT 0)")
        if "saved_ns" not in {row[1] for row in self._db.execute("PRAGMA table_info(idle)")}:  # a file of 0.x
            self._db.execute("ALTER TABLE idle ADD COLUMN saved_ns INTEGER NOT NULL DEFAULT 0")
        self._peer_dbs: dict[Path, sqlite3.Connection] = {}
        self._peers_listed = float("-inf")

    def put(self, key: str, state: bytes) -> None:
        with self._lock:
            self._db.execute("INSERT OR REPLACE INTO idle (key, state, saved_ns) VALUES (?, ?, ?)",
                             (key, state, time.time_ns()))

    def get(self, key: str) -> bytes | None:
        with self._lock:
            best = self._db.execute("SELECT state, saved_ns FROM idle WHERE key = ?", (key,)).fetchone()
            for path, db in self._peer_files():
                try:
                    row = db.execute("SELECT * FROM idle WHERE key = ?", (key,)).fetchone()
                except sqlite3.Error as exc:  # a peer's file mid-write or broken: its copy cannot be read now
                    log.warning("idle store of another process unreadable", extra={"path": str(path), "error": str(exc)})
                    continue
                if row is not None and (best is None or (row[2] if len(row) > 2 else 0) > best[1]):
                    best = (row[1], row[2] if len(row) > 2 else 0)
        return None if best is None else bytes(best[0])

    def _peer_files(self) -> list[tuple[Path, sqlite3.Connection]]:
        if self.peers is None:
            return []
        if time.monotonic() - self._peers_listed > PEERS_RELIST_S:  # processes that started since
            self._peers_listed = time.monotonic()
            for path in sorted(self.path.parent.glob(self.peers)):
                if path != self.path and path not in self._peer_dbs:
                    self._peer_dbs[path] = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30,
                                                           check_same_thread=False)
        return list(self._peer_dbs.items())

    def keys(self) -> Iterator[str]:
        with self._lock:
            rows = self._db.execute("SELECT key FROM idle").fetchall()
        return iter(r[0] for r in rows)

    def size_bytes(self) -> int:
        with self._lock:
            row = self._db.execute("SELECT COALESCE(SUM(LENGTH(state)), 0) FROM idle").fetchone()
        return int(row[0])

    def close(self) -> None:
        with self._lock:
            self._db.close()
            for db in self._peer_dbs.values():
                db.close()


def restore_or_fresh(spec: FlowSpec, key: str, blob: bytes | None) -> tuple[Processor, dict[tuple[str, int], int]]:
    """The processor of ``key`` and its absorbed offsets from its saved state; a fresh one when there is none
    or it is refused.

    A refused state is logged with its reason and counted (``eddyline_state_refused_total``), and the key starts
    fresh: stopping the worker instead would stop every other key too, and the same state would stop it again
    at each restart. The key loses what it learned and relearns; its replayed inputs repeat their output ids.
    """
    fresh = spec.make_processor(key)
    if blob is None:
        return fresh, {}
    try:
        saved = decode_checkpoint(blob)
        if saved["key"] != key:
            raise StateError(f"the state is key {saved['key']!r}'s, not {key!r}'s")
        return processor_from(saved, fresh), dict(saved["offsets"])
    except StateError as exc:
        _REFUSED.labels(spec.name).inc()
        log.error("saved state of %r refused (%s); the key starts fresh", key, exc,
                  extra={"flow": spec.name, "key": key, "error": str(exc)})
        return fresh, {}
