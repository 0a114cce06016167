"""Processor state across process boundaries: a versioned plain codec and the store of idle keys.

Checkpoints (Bytewax recovery, Faust changelogs) and evicted keys hold a processor as bytes. Those bytes are
read back by another process, possibly another version of eddyline, possibly written by someone else who can
reach the recovery folder or the changelog topic. So they carry data only: ``params()`` and ``snapshot()``
in a small tagged binary format (None, bool, int, float, str, bytes, list, tuple, dict, numeric numpy arrays
as dtype + shape + raw bytes), behind a magic and a format version. The class is never read from the bytes:
the flow decides which processor to build, and a state written for another class, by another format
version, or malformed is refused with a ``StateError`` that says what it was. A processor that can take
settings other than those its state was saved with (``restore_under``) is built with the flow's current ones.
"""

from __future__ import annotations

import itertools
import logging
import math
import os
import sqlite3
import struct
import threading
import time
import zlib
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from prometheus_client import Counter

from connectors.prometheus import metric
from streams.processor import FlowSpec, Processor

__all__ = [
    "BUCKET_VERSION", "FORMAT_VERSION", "Bucket", "IdleStore", "KeyFilter", "StateError", "bucket_entry", "bucket_of",
    "decode", "decode_bucket", "decode_checkpoint", "decode_processor", "encode", "encode_bucket",
    "encode_bucket_entries", "encode_processor", "is_bucket", "processor_from", "refuse", "restore_or_fresh",
]

log = logging.getLogger(__name__)
_REFUSED = metric(Counter, "eddyline_state_refused", "Saved processor states refused (foreign, old or broken); "
                  "each key concerned started fresh.", ["flow"])
_RECONFIGURED = metric(Counter, "eddyline_state_reconfigured", "Saved processor states restored under the flow's "
                       "current settings, other than those they were saved with, by whether the processor kept 'all' "
                       "of the state or 'part' (what no longer fits starts again: the sensor flow's detectors, under "
                       "another detector or other detector parameters).", ["flow", "kept"])
_RECONFIGURED_LOGGED: set[tuple[str, str, bool]] = set()  # (flow, change, kept all) this process has logged
_RECONFIGURED_LOG_MAX = 64

PEERS_RELIST_S = 5.0  # how often an idle store looks for other processes' files
MAGIC = b"EDST"
FORMAT_VERSION = 1
BUCKET_MAGIC = b"EDBK"  # a bucket of keys' states (``encode_bucket``), each an ``encode_processor`` blob
BUCKET_VERSION = 1
MAX_DEPTH = 64
_NUMERIC_KINDS = "biuf"  # bool, signed, unsigned, float: arrays of anything else (objects) are refused

_U32 = struct.Struct("<I")
_I64 = struct.Struct("<q")
_F64 = struct.Struct("<d")


class StateError(ValueError):
    """Bytes that are not a state this version can restore: foreign, from another format version, or broken."""


_TAGGED: dict[str, bytes] = {}  # short strings as written (``_put_leaf``), up to this many:
_TAGGED_MAX = 4096


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
            if not _put_leaf(k, out):
                _put(k, out, depth + 1)
            if not _put_leaf(item, out):
                _put(item, out, depth + 1)
    elif kind is list or kind is tuple:
        out.append((b"l" if kind is list else b"t") + _U32.pack(len(v)))
        for item in v:
            if not _put_leaf(item, out):
                _put(item, out, depth + 1)
    elif not _put_leaf(v, out):
        _put_other(v, out, depth)


