"""Per-producer order and duplicates, decided by the producer's sequence number instead of remembered ids.

Edge agents give a share of their send slots to the newest batches while a backlog drains, so one device's
batches can arrive out of order, and at-least-once delivery repeats some. A ``Sequencer`` keeps the highest
sequence number applied (the high-water mark), a 64-bit mask of which of the 64 numbers below it were
applied, and a small bounded reorder buffer of batches that arrived ahead of a gap. Batches come out in
sequence order; a gap that the buffer cannot wait out any longer is skipped and counted; a repeat is dropped
for good, however old. The whole state is a few integers plus the held batches. A producer first seen with a
number above 1 (it joined mid-sequence) is held like a gap until the buffer is full, then starts at its lowest.

Producers that do not number their batches keep working: a negative ``seq``, or a batch that repeats the
high-water mark under another event id, marks the producer unsequenced, and its batches are then applied in
arrival order with repeats recognised by a short list of event-id digests.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from prometheus_client import Counter

from connectors.prometheus import metric

__all__ = ["MASK_BITS", "SequenceCounts", "Sequencer", "count"]

MASK_BITS = 64  # sequence numbers below the high-water mark whose arrival is remembered exactly
_MASK = (1 << MASK_BITS) - 1
FIRST_SEQ = 1  # producers number from 0 (edge agent) or 1: a first batch up to this starts at once
RECENT_UNSEQUENCED = 64  # event-id digests kept for a producer without sequence numbers


def _digest(event_id: str) -> int:
    return zlib.crc32(event_id.encode())


@dataclass
class SequenceCounts:
    """What a sequencer did besides applying batches in order, since it was created."""

    duplicates: int = 0  # repeats dropped
    gaps: int = 0  # sequence numbers skipped because the reorder buffer could not wait for them
    late: int = 0  # batches applied after a later one (they arrived after their gap was skipped and counted)
    stale: int = 0  # batches more than MASK_BITS below the high-water mark: dropped as repeats


class Sequencer:
    """Puts one producer's records in sequence order and drops repeats.

    Parameters
    ----------
    reorder
        Batches held while waiting for a missing sequence number; when one more arrives, the gap is skipped.
    """

    def __init__(self, reorder: int = 8) -> None:
        self.reorder = reorder
        self.hwm = -1
        self.mask = 0  # bit i: sequence number hwm - i was applied
        self.last_id = 0  # digest of the event id applied at the high-water mark
        self.pending: dict[int, dict[str, Any]] = {}
        self.unsequenced = False
        self.recent: list[int] = []
        self.counts = SequenceCounts()

    def offer(self, record: dict[str, Any], apply: Callable[[dict[str, Any]], None]) -> None:
        """Take one record; ``apply`` is called for each record that is due, in sequence order."""
        seq = int(record.get("seq", -1))
        if seq < 0 or self.unsequenced or (seq == self.hwm and _digest(record["event_id"]) != self.last_id):
            self._unsequenced(record, apply)
            return
        if seq == self.hwm + 1 or (self.hwm < 0 and seq <= FIRST_SEQ):
            self._apply(seq, record, apply)
            self._drain(apply)
        elif seq <= self.hwm:
            self._behind(seq, record, apply)
        elif seq in self.pending:
            self.counts.duplicates += 1
        else:
            self.pending[seq] = record
            if len(self.pending) > self.reorder:
                self._skip_gap(apply)

    def flush(self, apply: Callable[[dict[str, Any]], None]) -> None:
        """Apply every held record, skipping the gaps before them (the producer is not going to fill them)."""
        while self.pending:
            self._skip_gap(apply)

    def _apply(self, seq: int, record: dict[str, Any], apply: Callable[[dict[str, Any]], None]) -> None:
        shift = seq - self.hwm if self.hwm >= 0 else MASK_BITS
        self.mask = ((self.mask << shift) | 1) & _MASK if shift < MASK_BITS else 1
        self.hwm = seq
        self.last_id = _digest(record["event_id"])
        apply(record)

    def _drain(self, apply: Callable[[dict[str, Any]], None]) -> None:
        while self.hwm + 1 in self.pending:
            self._apply(self.hwm + 1, self.pending.pop(self.hwm + 1), apply)

    def _skip_gap(self, apply: Callable[[dict[str, Any]], None]) -> None:
        first = min(self.pending)
        if self.hwm >= 0:  # a producer first seen mid-sequence starts at its lowest held number, no gap
            self.counts.gaps += first - self.hwm - 1
        self._apply(first, self.pending.pop(first), apply)
        self._drain(apply)

    def _behind(self, seq: int, record: dict[str, Any], apply: Callable[[dict[str, Any]], None]) -> None:
        back = self.hwm - seq
        if back >= MASK_BITS:
            self.counts.stale += 1
        elif self.mask >> back & 1:
            self.counts.duplicates += 1
        else:  # its gap was skipped already: late, but not lost
            self.mask |= 1 << back
            self.counts.late += 1
            apply(record)

    def _unsequenced(self, record: dict[str, Any], apply: Callable[[dict[str, Any]], None]) -> None:
        if not self.unsequenced:
            self.unsequenced = True
            self.flush(apply)
            if self.hwm >= 0:
                self.recent.append(self.last_id)
        digest = _digest(record["event_id"])
        if digest in self.recent:
            self.counts.duplicates += 1
            return
        self.recent.append(digest)
        del self.recent[:-RECENT_UNSEQUENCED]
        apply(record)

    def snapshot(self) -> dict[str, Any]:
        c = self.counts
        return {"hwm": self.hwm, "mask": self.mask, "last_id": self.last_id, "pending": dict(self.pending),
                "unsequenced": self.unsequenced, "recent": list(self.recent),
                "counts": [c.duplicates, c.gaps, c.late, c.stale]}

    def restore(self, state: dict[str, Any]) -> None:
        self.hwm, self.mask, self.last_id = int(state["hwm"]), int(state["mask"]), int(state["last_id"])
        self.pending = {int(k): v for k, v in state["pending"].items()}
        self.unsequenced = bool(state["unsequenced"])
        self.recent = [int(d) for d in state["recent"]]
        self.counts = SequenceCounts(*(int(n) for n in state["counts"]))


_GAPS = metric(Counter, "eddyline_sequence_gaps", "Sequence numbers skipped: batches never received.", ["flow"])
_DROPPED = metric(Counter, "eddyline_sequence_dropped", "Batches dropped as repeats, by how they were known.",
                  ["flow", "reason"])
_LATE = metric(Counter, "eddyline_sequence_late", "Batches applied after their gap was skipped.", ["flow"])


def count(flow: str, before: SequenceCounts, after: SequenceCounts) -> None:
    """Raise the flow's sequence counters by what changed (labels name the flow, never a producer)."""
    if after.gaps > before.gaps:
        _GAPS.labels(flow).inc(after.gaps - before.gaps)
    if after.late > before.late:
        _LATE.labels(flow).inc(after.late - before.late)
    for reason in ("duplicates", "stale"):
        n = getattr(after, reason) - getattr(before, reason)
        if n:
            _DROPPED.labels(flow, reason.removesuffix("s")).inc(n)
