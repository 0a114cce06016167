"""The disk buffer between sampling and sending: SQLite in WAL mode, one row per sealed, encoded batch.

Every sealed batch goes to disk before it is sent, and leaves only when the broker has acknowledged it,
so a dead link, a crash or a power cut never loses an acknowledged reading: what was not acknowledged is
still on disk and is sent again with the same sequence number and event id (the platform drops the
duplicate). The sequence counter is bumped in the same transaction as the insert, so a number is never
reused for different readings.

Size bound policy: the buffer holds at most ``max_bytes`` of payload and keeps ``min_free_bytes`` free
on its disk. When a new batch does not fit, ``drop_oldest`` deletes the oldest unsent batches (the
newest data is usually worth more after a long outage), ``drop_newest`` refuses the new batch; a batch larger
than ``max_bytes`` is refused under either, the backlog kept. Either way the drop is logged, counted
(persistently) and visible downstream as a gap in the sequence numbers.
Space is measured as the disk's free space plus the file's free pages; eviction for a short disk vacuums
what it freed back to the disk, and never empties the buffer for a shortfall that emptying it cannot cure.
A disk that is completely full drops the new batch (its counters wait in memory for the next write that
succeeds) rather than stopping the agent; an agent that starts on a full disk waits for room to open the buffer
(an error would stop it for good: the unit does not restart on a configuration error's exit status).

A damaged file (at start, or found while running) is set aside, replacing any set aside before, and a new one
started. A file found damaged at start, or missing, numbers from ``RESTART_JUMP`` above the high-water mark kept
in a small file beside the buffer (``<stem>.seq-mark``, written ``MARK_AHEAD`` numbers ahead, so rarely), or
above the clock in microseconds if that is higher: a device without a real-time clock may read 1970 right after
boot, and must never reuse a number it sent before.

A batch's age is the wall clock minus its stamp. When the wall clock steps (NTP setting that 1970 device to today),
the stamps of the batches stored since the device booted move with it, so the heartbeat never reports a batch 56
years old: the boot's id and the clock offset the stamps were made with are kept in the file, so an agent that
restarts before or after the step moves those of the process before it too, and a step seen while the disk is too
full to rewrite them is applied once it has room.
"""

from __future__ import annotations

import dataclasses
import glob
import logging
import os
import sqlite3
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

log = logging.getLogger(__name__)

