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
