"""The disk buffer: ordering, acknowledgement, the size policy, restarts, a SIGKILL while writing."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from edge_agent.buffer import BufferError, DiskBuffer, read_stats
from streams.sequence import RESET_JUMP


def fill(buf: DiskBuffer, n: int, size: int = 100, readings: int = 10) -> list[int]:
    seqs = []
    for _ in range(n):
        seq = buf.next_seq
        buf.append(seq, bytes([seq % 256]) * size, readings, 1_000 + seq)
        seqs.append(seq)
    return seqs


def test_oldest_first_and_ack_removes(tmp_path: Path) -> None:
    buf = DiskBuffer(tmp_path / "b.sqlite", "dev", min_free_bytes=0)
    fill(buf, 10)
    assert [s for s, _ in buf.oldest(0, 3)] == [0, 1, 2]
    assert [s for s, _ in buf.newest(0, 2)] == [9, 8]
    buf.protected.update({0, 1})
    assert [s for s, _ in buf.oldest(0, 3)] == [2, 3, 4]
    assert buf.ack([0, 1, 5]) == (3, 30)
    assert buf.depth == 7 and buf.payload_bytes == 700
    assert buf.ack([0]) == (0, 0)  # a second ack of the same batch is harmless


def test_sequence_survives_restart_and_empty_buffer(tmp_path: Path) -> None:
    path = tmp_path / "b.sqlite"
    buf = DiskBuffer(path, "dev", min_free_bytes=0)
    fill(buf, 5)
    buf.ack(range(5))
    buf.close()
    again = DiskBuffer(path, "dev", min_free_bytes=0)
    assert again.depth == 0 and again.next_seq == 5  # never reuses a number, even when everything was sent
    with pytest.raises(ValueError):
        again.append(3, b"x", 1, 0)


def test_drop_oldest_policy_keeps_newest_and_counts(tmp_path: Path) -> None:
    buf = DiskBuffer(tmp_path / "b.sqlite", "dev", max_bytes=1_000, min_free_bytes=0, policy="drop_oldest")
    buf.protected.add(0)  # in flight: never evicted
    fill(buf, 30)
    seqs = [s for s, _ in buf.oldest(0, 100)]
    assert buf.payload_bytes <= 1_000
    assert seqs[-1] == 29 and 0 in {s for (s,) in buf._db.execute("SELECT seq FROM batches")}
    st = buf.stats()
    assert st.dropped_batches == 30 - st.depth and st.dropped_readings == 10 * st.dropped_batches
    assert st.next_seq == 30


def test_a_batch_larger_than_the_whole_buffer_is_refused_without_evicting_the_backlog(tmp_path: Path) -> None:
    buf = DiskBuffer(tmp_path / "b.sqlite", "dev", max_bytes=1_000, min_free_bytes=0, policy="drop_oldest")
    fill(buf, 9)
    assert buf.append(buf.next_seq, b"y" * 1_001, 50, 0) is False
    st = buf.stats()
    assert (st.depth, st.dropped_batches, st.dropped_readings, st.next_seq) == (9, 1, 50, 10)


def test_drop_newest_policy_refuses_and_leaves_a_gap(tmp_path: Path) -> None:
    buf = DiskBuffer(tmp_path / "b.sqlite", "dev", max_bytes=1_000, min_free_bytes=0, policy="drop_newest")
    fill(buf, 10)
    seq = buf.next_seq
    assert buf.append(seq, b"y" * 100, 7, 0) is False
    assert buf.next_seq == seq + 1  # the refused batch's number is spent: a gap downstream shows the drop
    st = buf.stats()
    assert (st.depth, st.dropped_batches, st.dropped_readings) == (10, 1, 7)


def test_disk_nearly_full_counts_as_full(tmp_path: Path) -> None:
    buf = DiskBuffer(tmp_path / "b.sqlite", "dev", min_free_bytes=1 << 60, policy="drop_newest")
    assert buf.append(buf.next_seq, b"z", 1, 0) is False


def test_buffer_belongs_to_one_device(tmp_path: Path) -> None:
    DiskBuffer(tmp_path / "b.sqlite", "dev-a", min_free_bytes=0).close()
    with pytest.raises(BufferError, match="belongs to device 'dev-a'"):
        DiskBuffer(tmp_path / "b.sqlite", "dev-b", min_free_bytes=0)


def test_damaged_file_is_moved_aside_and_numbering_jumps(tmp_path: Path) -> None:
    path = tmp_path / "b.sqlite"
    path.write_bytes(b"this is not a database" * 100)
    buf = DiskBuffer(path, "dev", min_free_bytes=0)
    assert buf.next_seq > 10**15
    assert list(tmp_path.glob("b.sqlite.corrupt-*"))


def test_read_stats_from_another_process_view(tmp_path: Path) -> None:
    buf = DiskBuffer(tmp_path / "b.sqlite", "dev", min_free_bytes=0)
    fill(buf, 4)
    st = read_stats(tmp_path / "b.sqlite")
    assert (st.depth, st.readings, st.oldest_seq, st.newest_seq, st.device_id) == (4, 40, 0, 3, "dev")
    with pytest.raises(BufferError, match="no buffer"):
        read_stats(tmp_path / "missing.sqlite")


_WRITER = """
import sys
from edge_agent.buffer import DiskBuffer
buf = DiskBuffer(sys.argv[1], "dev", min_free_bytes=0, sync="full")
print("ready", flush=True)
while True:
    seq = buf.next_seq
    buf.append(seq, seq.to_bytes(8, "big") * 64, 1, seq)
    if seq % 3 == 0:
        buf.ack([seq - 1]) if seq else None
