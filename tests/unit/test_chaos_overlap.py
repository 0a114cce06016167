"""``benchmarks.chaos.overlapping_batches`` reads the broker's batch objects on disk; it must count a batch stored on
offsets already given out, and read past an object the store is still writing instead of failing the audit."""

from __future__ import annotations

import struct
from pathlib import Path
from types import SimpleNamespace

from benchmarks.chaos import overlapping_batches


def _batch(records: Path, base: int, last_delta: int) -> None:
    header = bytes(23) + struct.pack(">i", last_delta)
    (records / f"{base:020d}.batch._S3rver_object").write_bytes(header + b"records")


def test_counts_batches_on_offsets_already_given_out_and_skips_a_partly_written_object(tmp_path: Path) -> None:
    records = tmp_path / "bucket" / "cluster" / "topics" / "t" / "partitions" / "0" / "records"
    records.mkdir(parents=True)
    _batch(records, 0, 9)   # offsets 0..9
    _batch(records, 10, 4)  # 10..14
    _batch(records, 12, 2)  # 12..14 again: a rewind
    (records / f"{15:020d}.batch._S3rver_object").write_bytes(b"\x00" * 5)  # still being written
    s3 = SimpleNamespace(directory=tmp_path, bucket="bucket")
    assert overlapping_batches(s3) == 1