MARK_AHEAD = 10_000  # the high-water mark file is rewritten once per this many sequence numbers
RESTART_JUMP = 1 << 20  # a lost buffer's successor numbers this far above the mark: the platform then sees a
# producer that started again (a jump of more than 2**19, README "seq"), not ten thousand lost batches
_CORRUPT, _FULL, _NOTADB = 11, 13, 26  # SQLite's primary result codes
_IOERR_SHMSIZE = 4874  # the extended code when the shared-memory file cannot grow: the disk is full
_FULL_RETRY_S = 10.0  # how often an agent started on a full disk tries again to open the buffer
_MAX_VARS = 10_000  # host parameters per statement, well under SQLite's limit
_STEP_S = 60.0  # the wall clock moving this much apart from the boot clock between two looks is a step, not drift
_BOOT_CLOCK = getattr(time, "CLOCK_BOOTTIME", time.CLOCK_MONOTONIC)  # never stepped, and counts a suspend

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
        self._sync = sync
        self._pending = [0, 0]  # batches, readings dropped while the disk was too full to count them
        self._unforgotten: set[int] = set()  # acknowledged, but the disk was too full to delete them
        self._full_since: float | None = None
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise BufferError(
                f"cannot create {self.path.parent} for the buffer ({exc.strerror}); "
                "create it writable for the agent's user or set buffer_path"
            ) from None
        self._mark_path = seq_mark_path(self.path)
        self._mark = self._read_mark()
        existed = self.path.exists()
        try:
            self._db = self._open_when_room(sync, self._mark + RESTART_JUMP if self._mark else 0, existed)
        except sqlite3.DatabaseError as exc:
            if not existed or not _corrupt(exc):
                raise BufferError(
                    f"cannot open the buffer {self.path}: {exc}; check its permissions and disk"
                ) from None
            start = max(self._mark + RESTART_JUMP, time.time_ns() // 1000)
            self._db = self._replace_corrupt(sync, exc, start, wait=True)
        self._load_clock()

    # -- opening --------------------------------------------------------------------------------------
    def _open(self, sync: str, seq_start: int = 0, check: bool = False) -> sqlite3.Connection:
        """The connection, with the counters loaded; ``check`` reads every page first (quick_check), so a
        damaged file shows here, where it can be set aside, rather than on some later read."""
        db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        try:
            self._prepare(db, sync, seq_start, check)
        except BaseException:
            db.close()
            raise
        return db

    def _open_when_room(self, sync: str, seq_start: int, check: bool) -> sqlite3.Connection:
        """``_open``, trying again while the disk is full: the agent then starts as soon as anything frees room."""
        waiting_since = None
        while True:
            try:
                db = self._open(sync, seq_start, check)
            except sqlite3.DatabaseError as exc:
                if not _full(exc):
                    raise
                if waiting_since is None:
                    waiting_since = time.monotonic()
                    log.error("disk full: cannot open the buffer %s (%s); trying again every %.0f s until %s has room",
                              self.path, exc, _FULL_RETRY_S, self.path.parent)
                time.sleep(_FULL_RETRY_S)
                continue
            if waiting_since is not None:
                log.warning("the disk has room again after %.0f s; buffer opened", time.monotonic() - waiting_since)
            return db

    def _prepare(self, db: sqlite3.Connection, sync: str, seq_start: int, check: bool) -> None:
        db.execute("PRAGMA busy_timeout=5000")
        db.execute("PRAGMA cache_size=-512")  # 512 KiB: the agent reads each row about once
        if check:
            found = db.execute("PRAGMA quick_check(1)").fetchone()[0]
            if found != "ok":
                raise _Damaged(found)
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
            raise BufferError(
                f"the buffer {self.path} belongs to device {owner!r}, not {self.device_id!r}; "
                "set device_id back, or give this device its own buffer_path"
            )
        self._page_size = db.execute("PRAGMA page_size").fetchone()[0]
        self._bytes, self._depth = db.execute("SELECT COALESCE(SUM(size), 0), COUNT(*) FROM batches").fetchone()
        self._next_seq = int(db.execute("SELECT value FROM meta WHERE key='next_seq'").fetchone()[0])
        if self._next_seq > self._mark:
            self._write_mark(self._next_seq + MARK_AHEAD)

    def _replace_corrupt(self, sync: str, exc: Exception, start: int, wait: bool = False) -> sqlite3.Connection:
        """Keep the damaged file for inspection and start anew at ``start``, past anything numbered before. Only the
        latest damaged file is kept: a failing card would otherwise fill its disk with them, one a damage. ``wait``
        (at start): for room on a full disk, like any start."""
        older = list(self.path.parent.glob(glob.escape(self.path.name) + ".corrupt-*"))
        for old in older:
            old.unlink(missing_ok=True)
        aside = self.path.with_name(f"{self.path.name}.corrupt-{int(time.time())}")
        for suffix in ("", "-wal", "-shm"):
            src = Path(str(self.path) + suffix)
            if src.exists():
                src.rename(Path(str(aside) + suffix))
        log.error(
            "buffer %s is damaged (%s); moved to %s (%d files of an earlier damage removed), new sequence numbers "
            "start at %d", self.path, exc, aside, len(older), start
        )
        return self._open_when_room(sync, start, False) if wait else self._open(sync, seq_start=start)

    def _recover(self, exc: sqlite3.DatabaseError) -> None:
        """Damage found while running: the agent goes on with a new file, numbering on from where it was. Any other
        database error is raised again: only damage is the buffer's to handle."""
        if not _corrupt(exc):
            raise exc
        lost = self._depth
        try:
            self._db.close()
        except sqlite3.Error:
            pass
        self._unforgotten.clear()
        self._db = self._replace_corrupt(self._sync, exc, self._next_seq)
        self._load_clock()
        log.error("%d unsent batches were in the damaged buffer; they stay in the file set aside until another damage "
                  "replaces it", lost)

    # -- the high-water mark of sequence numbers -------------------------------------------------------
    def _read_mark(self) -> int:
        try:
            return int(self._mark_path.read_text().strip() or 0)
        except FileNotFoundError:
            return 0
        except (OSError, ValueError) as exc:
            log.warning("cannot read the sequence mark %s (%s); the clock bounds new numbers", self._mark_path, exc)
            return 0

    def _write_mark(self, value: int) -> None:
        """Atomically, and synced: it must outlive the buffer file itself."""
        self._mark = value
        tmp = self._mark_path.with_name(self._mark_path.name + ".tmp")
        try:
            with open(tmp, "w", encoding="ascii") as f:
                f.write(f"{value}\n")
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self._mark_path)
            fd = os.open(self._mark_path.parent, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        except OSError as exc:
            log.warning("cannot write the sequence mark %s (%s); tried again %d numbers on", self._mark_path, exc,
                        MARK_AHEAD)

    # -- writing --------------------------------------------------------------------------------------
    @property
    def next_seq(self) -> int:
        """The number the next appended batch will carry (encode it into the payload, then ``append``)."""
        return self._next_seq

    def append(self, seq: int, payload: bytes, readings: int, event_time: int) -> bool:
        """Store a sealed batch; False when the size policy or a full disk refused it (it is counted as dropped)."""
        if seq != self._next_seq:
            raise ValueError(f"batch carries seq {seq}, the buffer expects {self._next_seq}")
        self._follow_clock()  # before this batch is stamped with the new time
        try:
            return self._append(seq, payload, readings, event_time)
        except sqlite3.DatabaseError as exc:
            self._recover(exc)
        if seq != self._next_seq:  # dropped before the damage showed
            return False
        return self._append(seq, payload, readings, event_time)

    def _append(self, seq: int, payload: bytes, readings: int, event_time: int) -> bool:
        size = len(payload)
        try:
            if self._make_room(size):
                self._insert(seq, payload, readings, event_time)
                return True
        except sqlite3.OperationalError as exc:
            if not _full(exc):
                raise
            if self._full_since is None:
                self._full_since = time.monotonic()
                log.warning("disk full while buffering seq %d (policy %s); new batches are dropped until it has room",
                            seq, self.policy)
            if self.policy == "drop_oldest" and self._free_disk(size):
                try:
                    self._insert(seq, payload, readings, event_time)
                    return True
                except sqlite3.OperationalError as again:
                    if not _full(again):
                        raise
        self._drop_new(seq, readings)
        return False

    def _insert(self, seq: int, payload: bytes, readings: int, event_time: int) -> None:
        if seq >= self._mark:
            self._write_mark(seq + MARK_AHEAD)
        with self._writing() as db:
            db.execute(
                "INSERT INTO batches VALUES (?, ?, ?, ?, ?, ?)",
                (seq, event_time, readings, len(payload), time.time(), payload),
            )
            db.execute("UPDATE meta SET value=? WHERE key='next_seq'", (seq + 1,))
        self._next_seq = seq + 1
        self._bytes += len(payload)
        self._depth += 1
        if self._full_since is not None:
            log.warning("the disk has room again after %.0f s; buffering resumed", time.monotonic() - self._full_since)
            self._full_since = None

    def _load_clock(self) -> None:
        """Which stamps a clock step moves, and the clock offset they were made with: those of this boot (an earlier
        process's too), from the file; a batch of an earlier boot was stamped by a clock this one cannot relate to."""
        boot, gap = _boot_id(), _clock_gap()
        kept = dict(self._db.execute(
            "SELECT key, value FROM meta WHERE key IN ('boot_id', 'stamped_from', 'clock_gap')").fetchall())
        self._step_waits = False
        if boot is not None and kept.get("boot_id") == boot and len(kept) == 3:
            self._stamped_from, self._clock_gap = int(kept["stamped_from"]), float(kept["clock_gap"])
            return  # a step since then is seen, and applied, at the next look
        self._stamped_from, self._clock_gap = self._next_seq, gap
        self._try_write(("INSERT OR REPLACE INTO meta VALUES ('boot_id', ?), ('stamped_from', ?), ('clock_gap', ?)",
                         (boot, self._next_seq, gap)))

    def _follow_clock(self) -> None:
        """Move the stamps made before a step of the wall clock by the step: batches stored while a device without
        a real-time clock read 1970 would otherwise be 56 years old once NTP sets it. Slow drift is the clock's own
        and stays; on a full disk the step waits for room, and meanwhile only the age shown is wrong."""
        gap = _clock_gap()
        step = gap - self._clock_gap
        if abs(step) < _STEP_S:
            self._clock_gap = gap
            return
        moved = self._try_write(("UPDATE batches SET created=created+? WHERE seq >= ?", (step, self._stamped_from)),
                                ("UPDATE meta SET value=? WHERE key='clock_gap'", (gap,)))
        if moved:
            self._clock_gap = gap
        if (moved or not self._step_waits) and self._next_seq > self._stamped_from:
            log.warning("the wall clock stepped by %+.0f s; the stamps of batches stored since seq %d %s", step,
                        self._stamped_from, "moved with it" if moved else "move once the disk has room")
        self._step_waits = not moved

    def _drop_new(self, seq: int, readings: int) -> None:
        self._next_seq = seq + 1
        self._pending[0] += 1
        self._pending[1] += readings
        self._try_write(("UPDATE meta SET value=? WHERE key='next_seq'", (seq + 1,)))
        log.warning(
            "buffer full (%d bytes, policy %s): dropped new batch seq %d with %d readings",
            self._bytes,
            self.policy,
            seq,
            readings,
        )

    def count_dropped(self, readings: int) -> None:
        """Count a batch that never reached the buffer (it failed to encode) in ``dropped_readings``."""
        self._pending[0] += 1
        self._pending[1] += readings
        self._try_write()

    def discard(self, seq: int) -> int:
        """Remove a stored batch that can never be sent (it went to the dead letters), counted as dropped;
        returns its readings (0 when it is not here)."""
        try:
            row = self._db.execute("SELECT readings FROM batches WHERE seq=?", (seq,)).fetchone()
        except sqlite3.DatabaseError as exc:
            self._recover(exc)
            return 0
        if row is None:
            return 0
        self._pending[0] += 1
        self._pending[1] += row[0]
        self._forget([seq])
        return row[0]

    @contextmanager
    def _writing(self) -> Iterator[sqlite3.Connection]:
        """One transaction, which also persists the drops counted while the disk was full."""
        batches, readings = self._pending
        with _tx(self._db) as db:
            yield db
            if batches or readings:
                self._count_drop(batches, readings)
        self._pending[0] -= batches
        self._pending[1] -= readings

    def _try_write(self, *statements: tuple[str, tuple]) -> bool:
        """Best effort, in one transaction: False when the disk is full (the counters wait in memory) or the file
        was damaged."""
        try:
            with self._writing() as db:
                for sql, args in statements:
                    db.execute(sql, args)
        except sqlite3.DatabaseError as exc:
            if _full(exc):
                return False
            self._recover(exc)
            return False
        return True

    def _count_drop(self, batches: int, readings: int) -> None:
        self._db.execute("UPDATE meta SET value=value+? WHERE key='dropped_batches'", (batches,))
        self._db.execute("UPDATE meta SET value=value+? WHERE key='dropped_readings'", (readings,))

    def _disk_free(self) -> int:
        st = os.statvfs(self.path.parent)
        return st.f_bavail * st.f_frsize

    def _room(self) -> int:
        """Free disk plus the file's free pages, which new rows reuse without growing it."""
        return self._disk_free() + self._db.execute("PRAGMA freelist_count").fetchone()[0] * self._page_size

    def _make_room(self, size: int) -> bool:
        over = self._bytes + size - self.max_bytes
        short = self.min_free_bytes + size - self._room() if self.min_free_bytes else 0
        if max(over, short) <= 0:
            return True
        if self.policy == "drop_newest" or size > self.max_bytes:
            return False  # a batch larger than the whole bound would not fit after evicting the backlog either
        give_back = short <= self._bytes
        if not give_back:
            # Other files hold the disk: even an empty buffer would leave it short, so the newest batches
            # only take the place of the oldest (the file stops growing) instead of wiping the backlog.
            reusable = self._db.execute("PRAGMA freelist_count").fetchone()[0] * self._page_size
            short = size - reusable
        need = max(over, short)
        if need <= 0:
            return True
        # A percent of the buffer at a time keeps a long outage from logging once per batch.
        freed = self._evict(max(need, self._bytes // 100))
        if freed and short > 0 and give_back:
            self._give_back()
        return freed >= need and self._bytes + size <= self.max_bytes

    def _free_disk(self, size: int) -> bool:
        """The disk is full: evict the oldest batches and hand their pages back; False when even that cannot be
        written (with no room at all, SQLite cannot record a deletion either)."""
        try:
            if not self._evict(max(size, 1 << 20)):
                return False
        except sqlite3.OperationalError as exc:
            if not _full(exc):
                raise
            return False
        self._give_back()
        return True

    def _give_back(self, now: bool = True) -> None:
        """Free pages go back to the disk; ``now``: with a checkpoint, so the file (and the log) shrink at once."""
        try:
            self._db.executescript("PRAGMA incremental_vacuum;")  # execute() would free one page per call
            if now:
                self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
        except sqlite3.OperationalError as exc:
            if not _full(exc):
                raise
            log.warning("disk full: the evicted batches' space stays in the buffer file for now")

    def _evict(self, need: int) -> int:
        """Delete the oldest batches not in flight until ``need`` payload bytes are freed; returns the bytes freed."""
        freed, victims, readings = 0, [], 0
        for seq, size, n in self._db.execute("SELECT seq, size, readings FROM batches ORDER BY seq"):
            if seq in self.protected or seq in self._unforgotten:
                continue
            victims.append(seq)
            freed += size
            readings += n
            if freed >= need:
                break
        if not victims:
            return 0
        with self._writing() as db:
            db.executemany("DELETE FROM batches WHERE seq=?", ((s,) for s in victims))
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
        return freed

    # -- sending --------------------------------------------------------------------------------------
    def oldest(self, after: int, limit: int) -> list[tuple[int, bytes]]:
        """Up to ``limit`` batches with seq >= ``after``, oldest first, skipping those in flight."""
        return self._sendable("SELECT seq, payload FROM batches WHERE seq >= ? ORDER BY seq", after, limit)

    def newest(self, above: int, limit: int) -> list[tuple[int, bytes]]:
        """Up to ``limit`` of the newest batches with seq > ``above``, skipping those in flight."""
        return self._sendable("SELECT seq, payload FROM batches WHERE seq > ? ORDER BY seq DESC", above, limit)

    def _sendable(self, query: str, bound: int, limit: int) -> list[tuple[int, bytes]]:
        out: list[tuple[int, bytes]] = []
        try:
            cur = self._db.execute(query, (bound,))
            for seq, payload in cur:
                if seq not in self.protected and seq not in self._unforgotten:
                    out.append((seq, payload))
                    if len(out) >= limit:
                        break
            cur.close()
        except sqlite3.DatabaseError as exc:
            self._recover(exc)
            return []
        return out

    def ack(self, seqs: Iterable[int]) -> tuple[int, int]:
        """Forget batches the broker has acknowledged; returns (batches, readings) that were still here."""
        return self._forget(seqs)

    def _forget(self, seqs: Iterable[int]) -> tuple[int, int]:
        seqs = list(self._unforgotten.union(seqs))
        if not seqs:
            return 0, 0
        size = n = readings = 0
        try:
            with self._writing() as db:
                for i in range(0, len(seqs), _MAX_VARS):
                    part = seqs[i : i + _MAX_VARS]
                    marks = ",".join("?" * len(part))
                    s, c, r = db.execute(
                        "SELECT COALESCE(SUM(size), 0), COUNT(*), COALESCE(SUM(readings), 0) FROM batches"
                        f" WHERE seq IN ({marks})",
                        part,
                    ).fetchone()
                    db.execute(f"DELETE FROM batches WHERE seq IN ({marks})", part)
                    size, n, readings = size + s, n + c, readings + r
        except sqlite3.DatabaseError as exc:
            if _full(exc):
                if not self._unforgotten:
                    log.warning("disk full: acknowledged batches stay in the buffer until it has room to delete them")
                self._unforgotten.update(seqs)
                return 0, 0
            self._recover(exc)
            return 0, 0
        self._unforgotten.clear()
        self._bytes -= size
        self._depth -= n
        if self._depth == 0:
            self._give_back(now=False)
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
        self._follow_clock()
        try:
            st = _stats(self._db, self.path)
        except sqlite3.DatabaseError as exc:
            self._recover(exc)
            st = _stats(self._db, self.path)
        return dataclasses.replace(
            st,
            next_seq=self._next_seq,
            dropped_batches=st.dropped_batches + self._pending[0],
            dropped_readings=st.dropped_readings + self._pending[1],
        )

    def integrity(self) -> str:
        return self._db.execute("PRAGMA quick_check").fetchone()[0]

    def close(self) -> None:
        try:
            stored = self._meta("next_seq")  # the file's own count is the one to outlive it
            if stored >= self._mark:
                self._write_mark(stored + MARK_AHEAD)
        except sqlite3.DatabaseError:
            pass
        self._db.close()


def _boot_id() -> str | None:
    """This boot's id (Linux); None where there is none to read."""
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return None


def _clock_gap() -> float:
    """The wall clock minus the boot clock: it changes only when the wall clock is set or slewed."""
    return time.time() - time.clock_gettime(_BOOT_CLOCK)


def seq_mark_path(buffer_path: Path) -> Path:
    """Where the buffer at ``buffer_path`` keeps the high-water mark of its sequence numbers."""
    return buffer_path.with_name(buffer_path.stem + ".seq-mark")


class _Damaged(sqlite3.DatabaseError):
    """``PRAGMA quick_check`` found damage."""


def _code(exc: BaseException) -> int:
    return (getattr(exc, "sqlite_errorcode", None) or 0) & 0xFF


def _full(exc: BaseException) -> bool:
    if _code(exc) == _FULL or getattr(exc, "sqlite_errorcode", None) == _IOERR_SHMSIZE:
        return True
    return "full" in str(exc).lower()


def _corrupt(exc: BaseException) -> bool:
    if isinstance(exc, _Damaged) or _code(exc) in (_CORRUPT, _NOTADB):
        return True
    return "malformed" in str(exc) or "not a database" in str(exc)


class _tx:
    """BEGIN IMMEDIATE ... COMMIT, rolled back on error (the connection runs in autocommit mode).

    SQLite may already have rolled back (it does on a full disk); a second ROLLBACK would raise and hide
    the error that matters."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db

    def __enter__(self) -> sqlite3.Connection:
        self.db.execute("BEGIN IMMEDIATE")
        return self.db

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if exc_type is None:
            try:
                self.db.execute("COMMIT")
                return
            except sqlite3.Error:
                self._rollback()
                raise
        self._rollback()

    def _rollback(self) -> None:
        if self.db.in_transaction:
            try:
                self.db.execute("ROLLBACK")
            except sqlite3.Error:
                pass


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
