"""Per-producer order and duplicates, decided by the producer's sequence number instead of remembered ids.

The contract: one producer at a time numbers a device's batches densely, one more per batch, so that a
missing number is a batch that never came. It starts from 0, or, where it cannot remember where it stopped,
from the time, far above what it used before (the edge agent after its buffer was damaged: microseconds
since the epoch; the Python producer at every start: milliseconds << 20).

Edge agents give a share of their send slots to the newest batches while a backlog drains, so one device's
batches can arrive out of order, and at-least-once delivery repeats some. A ``Sequencer`` keeps the highest
sequence number applied (the high-water mark), a 64-bit mask of which of the 64 numbers below it were
applied, and a small bounded reorder buffer of batches that arrived ahead of a gap. Batches come out in
sequence order; a gap that the buffer cannot wait out any longer is skipped and counted, and its numbers are
remembered as a run (up to ``SKIPPED_RUNS`` of them) so that a batch among them that comes later, such as a
drained backlog, is applied late instead of lost; a repeat is dropped for good, however old. A producer
first seen with a number above 1 (it joined mid-sequence) is held like a gap until the buffer is full, then
starts at its lowest; one first seen above ``RESET_JUMP`` (a time-based start) starts at once.

A producer that starts its numbering again is a reset, counted apart from gaps: a step up by more than
``RESET_JUMP`` (a new time-based start, or one wild number, whose skipped numbers stay awaited so that the
old sequence resuming is still applied), or a number already covered whose readings are later than every
reading applied (a repeat carries its old readings: these are new ones under a reused number, as from a
reimaged device).

Producers that do not number their batches keep working: a negative ``seq``, or a batch that repeats the
high-water mark under another event id, marks the producer unsequenced, and its batches are then applied in
arrival order with repeats recognised by a short list of event-id digests.

One key can have several producers, each numbering its own batches: an edge agent and a gateway client for
one device, a replaced device's successor while the old one drains its backlog, an agent's new version beside
batches its old one buffered. Interleaved in one ``Sequencer`` their numbers read as repeats (dropped: lost
readings), resets or gaps, so a key's flow keeps ``Sequencers``: one ``Sequencer`` per ``producer``, for the
``PRODUCERS`` heard from most lately (a sender that takes a new name at every start must not grow the key's
state), with their counts summed. Batches of different producers are applied in arrival order.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from prometheus_client import Counter

from connectors.prometheus import metric

__all__ = ["MASK_BITS", "PRODUCERS", "RESET_JUMP", "SKIPPED_RUNS", "SequenceCounts", "Sequencer", "Sequencers", "count"]

MASK_BITS = 64  # sequence numbers below the high-water mark whose arrival is remembered exactly
_MASK = (1 << MASK_BITS) - 1
SKIPPED_RUNS = 32  # separate runs of skipped numbers still awaited; beyond, the smallest is forgotten
RESET_JUMP = 1 << 19  # a step up larger than this restarts the sequence: a time-based start, not lost batches
FIRST_SEQ = 1  # producers number from 0 (edge agent) or 1: a first batch up to this starts at once
RECENT_UNSEQUENCED = 64  # event-id digests kept for a producer without sequence numbers
PRODUCERS = 4  # producers of one key whose sequences are kept; beyond, the least lately heard is forgotten

Apply = Callable[[dict[str, Any]], None]


def _digest(event_id: str) -> int:
    return zlib.crc32(event_id.encode())


def _readings_time(record: dict[str, Any]) -> int | None:
    """The latest of each series' last reading time: a repeat carries the same readings, so never a later time
    (``event_time`` would not do: the gateway sets it on arrival when a client leaves it out)."""
    last = [s["timestamps"][-1] for s in record.get("series") or () if len(s["timestamps"])]
    return int(max(last)) if last else None


@dataclass
class SequenceCounts:
    """What a sequencer did besides applying batches in order, since it was created."""

    duplicates: int = 0  # repeats dropped
    gaps: int = 0  # sequence numbers skipped because the reorder buffer could not wait for them
    late: int = 0  # batches applied after a later one (they arrived after their gap was skipped and counted)
    stale: int = 0  # batches below the high-water mark neither awaited nor new: dropped as repeats
    resets: int = 0  # times the producer started its numbering again
    forgotten: int = 0  # skipped numbers no longer awaited (more separate runs than SKIPPED_RUNS)

    @property
    def dropped(self) -> int:
        """Batches dropped as repeats, however they were known."""
        return self.duplicates + self.stale


class Sequencer:
    """Puts one producer's records in sequence order and drops repeats.

    Parameters
    ----------
    reorder
        Batches held while waiting for a missing sequence number; when one more arrives, the gap is skipped.
    counts
        Where to count what it does: ``Sequencers`` shares one between the producers of a key.
    """

    def __init__(self, reorder: int = 8, counts: SequenceCounts | None = None) -> None:
        self.reorder = reorder
        self.hwm = -1
        self.mask = 0  # bit i: sequence number hwm - i was applied
        self.last_id = 0  # digest of the event id applied at the high-water mark
        self.pending: dict[int, dict[str, Any]] = {}
        self.skipped: list[list[int]] = []  # [lo, hi] runs of skipped numbers still awaited, ascending, below hwm
        self.newest: int | None = None  # latest reading time applied (``_readings_time``)
        self.unsequenced = False
        self.recent: list[int] = []
        self.counts = SequenceCounts() if counts is None else counts

    def offer(self, record: dict[str, Any], apply: Apply) -> None:
        """Take one record; ``apply`` is called for each record that is due, in sequence order."""
        seq = int(record.get("seq", -1))
        if seq < 0 or self.unsequenced or (seq == self.hwm and _digest(record["event_id"]) != self.last_id):
            self._unsequenced(record, apply)
            return
        if self.hwm < 0 and seq > RESET_JUMP:
            self.flush(apply)  # batches held since the producer was first seen start it; this one jumps from them
        if seq == self.hwm + 1 or (self.hwm < 0 and (seq <= FIRST_SEQ or seq > RESET_JUMP)):
            self._apply(seq, record, apply)
            self._drain(apply)
        elif seq <= self.hwm:
            self._behind(seq, record, apply)
        elif seq - self.hwm > RESET_JUMP:
            self.flush(apply)
            self._await(self.hwm + 1, seq - 1)
            self.counts.resets += 1
            self._apply(seq, record, apply)
        elif seq in self.pending:
            self.counts.duplicates += 1
        else:
            self.pending[seq] = record
            if len(self.pending) > self.reorder:
                self._skip_gap(apply)

    def flush(self, apply: Apply) -> None:
        """Apply every held record, skipping the gaps before them (the producer is not going to fill them)."""
        while self.pending:
            self._skip_gap(apply)

    def _apply(self, seq: int, record: dict[str, Any], apply: Apply) -> None:
        shift = seq - self.hwm if self.hwm >= 0 else MASK_BITS
        self.mask = ((self.mask << shift) | 1) & _MASK if shift < MASK_BITS else 1
        self.hwm = seq
        self.last_id = _digest(record["event_id"])
        self._deliver(record, apply)

    def _deliver(self, record: dict[str, Any], apply: Apply) -> None:
        t = _readings_time(record)
        if t is not None and (self.newest is None or t > self.newest):
            self.newest = t
        apply(record)

    def _drain(self, apply: Apply) -> None:
        while self.hwm + 1 in self.pending:
            self._apply(self.hwm + 1, self.pending.pop(self.hwm + 1), apply)

    def _skip_gap(self, apply: Apply) -> None:
        first = min(self.pending)
        if self.hwm >= 0:  # a producer first seen mid-sequence starts at its lowest held number, no gap
            self.counts.gaps += first - self.hwm - 1
            self._await(self.hwm + 1, first - 1)
        self._apply(first, self.pending.pop(first), apply)
        self._drain(apply)

    def _await(self, lo: int, hi: int) -> None:
        """Remember skipped numbers (always above every run kept) so that a batch among them is applied late."""
        if lo > hi:
            return
        self.skipped.append([lo, hi])
        self._bound()

    def _bound(self) -> None:
        while len(self.skipped) > SKIPPED_RUNS:  # forget the run with the fewest numbers: the least to lose
            i = min(range(len(self.skipped)), key=lambda j: self.skipped[j][1] - self.skipped[j][0])
            lo, hi = self.skipped.pop(i)
            self.counts.forgotten += hi - lo + 1

    def _run_of(self, seq: int) -> int:
        for i, (lo, hi) in enumerate(self.skipped):
            if lo <= seq <= hi:
                return i
        return -1

    def _take(self, i: int, seq: int) -> None:
        lo, hi = self.skipped[i]
        if lo == hi:
            del self.skipped[i]
        elif seq == lo:
            self.skipped[i][0] = lo + 1
        elif seq == hi:
            self.skipped[i][1] = hi - 1
        else:
            self.skipped[i:i + 1] = [[lo, seq - 1], [seq + 1, hi]]
            self._bound()

    def _behind(self, seq: int, record: dict[str, Any], apply: Apply) -> None:
        back = self.hwm - seq
        run = self._run_of(seq)
        awaited = not self.mask >> back & 1 if back < MASK_BITS else run >= 0
        t = _readings_time(record)
        newer = t is not None and self.newest is not None and t > self.newest
        jumped = run >= 0 and self.skipped[run][1] - self.skipped[run][0] + 1 >= RESET_JUMP
        if awaited and not (newer and jumped):  # the old sequence resuming after a jump starts again there
            if run >= 0:  # its gap was skipped already: late, but not lost
                self._take(run, seq)
            if back < MASK_BITS:
                self.mask |= 1 << back
            self.counts.late += 1
            self._deliver(record, apply)
        elif newer:  # readings newer than any applied under a number used before: the producer starts again
            self.flush(apply)
            self.skipped = []
            self.counts.resets += 1
            self.hwm, self.mask, self.last_id = seq, _MASK, _digest(record["event_id"])
            self._deliver(record, apply)
        elif back < MASK_BITS:
            self.counts.duplicates += 1
        else:
            self.counts.stale += 1

    def _unsequenced(self, record: dict[str, Any], apply: Apply) -> None:
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

    def count_since(self, flow: str, before: dict[str, int]) -> None:
        """Raise the flow's sequence counters by what changed since ``before`` (``dict(vars(self.counts))``: the
        fields compared as a dict, since a dataclass copy per message costs five times that)."""
        if vars(self.counts) != before:
            count(flow, SequenceCounts(**before), self.counts)

    def snapshot(self) -> dict[str, Any]:
        c = self.counts
        return {"hwm": self.hwm, "mask": self.mask, "last_id": self.last_id, "pending": dict(self.pending),
                "skipped": [list(r) for r in self.skipped], "newest": self.newest,
                "unsequenced": self.unsequenced, "recent": list(self.recent),
                "counts": [c.duplicates, c.gaps, c.late, c.stale, c.resets, c.forgotten]}

    def restore(self, state: dict[str, Any]) -> None:
        self.hwm, self.mask, self.last_id = int(state["hwm"]), int(state["mask"]), int(state["last_id"])
        self.pending = {int(k): v for k, v in state["pending"].items()}
        self.skipped = [[int(lo), int(hi)] for lo, hi in state.get("skipped", [])]  # older snapshots: no runs
        newest = state.get("newest")  # older snapshots: unknown until the next batch applied
        self.newest = None if newest is None else int(newest)
        self.unsequenced = bool(state["unsequenced"])
        self.recent = [int(d) for d in state["recent"]]
        if "counts" in state:  # absent: kept by ``Sequencers`` for all of a key's producers
            self.counts = SequenceCounts(*(int(n) for n in state["counts"]))  # older snapshots: four counts


class Sequencers:
    """A key's ``Sequencer`` per producer, so that two senders numbering the same device's batches each their own
    way are neither taken for each other's repeats nor for resets (see the module's docstring).

    Parameters
    ----------
    reorder
        Each producer's reorder buffer (``Sequencer``).
    producers
        Producers whose sequences are kept; a new one beyond makes the least lately heard one forgotten, its held
        batches applied first. A forgotten producer that sends again starts a new sequence: its repeats of
        batches from before are no longer recognised.
    """

    def __init__(self, reorder: int = 8, producers: int = PRODUCERS) -> None:
        self.reorder = reorder
        self.producers = producers
        self.counts = SequenceCounts()
        # least lately heard first; None: a sequence restored from before producers were told apart, taken over
        # by the first producer heard
        self.by_producer: dict[str | None, Sequencer] = {}

    def offer(self, record: dict[str, Any], apply: Apply) -> None:
        """Take one record; ``apply`` is called for each record that is due, in its producer's sequence order.

        Parameters
        ----------
        record
            A batch with ``seq``, ``event_id`` and ``producer``.
        apply
            Called with each record that is due.
        """
        producer = record.get("producer", "")
        seqr = self.by_producer.get(producer)
        if seqr is None:
            seqr = self._start(producer, apply)
        elif next(reversed(self.by_producer)) != producer:
            self.by_producer[producer] = self.by_producer.pop(producer)
        seqr.offer(record, apply)

    def _start(self, producer: str, apply: Apply) -> Sequencer:
        restored = self.by_producer.pop(None, None)
        seqr = self.by_producer[producer] = Sequencer(self.reorder, self.counts) if restored is None else restored
        while len(self.by_producer) > self.producers:
            self.by_producer.pop(next(iter(self.by_producer))).flush(apply)
        return seqr

    def flush(self, apply: Apply) -> None:
        """Apply every producer's held records, skipping the gaps before them.

        Parameters
        ----------
        apply
            Called with each held record.
        """
        for seqr in self.by_producer.values():
            seqr.flush(apply)

    @property
    def latest(self) -> Sequencer | None:
        """The sequence of the producer heard from last (None before any)."""
        return next(reversed(self.by_producer.values()), None)

    @property
    def hwm(self) -> int:
        """The high-water mark of the producer heard from last (-1 before any)."""
        return -1 if self.latest is None else self.latest.hwm

    @property
    def pending(self) -> dict[tuple[str | None, int], dict[str, Any]]:
        """Every producer's held records, by producer and sequence number."""
        return {(p, seq): rec for p, seqr in self.by_producer.items() for seq, rec in seqr.pending.items()}

    count_since = Sequencer.count_since  # it reads only ``counts``, the sum of all producers'

    def snapshot(self) -> dict[str, Any]:
        """Plain data: each producer's sequence, least lately heard first, and the counts of all."""
        c = self.counts
        return {"producers": [[p, {k: v for k, v in seqr.snapshot().items() if k != "counts"}]
                              for p, seqr in self.by_producer.items()],
                "counts": [c.duplicates, c.gaps, c.late, c.stale, c.resets, c.forgotten]}

    def restore(self, state: dict[str, Any]) -> None:
        """Restore a ``snapshot()``, or a ``Sequencer``'s from before producers were told apart.

        Parameters
        ----------
        state
            What ``snapshot()`` returned.
        """
        self.counts = SequenceCounts(*(int(n) for n in state["counts"]))
        self.by_producer = {}
        for producer, seq_state in state["producers"] if "producers" in state else [[None, state]]:
            seqr = self.by_producer[producer] = Sequencer(self.reorder, self.counts)
            seqr.restore({k: v for k, v in seq_state.items() if k != "counts"})


