"""Poisoning detection for online learners: which sources of labelled events should the model stop learning from.

An online learner learns from whatever arrives, so a bot or a compromised producer can steer it with a flood of
events whose labels contradict what everyone else says. ``PoisonDetector`` watches every labelled event per
source (a producer, a user) and compares the source with its own history, or with the population of its kind
while it has none:

- ``flood``: events in the current event-time window far above the source's usual rate (a new source: above a
  fixed burst size);
- ``label_flip``: the source's labels go against the item's consensus (the like rate of the item among
  sources in good standing) much more than its own history (or, when new, its kind) does: a z-test on a
  short exponentially weighted mean of the contrariness, ``(consensus - label) * sign(consensus - 1/2)``
  (about zero for honest labels, about +0.5 for labels flipped against the crowd; zero where an item has no
  consensus yet). A source with a long history is held to the lowest its long-run contrariness has been
  above its kind's since: one that turns slowly would otherwise carry its own reference along and never stand
  out, while tastes and the consensus move every source's contrariness (a lone producer held to its own lowest
  was quarantined on honest traffic);
- ``one_item``: one item takes most of the source's events in a window (a bot pushing an item).

State is small and plain: twelve numbers and three item counters per source, two numbers per item (about
750 bytes per active user in Python, measured), least recently seen sources and items evicted past their caps,
so memory follows active sources. No ids leave as metric labels:
verdicts are data. Numbers in, verdicts out; no Kafka here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

KINDS = ("producer", "user")

# per-source state layout, one list of numbers each (positions below)
_FIRST, _LAST, _N, _WIN, _WCOUNT, _RATE, _WINDOWS, _DLONG, _DSHORT, _NSHORT, _GRACE, _DREF = range(12)
_STATE_LEN = 12
_LONG_EVENTS = 5000  # memory of a source's long-run contrariness, in events


def source_id(kind: str, name: str) -> str:
    """The quarantine list's name of a source: ``producer:NAME`` or ``user:ID``.

    Parameters
    ----------
    kind
        ``producer`` or ``user``.
    name
        The producer's name or the user's id.

    Examples
    --------
    >>> source_id("user", "42")
    'user:42'
    """
    if kind not in KINDS:
        raise ValueError(f"unknown source kind {kind!r}; choose one of: {', '.join(KINDS)}")
    return f"{kind}:{name}"


def parse_source(source: str) -> tuple[str, str]:
    """``producer:NAME`` or ``user:ID`` split into kind and name; anything else raises ``ValueError`` saying
    how to write it.

    Parameters
    ----------
    source
        A source as the quarantine list names it.

    Examples
    --------
    >>> parse_source("producer:replay.bot")
    ('producer', 'replay.bot')
    """
    kind, sep, name = source.partition(":")
    if not sep or kind not in KINDS or not name:
        raise ValueError(f"source {source!r} is not KIND:NAME with KIND one of {', '.join(KINDS)} "
                         "(e.g. producer:web-3 or user:42)")
    return kind, name


@dataclass(frozen=True, slots=True)
class Verdict:
    """A source the detector found suspicious, and why.

    Parameters
    ----------
    source
        ``producer:NAME`` or ``user:ID``.
    rule
        ``flood``, ``label_flip`` or ``one_item``.
    statistic, threshold
        The value that fired and the bound it crossed (events per window, z-score or share).
    events
        Events of the source seen so far (since its last release).
    first_ms, time_ms
        Event time the source was first seen, and of the event that decided.
    reason
        One sentence for the alert and the quarantine list.
    """

    source: str
    rule: str
    statistic: float
    threshold: float
    events: int
    first_ms: int
    time_ms: int
    reason: str


@dataclass
class PoisonLimits:
    """When a source counts as suspicious. The defaults were set on the MovieLens replay's honest traffic
    (``eddyline bench poisoning``), where real users rate hundreds of movies in an hour.

    Parameters
    ----------
    window_ms
        Event-time window for rates and item shares.
    flood_factor
        A window above this many times the source's usual rate is a flood...
    min_flood
        ...when it also holds at least this many events.
    new_burst
        Events in one window that make a source with under ``history_windows`` windows a flood.
    history_windows
        Closed windows before a source's own rate is its reference.
    z
        z-score above which the contrariness has moved.
    min_shift, producer_min_shift
        Smallest rise of a user's and of a producer's contrariness that counts, whatever the z-score. A
        user's is high: real users have contrary tastes (on the replay's first 30 %, honest users rose up to
        0.41, honest producers, which mix many users, up to 0.07).
    short_events, producer_short_events
        Memory of the short weighted means of a user and of a producer, in events (their effective sample size
        is capped at this). A producer's is longer: one user's session of contrary tastes must not tip it.
    min_events
        Events of a source before its labels are judged.
    history_events
        Events before a source's own long-run contrariness is its reference (before: its kind's).
    one_item_share, one_item_min
        Share of a window's events on one item that fires ``one_item``, once the window holds ``one_item_min``.
    release_grace_ms
        Event time after a release during which the source is watched but not quarantined again.
    max_sources, max_items
        Sources and items kept; the least recently seen go first.
    """

    window_ms: int = 3_600_000
    flood_factor: float = 20.0
    min_flood: int = 1000
    new_burst: int = 2000
    history_windows: int = 3
    z: float = 6.0
    min_shift: float = 0.45
    producer_min_shift: float = 0.15
    short_events: int = 200
    producer_short_events: int = 1000
    min_events: int = 50
    history_events: int = 400
    one_item_share: float = 0.5
    one_item_min: int = 50
    release_grace_ms: int = 86_400_000
    max_sources: int = 200_000
    max_items: int = 200_000

    def as_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


@dataclass
class _Window:
    """The current window's top items (Misra-Gries, 3 counters): bounded, finds any item over a quarter."""

    counts: dict[str, int] = field(default_factory=dict)

    def add(self, item: str) -> None:
        if item in self.counts or len(self.counts) < 3:
            self.counts[item] = self.counts.get(item, 0) + 1
            return
        for k in list(self.counts):
            self.counts[k] -= 1
            if self.counts[k] <= 0:
                del self.counts[k]

    def top(self) -> tuple[str, int]:
        return max(self.counts.items(), key=lambda kv: kv[1], default=("", 0))


