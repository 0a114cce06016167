"""The agent's local dead-letter file: batches it could not encode, kept with the reason for someone to read.

One JSON line per batch (when, why, the readings), beside the disk buffer. Such a batch never reaches the broker
(the schema refuses it, or a local model's flags do not fit it), so it is kept here instead of vanishing; its
readings are still counted in the heartbeat's ``dropped_readings``. The file is bounded: past ``max_bytes`` it
moves to ``<name>.1`` (the one before that goes), so a device that fails every batch cannot fill its disk.
A line torn by a power cut stays in the file but is skipped by ``read``, and the next letter starts a line of
its own.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

__all__ = ["DeadLetterFile", "dead_letter_path"]

MAX_BYTES = 4 * 2**20


def dead_letter_path(buffer_path: Path) -> Path:
    """Where the agent whose disk buffer is ``buffer_path`` keeps its dead letters.

    Parameters
    ----------
    buffer_path
        The disk buffer's SQLite file (``[edge] buffer_path``).
    """
    return buffer_path.with_name(buffer_path.stem + ".dead-letters.jsonl")


class DeadLetterFile:
    """Appends dead-lettered batches as JSON lines, rotating past ``max_bytes``.

    Parameters
    ----------
    path
        The file (``dead_letter_path``).
    max_bytes
        Size past which the file moves to ``<name>.1``.
    """

    def __init__(self, path: Path, max_bytes: int = MAX_BYTES) -> None:
        self.path = Path(path)
        self.max_bytes = max_bytes

    def write(self, reason: str, batch: dict[str, Any]) -> None:
        """Append one batch with the reason it was dead-lettered (synced: it exists nowhere else).

        Parameters
        ----------
        reason
            Why it could not be sent.
        batch
            The batch as plain data (sequence number, series, local model).
        """
        line = json.dumps({"time_ms": int(time.time() * 1000), "reason": reason, **batch},
                          separators=(",", ":"), allow_nan=True, default=str) + "\n"
        if self.path.exists() and self.path.stat().st_size + len(line) > self.max_bytes:
            os.replace(self.path, self.path.with_name(self.path.name + ".1"))
        with open(self.path, "a+b") as f:
            if f.tell():
                f.seek(-1, os.SEEK_END)
                if f.read(1) != b"\n":
                    line = "\n" + line  # the last write was torn
            f.write(line.encode())
            f.flush()
            os.fsync(f.fileno())

    def read(self) -> list[dict[str, Any]]:
        """Every dead letter in the current file, oldest first; a torn line is skipped."""
        if not self.path.exists():
            return []
        out = []
        for line in self.path.read_text(encoding="utf-8", errors="replace").splitlines():
            try:
                out.append(json.loads(line))
            except ValueError:
                continue
        return out