def _put_leaf(v: Any, out: list[bytes]) -> bool:
    """Write ``v`` if it is an exact float, str, int in range, bytes or None (half of a state's values are the same
    few names: their bytes are kept); False for anything else, which ``_put`` writes."""
    kind = type(v)
    if kind is str:
        tagged = _TAGGED.get(v)
        if tagged is None:
            raw = v.encode()
            tagged = b"s" + _U32.pack(len(raw)) + raw
            if len(raw) <= 64 and len(_TAGGED) < _TAGGED_MAX:
                _TAGGED[v] = tagged
        out.append(tagged)
    elif kind is float:
        out.append(b"f" + _F64.pack(v))
    elif kind is int and -(1 << 63) <= v < (1 << 63):
        out.append(b"i" + _I64.pack(v))
    elif kind is bytes:
        out.append(b"b" + _U32.pack(len(v)))
        out.append(v)  # not concatenated: a detector's buffers are kilobytes, copied once by the join
    elif v is None:
        out.append(b"N")
    else:
        return False
    return True


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
        hint = (" (a pickle, as eddyline wrote before state format 1)" if blob[:1] == b"\x80" else
                " (a bucket of keys' states: read it with decode_bucket)" if blob[:4] == BUCKET_MAGIC else "")
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
    """Reads ``encode``'s values from ``blob`` at ``pos``: one method per value, the buffer indexed in place (a
    restore reads about 125 values per device, and a large fleet restores a device for most of its batches)."""

    def __init__(self, blob: bytes, pos: int) -> None:
        self.blob = blob
        self.pos = pos

    def _truncated(self, pos: int, n: int) -> StateError:
        return StateError(f"state truncated at byte {pos} (needs {n} more)")

    def take(self, n: int) -> bytes:
        end = self.pos + n
        if n < 0 or end > len(self.blob):
            raise self._truncated(self.pos, n)
        chunk = self.blob[self.pos:end]
        self.pos = end
        return chunk

    def u32(self) -> int:
        pos = self.pos
        if pos + 4 > len(self.blob):
            raise self._truncated(pos, 4)
        self.pos = pos + 4
        return _U32.unpack_from(self.blob, pos)[0]

    def value(self, depth: int) -> Any:
        if depth > MAX_DEPTH:
            raise StateError(f"state nests deeper than {MAX_DEPTH} levels")
        blob, pos = self.blob, self.pos
        if pos >= len(blob):
            raise self._truncated(pos, 1)
        tag = blob[pos]
        pos += 1
        if tag == 0x66 or tag == 0x69:  # f, i
            if pos + 8 > len(blob):
                raise self._truncated(pos, 8)
            self.pos = pos + 8
            return (_F64 if tag == 0x66 else _I64).unpack_from(blob, pos)[0]
        if tag == 0x73:  # s
            if pos + 4 > len(blob):
                raise self._truncated(pos, 4)
            start = pos + 4
            end = start + _U32.unpack_from(blob, pos)[0]
            if end > len(blob):
                raise self._truncated(start, end - start)
            self.pos = end
            try:
                return blob[start:end].decode()
            except UnicodeDecodeError:
                raise StateError("a string in the state is not UTF-8") from None
        self.pos = pos
        if tag == 0x64:  # d
            out = {}
            for _ in range(self.u32()):
                k = self.value(depth + 1)
                try:
                    out[k] = self.value(depth + 1)
                except TypeError:
                    raise StateError(f"a dict key in the state is unhashable: {type(k).__name__}") from None
            return out
        if tag == 0x62:  # b
            return self.take(self.u32())
        if tag == 0x4E:  # N
            return None
        if tag == 0x54 or tag == 0x46:  # T, F
            return tag == 0x54
        if tag == 0x49:  # I
            try:
                return int(self.take(self.u32()).decode("ascii"))
            except ValueError:
                raise StateError("a big integer in the state is not a number") from None
        if tag == 0x61:  # a
            return self.array()
        if tag == 0x6C or tag == 0x74:  # l, t
            items = [self.value(depth + 1) for _ in range(self.u32())]
            return items if tag == 0x6C else tuple(items)
        raise StateError(f"unknown tag {bytes((tag,))!r} at byte {pos - 1} of the state")

    def array(self) -> np.ndarray:
        try:
            dtype = np.dtype(self.take(self.take(1)[0]).decode("ascii"))
        except (TypeError, ValueError, UnicodeDecodeError):
            raise StateError("an array in the state has an unreadable dtype") from None
        if dtype.kind not in _NUMERIC_KINDS:
            raise StateError(f"an array in the state has non-numeric dtype {dtype}")
        shape = tuple(self.u32() for _ in range(self.take(1)[0]))
        data = self.take(self.u32())
        if len(data) != math.prod(shape) * dtype.itemsize:  # Python ints: a product of u32s wraps in int64
            raise StateError(f"an array in the state has {len(data)} bytes for shape {shape} of {dtype}")
        try:
            return np.frombuffer(data, dtype=dtype).reshape(shape).astype(dtype.newbyteorder("="), copy=True)
        except ValueError as exc:  # more dimensions than numpy takes
            raise StateError(f"an array in the state cannot be built: {exc}") from None


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
    if not isinstance(saved["key"], str) or not isinstance(saved["params"], dict):
        raise StateError(f"the checkpoint's key is {type(saved['key']).__name__} and its params "
                         f"{type(saved['params']).__name__}, not str and dict")
    offsets = saved["offsets"]
    if not isinstance(offsets, dict) or not all(
            type(tp) is tuple and len(tp) == 2 and type(tp[0]) is str and type(tp[1]) is int and type(o) is int
            for tp, o in offsets.items()):
        raise StateError("the checkpoint's offsets are not (topic, partition) -> offset")
    return saved