class PoisonDetector:
    """Per-source rates and label behaviour against their own history; decides which sources to quarantine.

    Feed every labelled event with ``observe`` (in event-time order per source); it returns the verdicts of
    sources it quarantines at that event. Quarantined sources' events no longer move the item consensus.
    ``release`` lets a source back in (an operator's decision), with fresh history and a grace period.

    Parameters
    ----------
    limits
        Thresholds and caps (``PoisonLimits``).

    Examples
    --------
    A producer that agrees with the crowd for a while, then flips every label:

    >>> from models.security import PoisonDetector
    >>> det = PoisonDetector()
    >>> t, verdicts = 0, []
    >>> for i in range(3000):
    ...     item, liked = f"m{i % 40}", float(i % 40 < 20)
    ...     t += 60_000
    ...     flip = i >= 2000
    ...     verdicts += det.observe(t, item, 1.0 - liked if flip else liked, producer="web", user=f"u{i % 300}")
    >>> [(v.source, v.rule) for v in verdicts]
    [('producer:web', 'label_flip')]
    >>> det.is_quarantined(producer="web", user="u1")
    True
    """

    def __init__(self, limits: PoisonLimits | None = None) -> None:
        self.limits = limits or PoisonLimits()
        self.sources: dict[str, list[float]] = {}
        self.windows: dict[str, _Window] = {}
        self.items: dict[str, list[float]] = {}  # item -> [events, likes] from sources in good standing
        self.quarantined: dict[str, dict[str, Any]] = {}  # source -> {rule, reason, time_ms}
        self.population = {k: [0.0, 0.0, 0.0] for k in KINDS}  # kind -> [weight, mean d, mean d^2]

    def params(self) -> dict[str, Any]:
        return {"limits": self.limits.as_dict()}

    def is_quarantined(self, producer: str | None = None, user: str | None = None) -> bool:
        """Whether an event of this producer and user is kept from learning.

        Parameters
        ----------
        producer, user
            The event's producer and user (either may be None).
        """
        return ((producer is not None and f"producer:{producer}" in self.quarantined)
                or (user is not None and f"user:{user}" in self.quarantined))

    def consensus(self, item: str) -> float:
        """The item's like rate among sources in good standing, smoothed towards one half.

        Parameters
        ----------
        item
            The item.
        """
        n, pos = self.items.get(item, (0.0, 0.0))
        return (pos + 2.5) / (n + 5.0)

    def observe(self, time_ms: int, item: str, label: float | None, producer: str | None = None,
                user: str | None = None) -> list[Verdict]:
        """One labelled event (an impression with its outcome); returns the sources quarantined because of it.

        Parameters
        ----------
        time_ms
            The event's time.
        item
            What was shown.
        label
            1 for liked or clicked, 0 for not; None when the event carries no outcome (it counts for rates only).
        producer, user
            Who sent it and about whom; a missing one is not watched.
        """
        p = self.consensus(item)
        d = None if label is None else (p - label) * (1.0 if p >= 0.5 else -1.0) if abs(p - 0.5) >= 0.05 else 0.0
        out: list[Verdict] = []
        bad = False
        for kind, name in (("producer", producer), ("user", user)):
            if name is None:
                continue
            src = f"{kind}:{name}"
            if src in self.quarantined:
                bad = True
                continue
            verdict = self._update(kind, src, time_ms, item, d)
            if verdict is not None:
                self.quarantined[src] = {"rule": verdict.rule, "reason": verdict.reason, "time_ms": verdict.time_ms}
                out.append(verdict)
                bad = True
        if not bad and label is not None:
            stats = self.items.pop(item, None) or [0.0, 0.0]
            stats[0] += 1
            stats[1] += label
            self.items[item] = stats
            if len(self.items) > self.limits.max_items:
                del self.items[next(iter(self.items))]
        return out

    def quarantine(self, source: str, rule: str, reason: str, time_ms: int) -> None:
        """Record a quarantine decided elsewhere (read back from the quarantine list after a restart).

        Parameters
        ----------
        source, rule, reason, time_ms
            As in a ``Verdict``.
        """
        parse_source(source)
        self.quarantined[source] = {"rule": rule, "reason": reason, "time_ms": int(time_ms)}

    def release(self, source: str, time_ms: int) -> bool:
        """Let a source back in: its history starts again, and it cannot be quarantined for
        ``release_grace_ms`` of event time. A source that is not quarantined is left as it is (its history
        kept, no grace: releasing must not be a way to wipe a record) and False is returned.

        Parameters
        ----------
        source
            ``producer:NAME`` or ``user:ID``.
        time_ms
            When it was released (event time).
        """
        parse_source(source)
        if self.quarantined.pop(source, None) is None:
            return False
        self.windows.pop(source, None)
        st = self._fresh(time_ms)
        st[_GRACE] = time_ms + self.limits.release_grace_ms
        self.sources.pop(source, None)
        self.sources[source] = st
        return True

    def _fresh(self, t: int) -> list[float]:
        st = [0.0] * _STATE_LEN
        st[_FIRST] = st[_LAST] = st[_WIN] = float(t)
        return st

    def _update(self, kind: str, src: str, t: int, item: str, d: float | None) -> Verdict | None:
        lim = self.limits
        st = self.sources.pop(src, None) or self._fresh(t)
        self.sources[src] = st  # most recently seen last: eviction takes the front
        if len(self.sources) > lim.max_sources:
            old = next(iter(self.sources))
            del self.sources[old]
            self.windows.pop(old, None)
        win = self.windows.setdefault(src, _Window())
        if t >= st[_WIN] + lim.window_ms:  # close the window (and the empty ones after it) into the rate history
            gap = min(int((t - st[_WIN]) // lim.window_ms), 1000)
            st[_RATE] = self._ew(st[_RATE], st[_WCOUNT], st[_WINDOWS])
            st[_WINDOWS] += 1
            for _ in range(min(gap - 1, 3)):
                st[_RATE] = self._ew(st[_RATE], 0.0, st[_WINDOWS])
                st[_WINDOWS] += 1
            st[_WIN] += gap * lim.window_ms
            st[_WCOUNT] = 0.0
            win.counts.clear()
        st[_WCOUNT] += 1
        win.add(item)
        st[_LAST] = max(st[_LAST], float(t))
        pop = self.population[kind]
        ref_mean, ref_sd = self._reference(st, pop)
        if d is None:  # no outcome: rates only
            return None if t < st[_GRACE] else self._judge(kind, src, st, win, t, ref_mean, ref_sd)
        st[_N] += 1
        # long-run and short-run weighted means of the contrariness
        a_long = 1.0 / min(max(st[_N], 1.0), _LONG_EVENTS)
        short = lim.producer_short_events if kind == "producer" else lim.short_events
        a_short = 1.0 / min(st[_N], short)
        st[_DLONG] += a_long * (d - st[_DLONG])
        st[_DSHORT] += a_short * (d - st[_DSHORT])
        st[_NSHORT] = min(st[_N], short)
        if st[_N] >= _LONG_EVENTS:  # its lowest standing against its kind, which drifts as tastes and consensus do
            excess = st[_DLONG] - pop[1]
            st[_DREF] = excess if st[_N] == _LONG_EVENTS else min(st[_DREF], excess)
        pop[0] += 1
        a_pop = 1.0 / min(pop[0], 10_000)
        pop[1] += a_pop * (d - pop[1])
        pop[2] += a_pop * (d * d - pop[2])
        if t < st[_GRACE]:
            return None
        return self._judge(kind, src, st, win, t, ref_mean, ref_sd)

    @staticmethod
    def _ew(mean: float, x: float, n: float) -> float:
        return mean + (x - mean) / min(n + 1, 20)

    def _reference(self, st: list[float], pop: list[float]) -> tuple[float, float]:
        """The contrariness a source is held to: its kind's while it is new, then its own long-run mean, then,
        once that spans ``_LONG_EVENTS``, its kind's now plus the least the source has stood above it since (a slow
        turn must not raise the bar, a drift shared by the whole kind must)."""
        sd = math.sqrt(max(pop[2] - pop[1] * pop[1], 0.04)) if pop[0] > 100 else 0.5
        if st[_N] >= _LONG_EVENTS:
            return pop[1] + st[_DREF], sd
        if st[_N] >= self.limits.history_events:
            return st[_DLONG], sd
        return (pop[1] if pop[0] > 100 else 0.0), sd

    def _judge(self, kind: str, src: str, st: list[float], win: _Window, t: int, ref: float,
               sd: float) -> Verdict | None:
        lim = self.limits
        n, count = int(st[_N]), st[_WCOUNT]
        established = st[_WINDOWS] >= lim.history_windows
        flood_at = max(lim.min_flood, lim.flood_factor * st[_RATE]) if established else lim.new_burst
        if count >= flood_at:
            return self._verdict(src, "flood", count, flood_at, st, t,
                                 f"{int(count)} events in {lim.window_ms // 60_000} min, "
                                 + (f"usually {st[_RATE]:.0f}" if established else "from a new source"))
        item, top = win.top()
        if count >= lim.one_item_min and top / count >= lim.one_item_share:
            return self._verdict(src, "one_item", top / count, lim.one_item_share, st, t,
                                 f"{top} of its {int(count)} events in this window are on item {item}")
        if n < lim.min_events:
            return None
        shift = st[_DSHORT] - ref
        z = shift / (sd / math.sqrt(st[_NSHORT]))
        if shift >= (lim.producer_min_shift if kind == "producer" else lim.min_shift) and z >= lim.z:
            whose = "its own history" if n >= lim.history_events else f"other {kind}s"
            return self._verdict(src, "label_flip", z, lim.z, st, t,
                                 f"its labels go against the items' consensus (contrariness {st[_DSHORT]:+.2f}, "
                                 f"against {ref:+.2f} for {whose}; z {z:.1f})")
        return None

    @staticmethod
    def _verdict(src: str, rule: str, stat: float, threshold: float, st: list[float], t: int,
                 reason: str) -> Verdict:
        return Verdict(src, rule, round(float(stat), 4), float(threshold), int(st[_N]), int(st[_FIRST]), int(t),
                       f"{src}: {reason}")

    def snapshot(self) -> dict[str, Any]:
        return {"sources": self.sources, "windows": {k: dict(w.counts) for k, w in self.windows.items()},
                "items": self.items, "quarantined": self.quarantined, "population": self.population}

    def restore(self, state: dict[str, Any]) -> None:
        self.population = {k: [float(x) for x in state["population"][k]] for k in KINDS}
        self.sources = {str(k): [float(x) for x in v] for k, v in state["sources"].items()}
        for key, st in self.sources.items():
            if len(st) == _STATE_LEN - 1:  # saved before the reference was kept: it starts from the long-run mean
                st.append(st[_DLONG] - self.population[parse_source(key)[0]][1] if st[_N] >= _LONG_EVENTS else 0.0)
        if any(len(v) != _STATE_LEN for v in self.sources.values()):
            raise ValueError(f"poisoning state: source entries must hold {_STATE_LEN} numbers")
        self.windows = {str(k): _Window({str(i): int(c) for i, c in v.items()}) for k, v in state["windows"].items()}
        self.items = {str(k): [float(x) for x in v] for k, v in state["items"].items()}
        self.quarantined = {str(k): dict(v) for k, v in state["quarantined"].items()}