"""


def test_sigkill_while_writing_leaves_a_consistent_buffer(tmp_path: Path) -> None:
    path = tmp_path / "b.sqlite"
    child = subprocess.Popen(
        [sys.executable, "-c", _WRITER, str(path)],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])},
    )
    assert child.stdout.readline().strip() == "ready"
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)
        n = db.execute("SELECT COUNT(*) FROM batches").fetchone()[0]
        db.close()
        if n >= 50:
            break
        time.sleep(0.02)
    child.send_signal(signal.SIGKILL)
    child.wait()

    buf = DiskBuffer(path, "dev", min_free_bytes=0)
    assert buf.integrity() == "ok"
    rows = buf._db.execute("SELECT seq, payload FROM batches ORDER BY seq").fetchall()
    assert len(rows) >= 30  # 50 were written, a third of them acknowledged
    assert all(payload == seq.to_bytes(8, "big") * 64 for seq, payload in rows)  # no torn rows
    assert buf.next_seq == rows[-1][0] + 1  # the counter moved with every committed batch
    last = rows[-1][0]
    acked = {seq - 1 for seq in range(3, last, 3)}
    maybe = {last - 1} if last % 3 == 0 else set()  # killed between the append and its ack
    assert {s for s, _ in rows} - maybe == set(range(buf.next_seq)) - acked - maybe


class _FullDisk:
    """The buffer's connection on a disk with no byte left, as SQLite behaves there: reads work, every commit
    (and vacuum or checkpoint) fails with SQLITE_FULL and SQLite rolls the transaction back itself."""

    _FAILS = ("COMMIT", "PRAGMA INCREMENTAL_VACUUM", "PRAGMA WAL_CHECKPOINT")

    def __init__(self, db: sqlite3.Connection) -> None:
        self.db, self.full = db, True

    def _write(self, sql: str) -> None:
        if self.full and sql.strip().upper().startswith(self._FAILS):
            if self.db.in_transaction:
                self.db.execute("ROLLBACK")
            raise sqlite3.OperationalError("database or disk is full")

    def execute(self, sql: str, *args: object) -> sqlite3.Cursor:
        self._write(sql)
        return self.db.execute(sql, *args)

    def executescript(self, sql: str) -> sqlite3.Cursor:
        self._write(sql)
        return self.db.executescript(sql)

    def __getattr__(self, name: str) -> object:
        return getattr(self.db, name)


@pytest.mark.parametrize("policy", ["drop_oldest", "drop_newest"])
def test_a_full_disk_drops_new_batches_and_counts_them_once_it_can(tmp_path: Path, policy: str) -> None:
    path = tmp_path / "b.sqlite"
    buf = DiskBuffer(path, "dev", min_free_bytes=0, policy=policy)  # type: ignore[arg-type]
    fill(buf, 5)
    buf._db = disk = _FullDisk(buf._db)  # type: ignore[assignment]
    assert [buf.append(buf.next_seq, b"x" * 100, 10, 0) for _ in range(20)] == [False] * 20  # never raises
    buf.count_dropped(3)  # a batch that failed to encode, meanwhile
    assert buf.ack([0, 1]) == (0, 0)  # cannot delete now: kept, not sent again
    assert [s for s, _ in buf.oldest(0, 10)] == [2, 3, 4]
    st = buf.stats()
    assert (st.depth, st.next_seq, st.dropped_batches, st.dropped_readings) == (5, 25, 21, 203)

    disk.full = False  # some room again
    assert buf.append(buf.next_seq, b"y" * 100, 10, 0) is True
    assert buf.ack([]) == (2, 20)  # the acknowledged ones go with the next write
    buf.close()
    st = read_stats(path)
    assert (st.depth, st.next_seq, st.dropped_batches, st.dropped_readings) == (4, 26, 21, 203)


def _disk(tmp_path: Path, buf: DiskBuffer, monkeypatch: pytest.MonkeyPatch, capacity: int) -> dict[str, int]:
    """A disk of ``capacity`` bytes holding the buffer's files and ``other`` bytes of someone else's."""
    other = {"bytes": 0}
    files = lambda: sum(f.stat().st_size for f in tmp_path.glob("b.sqlite*"))  # noqa: E731
    monkeypatch.setattr(buf, "_disk_free", lambda: capacity - files() - other["bytes"])
    return other


def test_eviction_for_a_short_disk_frees_disk_and_stops(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    buf = DiskBuffer(tmp_path / "b.sqlite", "dev", max_bytes=64 << 20, min_free_bytes=1 << 20)
    other = _disk(tmp_path, buf, monkeypatch, capacity=8 << 20)
    fill(buf, 300, size=4096)
    other["bytes"] = buf._disk_free() - (1 << 20) + (100 << 10)  # a log grows: 100 KB short of min_free
    fill(buf, 50, size=4096)
    st = buf.stats()
    assert buf._disk_free() >= 1 << 20  # the evicted pages went back to the disk
    assert 300 - 50 <= st.depth < 350 and st.dropped_batches == 350 - st.depth  # ~100 KB evicted, not all


def test_a_disk_short_beyond_the_buffer_keeps_the_backlog(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    buf = DiskBuffer(tmp_path / "b.sqlite", "dev", max_bytes=64 << 20, min_free_bytes=1 << 20)
    other = _disk(tmp_path, buf, monkeypatch, capacity=64 << 20)
    fill(buf, 300, size=1000)
    other["bytes"] = buf._disk_free()  # someone else filled the disk: emptying the buffer would not cure it
    fill(buf, 50, size=1000)
    seqs = [s for s, _ in buf.oldest(0, 1000)]
    assert len(seqs) >= 290 and seqs[-1] == 349  # the newest took the oldest's place; the backlog stays


def _damage_a_table_page(path: Path) -> None:
    raw = bytearray(path.read_bytes())
    raw[4 * 4096 : 4 * 4096 + 16] = b"\xff" * 16  # page 5: a leaf of the batches table; the header is intact
    path.write_bytes(bytes(raw))


def test_a_damaged_table_page_is_set_aside_at_start(tmp_path: Path) -> None:
    path = tmp_path / "b.sqlite"
    buf = DiskBuffer(path, "dev", min_free_bytes=0)
    fill(buf, 200)
    buf.close()  # closing checkpoints the log into the file
    _damage_a_table_page(path)
    again = DiskBuffer(path, "dev", min_free_bytes=0)
    assert list(tmp_path.glob("b.sqlite.corrupt-*")) and again.depth == 0 and again.next_seq >= 200
    assert again.append(again.next_seq, b"x", 1, 0)


def test_only_the_latest_damaged_file_is_kept(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A failing card damages the buffer again and again: each copy set aside must not stay on its disk for good."""
    import edge_agent.buffer as module

    path = tmp_path / "b.sqlite"
    for hour in range(4):
        monkeypatch.setattr(module.time, "time", lambda hour=hour: 1_700_000_000 + 3600 * hour)
        buf = DiskBuffer(path, "dev", min_free_bytes=0)
        fill(buf, 50)
        buf.close()
        with open(path, "r+b") as f:
            f.write(b"\x00" * 100)
    DiskBuffer(path, "dev", min_free_bytes=0).close()
    assert [p.name for p in tmp_path.glob("b.sqlite.corrupt-*")] == [f"b.sqlite.corrupt-{1_700_000_000 + 3 * 3600}"]