def processor_from(saved: dict[str, Any], fresh: Processor) -> Processor:
    """The processor of a decoded checkpoint, rebuilt as ``fresh``'s class (which the flow chose for the key).

    A processor with ``restore_under(params, state)`` (returning whether it kept all of the state) is built with
    ``fresh``'s settings, the flow's current configuration, and decides what of a state saved under other ones it
    keeps; any other is built with the settings it was saved with, which its state is known to fit.
    """
    return _rebuilt(saved, fresh)[0]


def _rebuilt(saved: dict[str, Any], fresh: Processor) -> tuple[Processor, bool]:
    """``processor_from``'s processor, and whether it kept all of its state."""
    cls = type(fresh)
    if saved["processor"] != _class_name(cls):
        raise StateError(f"the state belongs to {saved['processor']!r}, not {_class_name(cls)!r}")
    if saved["version"] != cls.state_version:
        raise StateError(f"{_class_name(cls)} state version {saved['version']!r}; this eddyline restores "
                         f"version {cls.state_version}")
    try:
        if hasattr(cls, "restore_under"):
            processor = cls(**fresh.params())
            kept = bool(processor.restore_under(saved["params"], saved["state"]))
        else:
            processor = cls(**saved["params"])
            processor.restore(saved["state"])
            kept = True
    except Exception as exc:  # a state that decodes but does not fit: refused like any other
        raise StateError(f"{_class_name(cls)} refused the state: {type(exc).__name__}: {exc}") from None
    return processor, kept


def decode_processor(blob: bytes, fresh: Processor) -> Processor:
    """``processor_from(decode_checkpoint(blob), fresh)``."""
    return processor_from(decode_checkpoint(blob), fresh)


def bucket_of(key: str, buckets: int) -> int:
    """The bucket of a state key among ``buckets``: a stable hash (CRC-32 of its UTF-8), the same in every
    process and every run, so a restarted or clustered flow finds a key where it was checkpointed.

    Parameters
    ----------
    key
        The state key (a device id).
    buckets
        How many buckets the flow's keys are spread over; at least 1.

    Examples
    --------
    >>> from streams.state import bucket_of
    >>> bucket_of("device-00042", 1024)
    112
    """
    return zlib.crc32(key.encode()) % buckets


@dataclass
class Bucket:
    """A decoded bucket: where it sat in which layout, and its keys' states as ``encode_processor`` bytes.

    Parameters
    ----------
    buckets
        The bucket count of the layout that wrote it.
    index
        Its bucket number in that layout.
    states
        State key -> that key's encoded processor (decoded only when the key speaks).
    refs
        State key -> the version of its state in the process's ``IdleStore`` (``put_versions``), for keys whose
        state was written there: a checkpoint then carries a number, not the state.
    """

    buckets: int
    index: int
    states: dict[str, bytes]
    refs: dict[str, int] = field(default_factory=dict)


def is_bucket(blob: Any) -> bool:
    """Whether saved bytes are a bucket (``encode_bucket``) rather than one key's state: a check of the magic,
    cheap enough to run on every resumed key."""
    return isinstance(blob, (bytes, bytearray, memoryview)) and bytes(blob[:4]) == BUCKET_MAGIC