_GAPS = metric(Counter, "eddyline_sequence_gaps", "Sequence numbers skipped after the reorder buffer waited for "
               "them (eddyline_sequence_late_total counts those that came afterwards).", ["flow"])
_DROPPED = metric(Counter, "eddyline_sequence_dropped", "Batches dropped as repeats, by how they were known.",
                  ["flow", "reason"])
_LATE = metric(Counter, "eddyline_sequence_late", "Batches applied after their gap was skipped.", ["flow"])
_RESETS = metric(Counter, "eddyline_sequence_resets", "Producers that started their numbering again (a new "
                 "buffer, a restarted process, a wild number): a new sequence, not gaps or repeats.", ["flow"])
_FORGOTTEN = metric(Counter, "eddyline_sequence_forgotten", "Skipped sequence numbers no longer awaited (more "
                    "separate gaps than a producer's state keeps): if they come, they are dropped as stale.",
                    ["flow"])


def count(flow: str, before: SequenceCounts, after: SequenceCounts) -> None:
    """Raise the flow's sequence counters by what changed (labels name the flow, never a producer)."""
    for counter, field in ((_GAPS, "gaps"), (_LATE, "late"), (_RESETS, "resets"), (_FORGOTTEN, "forgotten")):
        n = getattr(after, field) - getattr(before, field)
        if n > 0:
            counter.labels(flow).inc(n)
    for reason in ("duplicates", "stale"):
        n = getattr(after, reason) - getattr(before, reason)
        if n:
            _DROPPED.labels(flow, reason.removesuffix("s")).inc(n)
