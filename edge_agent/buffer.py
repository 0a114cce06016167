"""The disk buffer between sampling and sending: SQLite in WAL mode, one row per sealed, encoded batch.

Every sealed batch goes to disk before it is sent, and leaves only when the broker has acknowledged it,
so a dead link, a crash or a power cut never loses an acknowledged reading: what was not acknowledged is
still on disk and is sent again with the same sequence number and event id (the platform drops the
duplicate). The sequence counter is bumped in the same transaction as the insert, so a number is never
reused for different readings.

Size bound policy: the buffer holds at most ``max_bytes`` of payload and keeps ``min_free_bytes`` free
on its disk. When a new batch does not fit, ``drop_oldest`` deletes the oldest unsent batches (the
newest data is usually worth more after a long outage), ``drop_newest`` refuses the new batch. Either way
the drop is logged, counted (persistently) and visible downstream as a gap in the sequence numbers.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

log = logging.getLogger(__name__)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS batches (
    seq INTEGER PRIMARY KEY,
    event_time INTEGER NOT NULL,
    readings INTEGER NOT NULL,
    size INTEGER NOT NULL,
    created REAL NOT NULL,
    payload BLOB NOT NULL
);
"""


class BufferError(RuntimeError):
    """The buffer cannot be used as configured; the message says what to do."""


@dataclass(frozen=True)
class BufferStats:
    path: str
    device_id: str
    depth: int
    readings: int
    payload_bytes: int
    file_bytes: int
    oldest_seq: int | None
    newest_seq: int | None
    oldest_age_s: float | None
    next_seq: int
    dropped_batches: int
    dropped_readings: int