def encode_bucket(bucket: Bucket) -> bytes:
    """A bucket as versioned bytes: magic, bucket layout version, then plain data (``encode``) holding the layout
    and each key's already-encoded state, so a snapshot re-encodes only the keys that changed."""
    return encode_bucket_entries(bucket.buckets, bucket.index,
                                 [bucket_entry(k, v) for k, v in bucket.states.items()],
                                 [bucket_entry(k, v) for k, v in bucket.refs.items()])


def bucket_entry(key: str, value: bytes | int) -> bytes:
    """One key's entry in a bucket, its state's bytes (``states``) or version (``refs``), as ``encode_bucket``
    writes it. A bucket logic keeps its keys' entries and joins them (``encode_bucket_entries``), so a snapshot
    costs the keys that changed, not every key of the bucket (about 100 each at 100,000 devices and 1,024 buckets).

    Parameters
    ----------
    key
        The state key.
    value
        Its encoded state, or the version of it in the store.
    """
    out: list[bytes] = []
    if not (_put_leaf(key, out) and type(value) in (bytes, int) and _put_leaf(value, out)):
        raise TypeError(f"a bucket entry is a str key and bytes or an int, not {type(key).__name__}, "
                        f"{type(value).__name__}")
    return b"".join(out)


def encode_bucket_entries(buckets: int, index: int, states: Sequence[bytes], refs: Sequence[bytes]) -> bytes:
    """``encode_bucket``'s bytes from the bucket's entries (``bucket_entry``), in the order given.

    Parameters
    ----------
    buckets, index
        As for ``Bucket``.
    states, refs
        The entries of its keys' states and of their versions.
    """
    out = [BUCKET_MAGIC, bytes((BUCKET_VERSION,)), MAGIC, bytes((FORMAT_VERSION,)), b"d", _U32.pack(4)]
    for name, value in (("buckets", buckets), ("index", index)):
        _put_leaf(name, out)
        _put_leaf(value, out)
    for name, entries in (("states", states), ("refs", refs)):
        _put_leaf(name, out)
        out.append(b"d" + _U32.pack(len(entries)))
        out.extend(entries)
    return b"".join(out)


def decode_bucket(blob: bytes) -> Bucket:
    """The bucket ``encode_bucket`` wrote; ``StateError`` (saying what it was) for anything else."""
    blob = bytes(blob)
    if blob[:4] != BUCKET_MAGIC:
        raise StateError(f"not a bucket of states: it starts with {blob[:4]!r}")
    if len(blob) < 5 or blob[4] != BUCKET_VERSION:
        found = blob[4] if len(blob) > 4 else "none"
        raise StateError(f"bucket layout version {found}; this eddyline reads version {BUCKET_VERSION}")
    saved = decode(blob[5:])
    if (not isinstance(saved, dict) or not isinstance(saved.get("buckets"), int)
            or not isinstance(saved.get("index"), int) or not isinstance(saved.get("states"), dict)
            or not all(isinstance(k, str) and isinstance(v, bytes) for k, v in saved["states"].items())
            or not isinstance(saved.get("refs"), dict)
            or not all(isinstance(k, str) and isinstance(v, int) for k, v in saved["refs"].items())):
        raise StateError("the bucket's fields are not buckets, index, states (key -> bytes) and refs (key -> int)")
    return Bucket(saved["buckets"], saved["index"], saved["states"], saved["refs"])


