"""The click flow's expiry of unanswered impressions: work per event that does not grow with the impressions
waiting, and exactly the outcomes, in the order, that a scan of every waiting impression gives."""

from __future__ import annotations

import random
from typing import Any

import pytest

from schemas import derive_id
from streams.flows.clicks import ClickProcessor
from streams.processor import Emit, Event
from streams.state import decode, encode
from tests.fixtures.counting import CountingDict


def _imp(iid: str, t: int, user: str = "u1", rating: float | None = None, partition: int = -1) -> Event:
    return Event("clicks", user, {"event_id": iid, "event_time": t, "user_id": user, "item_id": f"m{len(iid) % 7}",
                                  "action": "IMPRESSION", "rating": rating, "producer": "p1",
                                  "context": {"genres": "Drama"}}, partition=partition)


def _click(cid: str, t: int, impression: str, user: str = "u1", partition: int = -1) -> Event:
    return Event("clicks", user, {"event_id": cid, "event_time": t, "user_id": user, "item_id": "m1",
                                  "action": "CLICK", "impression_id": impression, "rating": None}, partition=partition)


def _feedback(emits: list[Emit]) -> list[tuple[str, float]]:
    return [(e.record["prediction_id"], e.record["label"]) for e in emits if e.topic == "feedback"]


@pytest.mark.parametrize("waiting", [500, 5000])
def test_an_event_looks_at_the_impressions_it_answers_or_expires_not_at_every_waiting_one(waiting: int) -> None:
    """A fleet keeps many impressions waiting ``click_wait_ms`` (30 minutes) for their click: an event that
    answers one and expires one must not walk them all."""
    proc = ClickProcessor("clicks-expiry-work", click_wait_ms=1_000_000)
    proc.process([_imp(f"w{i}", 1_000 + i) for i in range(waiting)])  # waiting long after the test's events
    proc.process([_imp(f"e{i}", i) for i in range(100)])  # one expires per event below
    proc.pending = CountingDict(proc.pending)
    CountingDict.looked = 0
    out: list[Emit] = []
    for i in range(100):
        out += proc.process([_imp(f"n{i}", 900_000 + i), _click(f"c{i}", 1_000_000 + i, f"n{i}")])
    assert CountingDict.looked / 200 <= 5  # a handful of look-ups per event, whatever waits
    assert [label for _, label in _feedback(out)] == [1.0, 0.0] * 100 and len(proc.pending) == waiting


def _stream(rng: random.Random, n: int) -> list[Event]:
    """Impressions (some rated, some ids seen again), clicks (some for unknown ids), quarantine changes, out of
    order event times over a few partitions."""
    t, ids, out = 1_000, [], []
    parts = rng.randint(1, 3)
    for i in range(n):
        t += rng.choice([0, 1, 5, 50, 300])
        et = max(0, t - rng.choice([0, 0, 10, 400, 2000]))
        part, user, r = rng.randrange(parts), f"u{i % 5}", rng.random()
        if r < 0.03:
            src = rng.choice(["user:u1", "producer:p1"])
            action = rng.choice(["QUARANTINE", "RELEASE"])
            out.append(Event("security.quarantine", src, {"source": src, "action": action, "reason": "test"}))
        elif r < 0.6 or not ids:
            iid = rng.choice(ids) if ids and rng.random() < 0.05 else f"i{i}"
            ids.append(iid)
            out.append(_imp(iid, et, user, rng.choice([None, None, None, 1.0, 5.0]), part))
        else:
            out.append(_click(f"c{i}", et, rng.choice(ids) if rng.random() < 0.9 else f"nope{i}", user, part))
    return out


class _Scanning(ClickProcessor):
    """The expiry as a scan of every waiting impression, in their order: what the heap must give, faster."""

    def _expire(self) -> list[Emit]:
        old = [k for k, e in self.pending.items() if e["time"] + self.click_wait_ms <= self.watermark]
        return [e for k in old for e in self._learn(self.pending.pop(k), 0.0, self.watermark)]


def _plain(emits: list[Emit]) -> list[tuple[str, Any, bytes]]:
    return [(e.topic, e.key, encode({k: v for k, v in e.record.items() if k != "latency_ms"})) for e in emits]


@pytest.mark.parametrize("seed", range(6))
def test_expiry_gives_the_emits_and_state_of_a_scan_of_every_waiting_impression(seed: int) -> None:
    """The online model is order-sensitive: impressions expire in the order they came (not by time), clicked ones
    never, and a restored processor goes on as the one it was saved from."""
    rng = random.Random(seed)
    wait = rng.choice([50, 400, 2000])
    fast, scan = ClickProcessor("clicks-expiry-same", click_wait_ms=wait), _Scanning("clicks-expiry-same",
                                                                                       click_wait_ms=wait)
    events, i = _stream(rng, 600), 0
    while i < len(events):
        batch = events[i: i + rng.randint(1, 30)]
        i += len(batch)
        assert _plain(fast.process(batch)) == _plain(scan.process(batch))
        saved = encode(fast.snapshot())
        assert saved == encode(scan.snapshot())
        if rng.random() < 0.15:
            fast = ClickProcessor("clicks-expiry-same", click_wait_ms=wait)
            fast.restore(decode(saved))


def test_impressions_expire_in_the_order_they_came_across_a_restore() -> None:
    proc = ClickProcessor("clicks-expiry-order", click_wait_ms=1000)
    proc.process([_imp("late", 500), _imp("early", 100), _imp("again", 300), _imp("clicked", 200),
                  _click("c1", 250, "clicked"), _imp("again", 400)])  # an id seen again keeps its place
    again = ClickProcessor("clicks-expiry-order", click_wait_ms=1000)
    again.restore(decode(encode(proc.snapshot())))
    came = [derive_id(i, "clicks-expiry-order", "prediction") for i in ("late", "early", "again")]
    for p in (proc, again):
        assert _feedback(p.process([_imp("now", 5000)])) == [(i, 0.0) for i in came] and list(p.pending) == ["now"]
