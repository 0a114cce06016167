"""What a join of predictions with their feedback keeps while one side waits for the other.

The quality and drift flows both join two topics read at their own pace: a prediction waits for its feedback (and
feedback for its prediction) until the other input's clock is far enough past it. ``Waiting`` keeps the waiting
entries by id with a heap of (time, id), soonest first, so that expiry looks only at what expires; an entry whose id
has left the table (or come back with another time) is skipped when its heap entry comes up. ``Stalls`` is the rule
for an input that stops altogether: after ``stall_after`` events in a row on one input, the other counts as stalled
and is brought up to its clock. Both keep only plain data in a processor's state: the heap is rebuilt on restore.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable
from typing import Any


def _time(entry: dict[str, Any]) -> int:
    return entry["time"]


class Waiting:
    """Entries by id, each waiting until the other input's clock is far enough past its time.

    Parameters
    ----------
    entries
        The entries by id (a restored state's), copied.
    time_of
        An entry's time; by default its ``time`` field.
    """

    def __init__(self, entries: dict[str, Any] | None = None, time_of: Callable[[Any], int] = _time) -> None:
        self.entries: dict[str, Any] = dict(entries or {})  # the state: plain data
        self.time_of = time_of
        self._due = [(time_of(e), k) for k, e in self.entries.items()]
        heapq.heapify(self._due)

    def __contains__(self, key: object) -> bool:
        return key in self.entries

    def __len__(self) -> int:
        return len(self.entries)

    def add(self, key: str, entry: Any) -> None:
        """Let ``entry`` wait under ``key`` until its time expires.

        Parameters
        ----------
        key
            The id the other side joins on.
        entry
            What waits; ``time_of`` gives its time.
        """
        self.entries[key] = entry
        heapq.heappush(self._due, (self.time_of(entry), key))

    def pop(self, key: str) -> Any:
        """The entry waiting under ``key``, no longer waiting; None if none waits.

        Parameters
        ----------
        key
            The id joined on.
        """
        return self.entries.pop(key, None)

    def expire(self, horizon: int, *, inclusive: bool) -> list[Any]:
        """Remove the entries whose time is before ``horizon`` (or at it, if ``inclusive``), soonest first.

        The flows differ here on purpose: quality expires what is at its watermark less the wait, drift keeps it.

        Parameters
        ----------
        horizon
            The time the other input's clock, less the wait, has reached.
        inclusive
            Whether an entry at ``horizon`` itself expires.

        Returns
        -------
        list
            The entries removed.
        """
        due, expired = self._due, []
        while due and (due[0][0] <= horizon if inclusive else due[0][0] < horizon):
            t, key = heapq.heappop(due)
            entry = self.entries.get(key)
            if entry is not None and self.time_of(entry) == t:
                expired.append(self.entries.pop(key))
        return expired


class Stalls:
    """When one of two inputs counts as stalled: after ``stall_after`` events in a row on the other.

    An event count, not an event-time span, because a fast replay of history packs days of event time into one poll,
    while reading skew gives at most a poll's worth of one input with nothing on the other between them.

    Parameters
    ----------
    stall_after
        Events in a row on one input after which the other counts as stalled.
    never
        The stall times before any stall: the flow's clocks' starting value.
    """

    def __init__(self, stall_after: int, never: int) -> None:
        self.stall_after, self.never = stall_after, never
        self.unanswered_run = 0  # predictions since the last feedback event
        self.stalled_at = never  # the prediction clock when the feedback stream last counted as stalled
        self.unpredicted_run = 0  # feedback events since the last prediction
        self.predictions_stalled_at = never  # the feedback clock when the predictions stream last counted as stalled

    def heard(self, side: str, clock: dict[str, int]) -> None:
        """Count an event of ``side`` (``predictions`` or ``feedback``), its clock already moved.

        Parameters
        ----------
        side
            The input the event came on.
        clock
            Each input's clock (the largest event time seen on it).
        """
        if side == "feedback":
            self.unanswered_run = 0
            self.unpredicted_run += 1
            if self.unpredicted_run >= self.stall_after:
                self.predictions_stalled_at = clock["feedback"]
        else:
            self.unpredicted_run = 0
            self.unanswered_run += 1
            if self.unanswered_run >= self.stall_after:
                self.stalled_at = clock["predictions"]

    def reach(self, side: str, clock: dict[str, int]) -> int:
        """How far ``side`` counts as come: its clock, or the other's where it last counted as stalled.

        Parameters
        ----------
        side
            ``predictions`` or ``feedback``.
        clock
            Each input's clock.
        """
        return max(clock[side], self.stalled_at if side == "feedback" else self.predictions_stalled_at)

    def snapshot(self) -> dict[str, int]:
        """The runs and stall times, under the keys the flows' states have always had."""
        return {"unanswered_run": self.unanswered_run, "stalled_at": self.stalled_at,
                "unpredicted_run": self.unpredicted_run, "predictions_stalled_at": self.predictions_stalled_at}

    def restore(self, state: dict[str, Any]) -> None:
        """Take the runs and stall times from a flow's state; one from before stalls were noticed has none.

        Parameters
        ----------
        state
            The processor's whole state, as ``snapshot`` wrote its keys into it.
        """
        self.unanswered_run = int(state.get("unanswered_run", 0))
        self.stalled_at = int(state.get("stalled_at", self.never))
        self.unpredicted_run = int(state.get("unpredicted_run", 0))
        self.predictions_stalled_at = int(state.get("predictions_stalled_at", self.never))