class IdleStore:
    """A process's own store of keys' states, one SQLite file per process: evicted keys' states, which wait there
    until their key speaks again, and the versioned states that buckets of keys refer to (``put_versions``).

    Bytewax's recovery drops a key that its logic discards, so an evicted key's encoded state goes here first
    (written and committed before the discard can reach a checkpoint). A key that Bytewax resumes with a state
    of its own ignores what is here: that state is the newer one whenever both exist.

    Each process of a cluster writes only its own file. A key moves to another process when a cluster restarts
    with another process count, so a key is also looked up, read-only, in the other files that ``peers``
    matches, and of several copies the one saved last wins.

    A versioned state is written once under (key, version) and never overwritten, so a checkpoint that refers
    to it finds it unchanged whatever was written since; old versions go when the writer says so.

    An evicted key's state is kept ``retention_s`` after it was saved, then deleted (checked at most once every
    ``EXPIRY_EVERY_S``, by the write that comes due): a flow keyed by conversations or by a fleet that changes
    devices would otherwise keep every key it ever saw on disk. A state read back within two such periods is
    kept however old, since its key is live again and its next checkpoint may not be written yet.

    Parameters
    ----------
    path
        This process's SQLite file; its folder is created.
    peers
        A glob, in ``path``'s folder, of the other processes' files (``path`` itself is skipped); None: none.
    retention_s
        How long an evicted key's state is kept after it was saved; None: for ever.
    """

    EXPIRY_EVERY_S = 3600.0

    def __init__(self, path: Path, peers: str | None = None, retention_s: float | None = None) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.peers = peers
        self.retention_s = retention_s
        self._expiry_due = time.monotonic() + self.EXPIRY_EVERY_S
        self._read_back: dict[str, float] = {}  # keys whose idle state was read lately (monotonic time)
        self.expired = 0  # states deleted for age since the store was opened
        self._lock = threading.Lock()  # this file's connection
        self._peers_lock = threading.Lock()  # the peers' connections (never written, so never held through a sync)
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=30)
        # a rollback journal, not WAL: with WAL, another process closing the file (a second worker, a reader)
        # was seen to delete the WAL that held this process's committed writes
        self._db.execute("PRAGMA journal_mode=DELETE")
        self._db.execute("PRAGMA synchronous=FULL")  # as Bytewax's recovery store: a commit is on disk when it returns
        # Debian's SQLite zeroes every deleted byte (SECURE_DELETE) and journals the pages it zeroes: a replaced
        # state's delete then cost twice its insert (28 against 13 us per 6.8 KB state, CPU), on every device's
        # batch in a large fleet; FAST zeroes only where that costs no extra I/O
        self._db.execute("PRAGMA secure_delete=FAST")
        self._db.execute("CREATE TABLE IF NOT EXISTS idle (key TEXT PRIMARY KEY, state BLOB NOT NULL, "
                         "saved_ns INTEGER NOT NULL DEFAULT 0)")
        if "saved_ns" not in {row[1] for row in self._db.execute("PRAGMA table_info(idle)")}:  # a file of 0.x
            self._db.execute("ALTER TABLE idle ADD COLUMN saved_ns INTEGER NOT NULL DEFAULT 0")
            self._db.execute("UPDATE idle SET saved_ns = ?", (time.time_ns(),))  # its retention runs from now
        self._db.execute("CREATE TABLE IF NOT EXISTS versions (key TEXT NOT NULL, version INTEGER NOT NULL, "
                         "state BLOB NOT NULL, PRIMARY KEY (key, version))")
        self._peer_dbs: dict[Path, sqlite3.Connection] = {}
        self._peers_listed = float("-inf")
        self._unsynced = False  # rows that ``hold`` wrote without a sync
        self._stored = KeyFilter()  # the keys of this file's ``idle`` table, and a few others
        self._stored.rebuild(r[0] for r in self._db.execute("SELECT key FROM idle"))

    def put(self, key: str, state: bytes) -> None:
        self.put_many({key: state})

    def hold(self, states: dict[str, bytes]) -> None:
        """Keys' states written now, where every process of the cluster finds them at once, but not yet synced to
        disk; ``commit_held`` syncs them all in one go. For states whose only other copy stays where a restart
        finds it until then (a resumed checkpoint of another layout): a cluster's other processes look a moved key
        up as soon as it speaks, which can be before this process has moved its last one.

        Parameters
        ----------
        states
            State key -> its encoded state.
        """
        with self._lock:
            self._db.execute("PRAGMA synchronous=OFF")
            try:
                self._write_idle(states)
            finally:
                self._db.execute("PRAGMA synchronous=FULL")
            self._unsynced = True

    def commit_held(self) -> None:
        """Sync what ``hold`` wrote to disk (one sync for all of it)."""
        with self._lock:
            if self._unsynced:
                fd = os.open(self.path, os.O_RDONLY)
                try:
                    os.fsync(fd)
                finally:
                    os.close(fd)
                self._unsynced = False

    def put_many(self, states: dict[str, bytes]) -> None:
        """Keys' states, committed together (one transaction: one sync for all of them)."""
        with self._lock:
            self._write_idle(states)

    def _write_idle(self, states: dict[str, bytes]) -> None:
        for key in states:  # before the write: a key is never missing from the filter while it is in the file
            if self._stored.add(key):
                self._stored.rebuild(itertools.chain(
                    (r[0] for r in self._db.execute("SELECT key FROM idle")), states))
        now = time.time_ns()
        self._db.execute("BEGIN")
        try:
            self._db.executemany("INSERT OR REPLACE INTO idle (key, state, saved_ns) VALUES (?, ?, ?)",
                                 [(k, v, now) for k, v in states.items()])
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")
        if self.retention_s is not None and time.monotonic() >= self._expiry_due:
            self._expire()

    def expire(self) -> int:
        """Delete the evicted states saved more than ``retention_s`` ago (none without it); how many went."""
        with self._lock:
            return self._expire()

    def _expire(self) -> int:
        now = time.monotonic()
        self._expiry_due = now + self.EXPIRY_EVERY_S
        self._read_back = {k: t for k, t in self._read_back.items() if now - t < 2 * self.EXPIRY_EVERY_S}
        if self.retention_s is None:
            return 0
        cutoff = time.time_ns() - int(self.retention_s * 1e9)
        old = [k for (k,) in self._db.execute("SELECT key FROM idle WHERE saved_ns < ?", (cutoff,))
               if k not in self._read_back]
        if not old:
            return 0
        self._db.execute("BEGIN")
        try:
            self._db.executemany("DELETE FROM idle WHERE key = ?", [(k,) for k in old])
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")
        self._stored.rebuild(r[0] for r in self._db.execute("SELECT key FROM idle"))
        self.expired += len(old)
        log.info("idle states expired", extra={"path": str(self.path), "expired": len(old),
                                               "retention_s": self.retention_s})
        return len(old)

    def put_versions(self, states: list[tuple[str, int, bytes]], forget: list[tuple[str, int]] = (),
                     drop: list[tuple[str, int]] = ()) -> None:
        """Write (key, version, state) rows, delete each (key, below)'s versions under ``below`` and each (key,
        version) of ``drop``, committed together.

        Parameters
        ----------
        states
            New versions; a version is never rewritten.
        forget
            (key, below): that key's versions older than ``below`` are no longer referred to.
        drop
            (key, version): versions no longer referred to.
        """
        with self._lock:
            self._db.execute("BEGIN")
            try:
                self._db.executemany("INSERT OR REPLACE INTO versions (key, version, state) VALUES (?, ?, ?)", states)
                self._db.executemany("DELETE FROM versions WHERE key = ? AND version < ?", forget)
                self._db.executemany("DELETE FROM versions WHERE key = ? AND version = ?", drop)
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def get_version(self, key: str, version: int) -> bytes | None:
        """The state written as (key, version), here or in another process's file; None if none has it."""
        query = "SELECT state FROM versions WHERE key = ? AND version = ?"
        with self._lock:
            row = self._db.execute(query, (key, version)).fetchone()
        if row is not None:
            return bytes(row[0])
        with self._peers_lock:
            for path, db in self._peer_files():
                try:
                    row = db.execute(query, (key, version)).fetchone()
                except sqlite3.Error as exc:  # mid-write, broken, or of an eddyline without versions
                    log.warning("state store of another process unreadable",
                                extra={"path": str(path), "error": str(exc)})
                    continue
                if row is not None:
                    return bytes(row[0])
        return None

    def versions_bytes(self) -> int:
        """Bytes of versioned states held in this process's file."""
        with self._lock:
            return int(self._db.execute("SELECT COALESCE(SUM(LENGTH(state)), 0) FROM versions").fetchone()[0])

    def get(self, key: str) -> bytes | None:
        """The key's state as last put here or, of several copies, in the peers' files; None if none has it.

        Parameters
        ----------
        key
            The state key.
        """
        best = None
        if key in self._stored:  # a new key of a large fleet skips the query (one per device it first sees), and
            with self._lock:  # the lock, which a write of versions holds through its sync
                best = self._db.execute("SELECT state, saved_ns FROM idle WHERE key = ?", (key,)).fetchone()
                if best is not None and self.retention_s is not None:
                    self._read_back[key] = time.monotonic()
        with self._peers_lock:
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
        with self._lock, self._peers_lock:
            self._db.close()
            for db in self._peer_dbs.values():
                db.close()