class DiskBuffer:
    """Owned by one thread of one process; the sender marks the batches it has in flight in ``protected``."""

    def __init__(
        self,
        path: Path,
        device_id: str,
        *,
        max_bytes: int = 256 << 20,
        min_free_bytes: int = 64 << 20,
        policy: Literal["drop_oldest", "drop_newest"] = "drop_oldest",
        sync: Literal["full", "normal"] = "full",
    ) -> None:
        self.path = Path(path)
        self.device_id = device_id
        self.max_bytes = max_bytes
        self.min_free_bytes = min_free_bytes
        self.policy = policy
        self.protected: set[int] = set()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise BufferError(
                f"cannot create {self.path.parent} for the buffer ({exc.strerror}); "
                "create it writable for the agent's user or set buffer_path"
            ) from None
        try:
            self._db = self._open(sync)
        except sqlite3.DatabaseError as exc:
            if not self.path.exists() or "malformed" not in str(exc) and "not a database" not in str(exc):
                raise BufferError(
                    f"cannot open the buffer {self.path}: {exc}; check its permissions and disk"
                ) from None
            self._db = self._replace_corrupt(sync, exc)
        self._bytes, self._depth = self._db.execute("SELECT COALESCE(SUM(size), 0), COUNT(*) FROM batches").fetchone()
        self._next_seq = int(self._meta("next_seq"))

    # -- opening --------------------------------------------------------------------------------------
    def _open(self, sync: str, seq_start: int = 0) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        db.execute("PRAGMA busy_timeout=5000")
        db.execute("PRAGMA cache_size=-512")  # 512 KiB: the agent reads each row about once
        if (
            db.execute("PRAGMA auto_vacuum").fetchone()[0] == 0
            and not db.execute("SELECT 1 FROM sqlite_master LIMIT 1").fetchone()
        ):
            db.execute("PRAGMA auto_vacuum=INCREMENTAL")  # only takes effect on an empty database
        mode = db.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        if mode.lower() != "wal":
            raise BufferError(f"{self.path}: SQLite refused WAL mode ({mode}); put the buffer on a local filesystem")
        db.execute(f"PRAGMA synchronous={'FULL' if sync == 'full' else 'NORMAL'}")
        db.executescript(_SCHEMA)
        with _tx(db):
            db.execute("INSERT OR IGNORE INTO meta VALUES ('device_id', ?)", (self.device_id,))
            db.execute("INSERT OR IGNORE INTO meta VALUES ('next_seq', ?)", (seq_start,))
            db.execute("INSERT OR IGNORE INTO meta VALUES ('dropped_batches', 0)")
            db.execute("INSERT OR IGNORE INTO meta VALUES ('dropped_readings', 0)")
        owner = db.execute("SELECT value FROM meta WHERE key='device_id'").fetchone()[0]
        if owner != self.device_id:
            db.close()
            raise BufferError(
                f"the buffer {self.path} belongs to device {owner!r}, not {self.device_id!r}; "
                "set device_id back, or give this device its own buffer_path"
            )
        return db

    def _replace_corrupt(self, sync: str, exc: Exception) -> sqlite3.Connection:
        """Keep the damaged file for inspection and start anew, numbering past anything sent before."""
        aside = self.path.with_name(f"{self.path.name}.corrupt-{int(time.time())}")
        for suffix in ("", "-wal", "-shm"):
            src = Path(str(self.path) + suffix)
            if src.exists():
                src.rename(Path(str(aside) + suffix))
        # Sequence numbers start at the current time in microseconds, above any counter used so far,
        # so that the platform sees a jump rather than old numbers reused for new readings.
        start = time.time_ns() // 1000
        log.error(
            "buffer %s is damaged (%s); moved to %s, new sequence numbers start at %d", self.path, exc, aside, start
        )
        return self._open(sync, seq_start=start)

    # -- writing --------------------------------------------------------------------------------------
    @property
    def next_seq(self) -> int:
        """The number the next appended batch will carry (encode it into the payload, then ``append``)."""
        return self._next_seq

    def append(self, seq: int, payload: bytes, readings: int, event_time: int) -> bool:
        """Store a sealed batch; False when the size policy refused it (it is counted as dropped)."""
        if seq != self._next_seq:
            raise ValueError(f"batch carries seq {seq}, the buffer expects {self._next_seq}")
        size = len(payload)
        if not self._make_room(size):
            self._drop_new(seq, readings)
            return False
        try:
            self._insert(seq, payload, readings, event_time)
        except sqlite3.OperationalError as exc:
            if "full" not in str(exc).lower():
                raise
            log.warning("disk full while buffering seq %d; evicting to make room", seq)
            if self.policy == "drop_oldest" and self._evict(max(size, 1 << 20)):
                try:
                    self._insert(seq, payload, readings, event_time)
                    return True
                except sqlite3.OperationalError:
                    pass
            self._drop_new(seq, readings)
            return False
        return True

    def _insert(self, seq: int, payload: bytes, readings: int, event_time: int) -> None:
        with _tx(self._db):
            self._db.execute(
                "INSERT INTO batches VALUES (?, ?, ?, ?, ?, ?)",
                (seq, event_time, readings, len(payload), time.time(), payload),
            )
            self._db.execute("UPDATE meta SET value=? WHERE key='next_seq'", (seq + 1,))
        self._next_seq = seq + 1
        self._bytes += len(payload)
        self._depth += 1

    def _drop_new(self, seq: int, readings: int) -> None:
        with _tx(self._db):
            self._db.execute("UPDATE meta SET value=? WHERE key='next_seq'", (seq + 1,))
            self._count_drop(1, readings)
        self._next_seq = seq + 1
        log.warning(
            "buffer full (%d bytes, policy %s): dropped new batch seq %d with %d readings",
            self._bytes,
            self.policy,
            seq,
            readings,
        )

    def count_dropped(self, readings: int) -> None:
        """Count a batch that never reached the buffer (it failed to encode) in ``dropped_readings``."""
        with _tx(self._db):
            self._count_drop(1, readings)

    def _count_drop(self, batches: int, readings: int) -> None:
        self._db.execute("UPDATE meta SET value=value+? WHERE key='dropped_batches'", (batches,))
        self._db.execute("UPDATE meta SET value=value+? WHERE key='dropped_readings'", (readings,))

    def _disk_free(self) -> int:
        st = os.statvfs(self.path.parent)
        return st.f_bavail * st.f_frsize

    def _make_room(self, size: int) -> bool:
        over = self._bytes + size - self.max_bytes
        short = self.min_free_bytes + size - self._disk_free() if self.min_free_bytes else 0
        need = max(over, short)
        if need <= 0:
            return True
        if self.policy == "drop_newest":
            return False
        # Evicting a percent of the bound at a time keeps a long outage from logging once per batch.
        return self._evict(max(need, self.max_bytes // 100)) and self._bytes + size <= self.max_bytes

    def _evict(self, need: int) -> bool:
        """Delete the oldest batches not in flight until ``need`` payload bytes are freed."""
        freed, victims, readings = 0, [], 0
        for seq, size, n in self._db.execute("SELECT seq, size, readings FROM batches ORDER BY seq"):
            if seq in self.protected:
                continue
            victims.append(seq)
            freed += size
            readings += n
            if freed >= need:
                break
        if not victims:
            return False
        with _tx(self._db):
            self._db.executemany("DELETE FROM batches WHERE seq=?", ((s,) for s in victims))
            self._count_drop(len(victims), readings)
        self._bytes -= freed
        self._depth -= len(victims)
        log.warning(
            "buffer full (policy drop_oldest): dropped %d oldest batches, seq %d..%d, %d readings",
            len(victims),
            victims[0],
            victims[-1],
            readings,
        )
        return freed >= need

    # -- sending --------------------------------------------------------------------------------------
    def oldest(self, after: int, limit: int) -> list[tuple[int, bytes]]:
        """Up to ``limit`` batches with seq >= ``after``, oldest first, skipping those in flight."""
        return self._sendable("SELECT seq, payload FROM batches WHERE seq >= ? ORDER BY seq", after, limit)

    def newest(self, above: int, limit: int) -> list[tuple[int, bytes]]:
        """Up to ``limit`` of the newest batches with seq > ``above``, skipping those in flight."""
        return self._sendable("SELECT seq, payload FROM batches WHERE seq > ? ORDER BY seq DESC", above, limit)

    def _sendable(self, query: str, bound: int, limit: int) -> list[tuple[int, bytes]]:
        out: list[tuple[int, bytes]] = []
        cur = self._db.execute(query, (bound,))
        for seq, payload in cur:
            if seq not in self.protected:
                out.append((seq, payload))
                if len(out) >= limit:
                    break
        cur.close()
        return out

    def ack(self, seqs: Iterable[int]) -> tuple[int, int]:
        """Forget batches the broker has acknowledged; returns (batches, readings) that were still here."""
        seqs = list(seqs)
        if not seqs:
            return 0, 0
        marks = ",".join("?" * len(seqs))
        with _tx(self._db):
            size, n, readings = self._db.execute(
                "SELECT COALESCE(SUM(size), 0), COUNT(*), COALESCE(SUM(readings), 0) FROM batches"
                f" WHERE seq IN ({marks})",
                seqs,
            ).fetchone()
            self._db.execute(f"DELETE FROM batches WHERE seq IN ({marks})", seqs)
        self._bytes -= size
        self._depth -= n
        if self._depth == 0:
            self._db.execute("PRAGMA incremental_vacuum")
        return n, readings

    # -- reading state --------------------------------------------------------------------------------
    @property
    def depth(self) -> int:
        return self._depth

    @property
    def payload_bytes(self) -> int:
        return self._bytes

    def _meta(self, key: str) -> int:
        return int(self._db.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()[0])

    def stats(self) -> BufferStats:
        return _stats(self._db, self.path)

    def integrity(self) -> str:
        return self._db.execute("PRAGMA quick_check").fetchone()[0]

    def close(self) -> None:
        self._db.close()


class _tx:
    """BEGIN IMMEDIATE ... COMMIT, rolled back on error (the connection runs in autocommit mode)."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db

    def __enter__(self) -> sqlite3.Connection:
        self.db.execute("BEGIN IMMEDIATE")
        return self.db

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        self.db.execute("COMMIT" if exc_type is None else "ROLLBACK")


def read_stats(path: Path) -> BufferStats:
    """Stats of a buffer that a running agent may be writing (``eddyline-edge buffer-stats``)."""
    path = Path(path)
    if not path.is_file():
        raise BufferError(f"no buffer at {path}; the agent creates it on its first run (check buffer_path)")
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return _stats(db, path)
    except sqlite3.DatabaseError as exc:
        raise BufferError(f"{path} is not a readable eddyline buffer: {exc}") from None
    finally:
        db.close()


def _stats(db: sqlite3.Connection, path: Path) -> BufferStats:
    meta = dict(db.execute("SELECT key, value FROM meta").fetchall())
    depth, size, lo, hi, oldest_created, readings = db.execute(
        "SELECT COUNT(*), COALESCE(SUM(size), 0), MIN(seq), MAX(seq), MIN(created), COALESCE(SUM(readings), 0)"
        " FROM batches"
    ).fetchone()
    file_bytes = sum(p.stat().st_size for p in (path, Path(f"{path}-wal"), Path(f"{path}-shm")) if p.exists())
    return BufferStats(
        path=str(path),
        device_id=str(meta["device_id"]),
        depth=depth,
        readings=readings,
        payload_bytes=size,
        file_bytes=file_bytes,
        oldest_seq=lo,
        newest_seq=hi,
        oldest_age_s=None if oldest_created is None else round(time.time() - oldest_created, 3),
        next_seq=int(meta["next_seq"]),
        dropped_batches=int(meta["dropped_batches"]),
        dropped_readings=int(meta["dropped_readings"]),
    )