def test_damage_found_while_running_starts_a_new_file(tmp_path: Path) -> None:
    path = tmp_path / "b.sqlite"
    buf = DiskBuffer(path, "dev", min_free_bytes=0)
    fill(buf, 200)
    buf._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    _damage_a_table_page(path)
    buf._db.close()  # a connection whose cache does not hold that page
    buf._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    assert buf.oldest(0, 500) == []  # the read that meets the damage
    assert list(tmp_path.glob("b.sqlite.corrupt-*"))
    assert buf.append(200, b"x" * 100, 10, 0) and [s for s, _ in buf.oldest(0, 10)] == [200]  # numbering goes on
    assert buf.ack(range(150)) == (0, 0) and buf.stats().depth == 1


def test_numbering_after_a_lost_buffer_stays_above_every_number_used(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "b.sqlite"
    buf = DiskBuffer(path, "dev", min_free_bytes=0)
    buf._db.execute("UPDATE meta SET value=31500000 WHERE key='next_seq'")  # a year at a batch a second
    buf.close()
    with open(path, "r+b") as f:  # a power cut scribbles over the header
        f.write(b"\x00" * 100)
    import edge_agent.buffer as module

    monkeypatch.setattr(module.time, "time_ns", lambda: 25 * 10**9)  # a Pi 25 s after boot, before NTP
    replaced = DiskBuffer(path, "dev", min_free_bytes=0).next_seq
    assert replaced >= 31_500_000 + module.RESTART_JUMP  # far enough above for the platform to see a new sequence
    for f in tmp_path.glob("b.sqlite*"):  # someone deletes the buffer to start afresh
        f.unlink()
    assert DiskBuffer(path, "dev", min_free_bytes=0).next_seq >= replaced + module.RESTART_JUMP
    assert module.RESTART_JUMP > RESET_JUMP


def test_an_agent_started_on_a_full_disk_waits_for_room_instead_of_stopping(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A buffer error at start stops the agent for good: the unit does not restart on its exit status (2)."""
    import edge_agent.buffer as module

    path = tmp_path / "b.sqlite"
    buf = DiskBuffer(path, "dev", min_free_bytes=0)
    fill(buf, 5)
    buf.close()
    shm_full = sqlite3.OperationalError("disk I/O error")  # what SQLite raises when its -shm file cannot grow
    shm_full.sqlite_errorcode = 4874  # type: ignore[attr-defined]  # SQLITE_IOERR_SHMSIZE
    failures = [sqlite3.OperationalError("database or disk is full"), shm_full]
    prepare = DiskBuffer._prepare

    def on_a_full_disk(self: DiskBuffer, *args: object) -> None:
        if failures:
            raise failures.pop(0)
        prepare(self, *args)  # type: ignore[arg-type]

    waits: list[float] = []
    monkeypatch.setattr(DiskBuffer, "_prepare", on_a_full_disk)
    monkeypatch.setattr(module.time, "sleep", waits.append)
    again = DiskBuffer(path, "dev", min_free_bytes=0)
    assert len(waits) == 2 and again.depth == 5 and again.next_seq == 5  # the backlog is still there to send
    assert again.append(5, b"x", 1, 0) and not list(tmp_path.glob("b.sqlite.corrupt-*"))


def test_batches_stored_before_ntp_steps_the_clock_keep_their_true_age(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A Pi without a real-time clock boots in 1970; its batches must not read 56 years old once NTP sets it."""
    import edge_agent.buffer as module

    path, real, offset, boot = tmp_path / "b.sqlite", time.time, [0.0], ["first"]
    monkeypatch.setattr(module.time, "time", lambda: real() + offset[0])
    monkeypatch.setattr(module, "_boot_id", lambda: boot[0])
    earlier = DiskBuffer(path, "dev", min_free_bytes=0)  # a run from before the reboot, with the right time
    fill(earlier, 1)
    earlier.close()
    offset[0], boot[0] = 60 - real(), "second"  # rebooted: a minute after the epoch, no NTP yet
    buf = DiskBuffer(path, "dev", min_free_bytes=0)
    fill(buf, 2)
    offset[0] = 0.0  # NTP steps the clock to today
    fill(buf, 1)
    assert 0 <= buf.stats().oldest_age_s < 3600  # the batch of the earlier run, seconds old, not moved
    buf.ack([0])
    assert 0 <= buf.stats().oldest_age_s < 3600  # stored at "1970", moved with the step
    assert 0 <= read_stats(path).oldest_age_s < 3600  # `buffer-stats` reads the same


@pytest.mark.parametrize("restart", ["before the step", "after the step"])
def test_batches_an_earlier_process_of_this_boot_stored_move_with_the_step_too(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, restart: str
) -> None:
    """The agent restarted (an upgrade, a crash) between its batches at "1970" and NTP's step: they are 56 years
    old to the heartbeat unless the step moves them as well."""
    import edge_agent.buffer as module

    path, real, offset = tmp_path / "b.sqlite", time.time, [60 - time.time()]  # booted without a real-time clock
    monkeypatch.setattr(module.time, "time", lambda: real() + offset[0])
    monkeypatch.setattr(module, "_boot_id", lambda: "this boot", raising=False)
    earlier = DiskBuffer(path, "dev", min_free_bytes=0)
    fill(earlier, 2)
    earlier.close()
    if restart == "after the step":
        offset[0] = 0.0
    buf = DiskBuffer(path, "dev", min_free_bytes=0)
    offset[0] = 0.0  # NTP steps the clock to today
    fill(buf, 1)
    assert 0 <= buf.stats().oldest_age_s < 3600
    buf.close()
    assert 0 <= read_stats(path).oldest_age_s < 3600


def test_a_clock_step_seen_while_the_disk_is_full_moves_the_stamps_once_it_has_room(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import edge_agent.buffer as module

    real, offset = time.time, [60 - time.time()]
    monkeypatch.setattr(module.time, "time", lambda: real() + offset[0])
    buf = DiskBuffer(tmp_path / "b.sqlite", "dev", min_free_bytes=0)
    fill(buf, 2)
    buf._db = disk = _FullDisk(buf._db)  # type: ignore[assignment]
    offset[0] = 0.0  # NTP steps the clock; the stamps cannot be rewritten now
    assert buf.stats().oldest_age_s > 3600
    disk.full = False
    fill(buf, 1)
    assert 0 <= buf.stats().oldest_age_s < 3600


def test_a_damaged_buffer_found_at_start_on_a_full_disk_waits_for_room(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Setting the damaged file aside is no cure for a full disk: the new file waits for room like any start."""
    import edge_agent.buffer as module

    path = tmp_path / "b.sqlite"
    path.write_bytes(b"not a database " * 100)
    prepare, opened = DiskBuffer._prepare, []

    def on_a_full_disk(self: DiskBuffer, *args: object) -> None:
        opened.append(self.path.exists())
        if len(opened) in (2, 3):  # the damaged file is set aside; then the disk is full twice
            raise sqlite3.OperationalError("database or disk is full")
        prepare(self, *args)  # type: ignore[arg-type]

    waits: list[float] = []
    monkeypatch.setattr(DiskBuffer, "_prepare", on_a_full_disk)
    monkeypatch.setattr(module.time, "sleep", waits.append)
    buf = DiskBuffer(path, "dev", min_free_bytes=0)
    assert len(waits) == 2 and list(tmp_path.glob("b.sqlite.corrupt-*"))
    assert buf.append(buf.next_seq, b"x", 1, 0)