class KeyFilter:
    """The keys a set holds and a few more: a Bloom filter (about 2 bytes per key, 4 probes), so a lookup of a key
    that was never stored costs a few hashes instead of a query. A key added is always found (no false negatives);
    at most about 1 in 400 others is too, and those pay the query. Python's string hash differs from process to
    process, so a filter lives in one process and is built from its table when it opens. Lookups need no lock: a
    rebuild swaps in a whole new table, and ``add`` sets a key's bits before its caller writes the key.
    """

    PROBES = 4
    BITS_PER_KEY = 16

    def __init__(self) -> None:
        self.count = 0
        self.capacity = 0
        self._table = (bytearray(1), 8)  # (bits, how many), replaced as one

    def rebuild(self, keys: Iterable[str]) -> None:
        """Start over with ``keys`` (all the set holds), sized for twice as many.

        Parameters
        ----------
        keys
            Every key of the set.
        """
        keys = list(keys)
        capacity = max(4096, 2 * len(keys))
        m = capacity * self.BITS_PER_KEY
        table = (bytearray(m // 8 + 1), m)
        for key in keys:
            self._set(table, key)
        self._table, self.capacity, self.count = table, capacity, len(keys)

    def add(self, key: str) -> bool:
        """Add ``key``; True when the filter is full and should be rebuilt (``rebuild``) with every key.

        Parameters
        ----------
        key
            The key stored.
        """
        self._set(self._table, key)
        self.count += 1
        return self.count > self.capacity

    def _set(self, table: tuple[bytearray, int], key: str) -> None:
        bits, m = table
        for bit in self._probes(key, m):
            bits[bit >> 3] |= 1 << (bit & 7)

    def __contains__(self, key: str) -> bool:
        bits, m = self._table
        return all(bits[bit >> 3] >> (bit & 7) & 1 for bit in self._probes(key, m))

    @classmethod
    def _probes(cls, key: str, m: int) -> list[int]:
        """The bits of ``key`` in a table of ``m`` bits (double hashing from one 64-bit hash)."""
        h = hash(key) & 0xFFFFFFFFFFFFFFFF
        step = (h >> 32) | 1
        return [(h + i * step) % m for i in range(cls.PROBES)]


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
        processor, kept = _rebuilt(saved, fresh)
    except StateError as exc:
        refuse(spec.name, f"of {key!r}", exc)
        return fresh, {}
    if hasattr(type(fresh), "restore_under"):
        changes = {k: (saved["params"][k], v) for k, v in fresh.params().items()
                   if k in saved["params"] and saved["params"][k] != v}
        if changes:
            _reconfigured(spec.name, changes, kept)
    return processor, dict(saved["offsets"])


def _reconfigured(flow: str, changes: dict[str, tuple[Any, Any]], kept: bool) -> None:
    """Count a key restored under changed settings; log each distinct change once per process, not once per key (a
    restart after an operator's change restores a whole fleet, 100,000 devices)."""
    _RECONFIGURED.labels(flow, "all" if kept else "part").inc()
    what = "; ".join(f"{k} {old!r} -> {new!r}" for k, (old, new) in sorted(changes.items()))
    seen = (flow, what, kept)
    if seen in _RECONFIGURED_LOGGED or len(_RECONFIGURED_LOGGED) >= _RECONFIGURED_LOG_MAX:
        return
    _RECONFIGURED_LOGGED.add(seen)
    log.warning("saved states restored under changed settings (%s): %s; each key is counted in "
                "eddyline_state_reconfigured_total, this line is logged once", what,
                "their state is kept" if kept else "part of their state starts again (what no longer fits, e.g. the "
                "sensor flow's detectors)", extra={"flow": flow, "changes": what, "kept": kept})


def refuse(flow: str, what: str, exc: StateError) -> None:
    """Log and count (``eddyline_state_refused_total``) a saved state that cannot be restored; its keys start afresh.

    Parameters
    ----------
    flow
        The flow's name.
    what
        Which state, in a few words (``of 'device-7'``).
    exc
        Why it was refused.
    """
    _REFUSED.labels(flow).inc()
    log.error("saved state %s refused (%s); what it held starts fresh", what, exc,
              extra={"flow": flow, "state": what, "error": str(exc)})
