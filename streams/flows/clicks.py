"""The click flow: impressions and clicks in; predictions and feedback out, from a model that learns live.

One ``ClickProcessor`` per model (the flow keys every click by the model name: the model is shared by
all users). For each impression it predicts P(click) before learning anything from it and emits a
``predictions`` event (model name, version, features and their digest, latency). The impression's
outcome is learned when it is known: at once when the replay carries a rating, on the click that
answers it, or as a non-click once ``click_wait_ms`` of event time has passed. Each outcome is also
emitted as ``feedback`` for the prediction, which the quality and drift flows join on.

Event time is tracked per input partition (``clicks`` is keyed by user, and a consumer reads its partitions
at their own pace): an impression expires only once every partition heard from recently is ``click_wait_ms``
past it, so a partition that lags behind the others (catching up after an outage, a replay) does not turn
its impressions into non-clicks before their clicks are read. A partition silent for ``IDLE_AFTER`` events of
the others stops holding expiry back until it is heard again. A click whose impression is unknown or already
expired is counted (``unmatched_clicks``).

The flow also reads the quarantine list (``security.quarantine``, written by the model-security flow and by
``eddyline security release``): an impression from a quarantined producer or user is still predicted, but its
outcome is neither learned nor sent as feedback (feedback feeds the monitors that trigger retraining).
"""

from __future__ import annotations

import hashlib
import heapq
import math
import time
from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np

from models.online import ClickModel
from models.online.clicks import FEATURES, MAX_USERS
from schemas import CLICK, FEEDBACK, PREDICTION, QUARANTINE, derive_id
from streams.flows.names import MODEL_NAME, QUARANTINE_TOPIC
from streams.processor import Emit, Event, FlowSpec, Processor

PRODUCER = "eddyline/clicks"
LIKE = 4.0
SEEN_PER_USER = 5000  # items remembered per user, to leave out of their recommendations; the oldest go first
SEEN_USERS = MAX_USERS  # users remembered (shown items, the model's statistics); the least lately active go first
IDLE_AFTER = 10_000  # click events of other partitions after which a silent partition stops holding expiry back


def features_digest(x: np.ndarray) -> str:
    """A short digest of a feature vector, carried by predictions so that a prediction can be traced and
    compared without shipping every feature.

    Parameters
    ----------
    x
        The features, as the model saw them (rounded to 9 decimals first, so float noise does not matter).
    """
    return hashlib.blake2b(np.round(x, 9).tobytes(), digest_size=8).hexdigest()


class ClickProcessor(Processor):
    """The click model of one name: predicts P(click) for each impression before learning from it.

    Emits a ``predictions`` event per impression and a ``feedback`` event per outcome (a rating in the
    replay, a click, or no click within ``click_wait_ms`` of event time). The processor registers itself
    as the live model of this process for the recommendations API.

    Parameters
    ----------
    model_name
        The model's name (the flow's only state key; predictions are keyed by it).
    version
        The model version predictions carry.
    click_wait_ms
        Event time after which an impression without a click is learned as a non-click.

    Examples
    --------
    >>> from streams.flows.clicks import ClickProcessor
    >>> from streams.processor import Event
    >>> processor = ClickProcessor("clicks-docs")
    >>> impression = {"event_id": "i-1", "event_time": 1000, "user_id": "u1", "item_id": "m9",
    ...               "action": "IMPRESSION", "rating": 5.0, "context": {"genres": "Drama"}}
    >>> emits = processor.process([Event("clicks", "u1", impression)])
    >>> [(e.topic, e.key) for e in emits]
    [('predictions', 'clicks-docs'), ('feedback', 'clicks-docs')]
    >>> emits[1].record["label"], emits[1].record["prediction_id"] == emits[0].record["event_id"]
    (1.0, True)
    """

    idle_after: ClassVar[int] = IDLE_AFTER

    def __init__(self, model_name: str = MODEL_NAME, version: str = "1", click_wait_ms: int = 30 * 60_000) -> None:
        self.model_name, self.version, self.click_wait_ms = model_name, version, click_wait_ms
        self.model = ClickModel(max_users=SEEN_USERS)
        self.pending: dict[str, dict[str, Any]] = {}  # impression id -> what learning needs
        self._order: dict[str, int] = {}  # pending id -> its place in ``pending``'s order; rebuilt on restore
        self._placed = 0  # places given so far
        self._due: list[tuple[int, int, str]] = []  # (time, place, id) per pending impression; some stale
        self.shown: dict[str, dict[str, None]] = {}  # user -> items shown to them, oldest first
        self.watermark = 0  # what impressions expire against: the slowest partition heard from recently
        self.partitions: dict[str, list[int]] = {}  # "topic:partition" -> [largest event time, arrival of last event]
        self.arrivals = 0  # click events so far, the clock of partition idleness
        self.quarantined: dict[str, str] = {}  # producer:NAME or user:ID -> why, from the quarantine list
        self.not_learned = 0
        self.unmatched_clicks = 0  # clicks for an impression unknown or expired as a non-click
        self.bad_ratings = 0  # non-finite ratings that got past validation: predicted, never learned
        from streams.apps.recommend import LIVE

        LIVE[model_name] = self  # the recommendations API serves the live model of this process

    def params(self) -> dict[str, Any]:
        return {"model_name": self.model_name, "version": self.version, "click_wait_ms": self.click_wait_ms}

    def process(self, events: Sequence[Event]) -> list[Emit]:
        out: list[Emit] = []
        for ev in events:
            rec = ev.record
            if ev.topic == QUARANTINE_TOPIC:
                self._standing(rec)
                continue
            self._advance(ev)
            if rec["action"] == "IMPRESSION":
                out.extend(self._impression(rec))
            else:
                out.extend(self._click(rec))
            out.extend(self._expire())
        return out

    def _advance(self, ev: Event) -> None:
        """Move the event's partition's clock and the watermark: the minimum over partitions heard from in the
        last ``idle_after`` events (outside Kafka every event is of partition -1: one clock, as one partition)."""
        self.arrivals += 1
        key = f"{ev.topic}:{ev.partition}"
        t = int(ev.record["event_time"])
        seen = self.partitions.get(key)
        self.partitions[key] = [t if seen is None else max(seen[0], t), self.arrivals]
        self.watermark = min(wm for wm, last in self.partitions.values() if self.arrivals - last <= self.idle_after)

    def _genres(self, rec: dict[str, Any]) -> tuple[str, ...]:
        return tuple(g for g in rec.get("context", {}).get("genres", "").split("|") if g)

    def _impression(self, rec: dict[str, Any]) -> list[Emit]:
        t0 = time.perf_counter()
        user, item, genres = rec["user_id"], rec["item_id"], self._genres(rec)
        self._saw(user, item)
        x = self.model.features(user, [item], [genres] if genres else None)[0]
        p = float(self.model.logit.predict(x))
        latency = (time.perf_counter() - t0) * 1000
        pred_id = derive_id(rec["event_id"], self.model_name, "prediction")
        pred = {
            "event_id": pred_id, "event_time": rec["event_time"], "producer": PRODUCER,
            "model_name": self.model_name, "model_version": self.version, "subject_id": user, "item_id": item,
            "features_digest": features_digest(x), "features": dict(zip(FEATURES, map(float, x))), "score": p,
            "label": "click" if p >= 0.5 else "no_click", "latency_ms": latency, "error": None,
        }
        out = [Emit("predictions", self.model_name, PREDICTION, pred)]
        entry = {"pred_id": pred_id, "user": user, "producer": rec.get("producer", ""), "item": item,
                 "genres": list(genres), "x": x.tolist(), "time": int(rec["event_time"]), "rating": rec.get("rating"),
                 "p": p}
        self._predicted(entry)
        rating = rec.get("rating")
        if rating is not None and not math.isfinite(rating):
            self.bad_ratings += 1  # validation refuses these; this one came around it (run_local, a test)
        elif rating is not None:
            out.extend(self._learn(entry, 1.0 if rating >= LIKE else 0.0, rec["event_time"]))
        else:
            self._wait(rec["event_id"], entry)
        return out

    def _wait(self, key: str, entry: dict[str, Any]) -> None:
        """Keep an impression until its click or its expiry; an id seen again keeps its place, as in the dict."""
        if key not in self._order:
            self._order[key], self._placed = self._placed, self._placed + 1
        self.pending[key] = entry
        heapq.heappush(self._due, (entry["time"], self._order[key], key))

    def _standing(self, rec: dict[str, Any]) -> None:
        if rec["action"] == "QUARANTINE":
            self.quarantined[rec["source"]] = rec["reason"]
        else:
            self.quarantined.pop(rec["source"], None)

    def _kept_out(self, entry: dict[str, Any]) -> bool:
        """Whether an outcome comes from a quarantined producer or user (decided when it is learned)."""
        return (f"user:{entry['user']}" in self.quarantined
                or f"producer:{entry.get('producer', '')}" in self.quarantined)

    def _saw(self, user: str, item: str) -> None:
        items = self.shown.pop(user, None) or {}  # moved to the end: memory follows the users who are active
        self.shown[user] = items
        items.pop(item, None)
        items[item] = None
        if len(items) > SEEN_PER_USER:
            del items[next(iter(items))]
        if len(self.shown) > SEEN_USERS:
            del self.shown[next(iter(self.shown))]

    def _click(self, rec: dict[str, Any]) -> list[Emit]:
        key = rec.get("impression_id") or ""
        entry = self.pending.pop(key, None)
        self._order.pop(key, None)
        if entry is None:
            if rec.get("rating") is None:  # a rated click answers a rated impression, learned on arrival
                self.unmatched_clicks += 1  # unknown, or expired as a non-click
            return []
        return self._learn(entry, 1.0, rec["event_time"])

    def _expire(self) -> list[Emit]:
        """Learn the impressions past ``click_wait_ms`` as non-clicks, looking only at those: a fleet keeps many
        waiting. They are learned in the order they came (the online model is order-sensitive), not by time;
        a heap entry of an impression clicked, expired or seen again since is stale and skipped."""
        old: list[tuple[int, str]] = []
        while self._due and self._due[0][0] + self.click_wait_ms <= self.watermark:
            t, place, key = heapq.heappop(self._due)
            if self._order.get(key) == place and self.pending[key]["time"] == t:
                del self._order[key]
                old.append((place, key))
        old.sort()
        return [e for _, k in old for e in self._learn(self.pending.pop(k), 0.0, self.watermark)]

    def _predicted(self, entry: dict[str, Any]) -> None:
        """Called once a prediction is made, before any learning: for subclasses that score in shadow."""

    def _outcome(self, entry: dict[str, Any], label: float) -> list[Emit]:
        """Called with each outcome before the model learns it: for subclasses that watch or retrain."""
        return []

    def _learn(self, entry: dict[str, Any], label: float, when: int) -> list[Emit]:
        if self.quarantined and self._kept_out(entry):
            self.not_learned += 1
            return []
        extra = self._outcome(entry, label)
        self.model.learn(entry["user"], entry["item"], label, tuple(entry["genres"]), entry["rating"],
                         features=np.asarray(entry["x"]))
        fb = {"event_id": derive_id(entry["pred_id"], "feedback"), "event_time": int(when), "producer": PRODUCER,
              "model_name": self.model_name, "prediction_id": entry["pred_id"], "label": label}
        return [Emit("feedback", self.model_name, FEEDBACK, fb), *extra]

    def top_k(self, user: str, k: int = 10, exclude_seen: bool = True) -> list[tuple[str, float]]:
        """The live model's recommendations for a user over every item it knows, without those the
        user has already been shown (or rated) unless ``exclude_seen`` is false.

        Parameters
        ----------
        user, k, exclude_seen
            As for ``streams.apps.recommend.Recommender.top_k``.
        """
        model = self.model  # one model for the whole answer, even if a promotion swaps it meanwhile
        seen = self.shown.get(user, {}) if exclude_seen else {}
        items = [i for i in list(model.items.n) if i not in seen]
        if not items:
            return []
        scores = model.rank_scores(user, items)
        order = np.argsort(-scores)[:k]
        return [(items[i], float(scores[i])) for i in order]

    def snapshot(self) -> dict[str, Any]:
        return {"model": self.model.snapshot(), "pending": self.pending, "watermark": self.watermark,
                "version": self.version, "shown": {u: list(items) for u, items in self.shown.items()},
                "quarantined": self.quarantined, "not_learned": self.not_learned, "partitions": self.partitions,
                "arrivals": self.arrivals, "unmatched_clicks": self.unmatched_clicks, "bad_ratings": self.bad_ratings}

    def restore(self, state: dict[str, Any]) -> None:
        self.model.restore(state["model"])
        self.version = str(state.get("version", self.version))
        self.pending = dict(state["pending"])
        self._order = {k: place for place, k in enumerate(self.pending)}
        self._placed = len(self._order)
        self._due = [(e["time"], self._order[k], k) for k, e in self.pending.items()]
        heapq.heapify(self._due)
        self.watermark = int(state["watermark"])
        self.shown = {u: dict.fromkeys(items) for u, items in state.get("shown", {}).items()}
        self.quarantined = {str(k): str(v) for k, v in state.get("quarantined", {}).items()}
        self.not_learned = int(state.get("not_learned", 0))
        # a state from before per-partition clocks has none: the watermark holds until partitions are heard from
        self.partitions = {str(k): [int(wm), int(last)] for k, (wm, last) in state.get("partitions", {}).items()}
        self.arrivals = int(state.get("arrivals", 0))
        self.unmatched_clicks = int(state.get("unmatched_clicks", 0))
        self.bad_ratings = int(state.get("bad_ratings", 0))


def flow(model_name: str = MODEL_NAME, click_wait_ms: int = 30 * 60_000) -> FlowSpec:
    """The click flow without retraining: ``clicks`` and the quarantine list in, ``predictions`` and ``feedback`` out.

    ``eddyline run clicks`` runs ``streams.flows.retraining.flow``, which adds retraining to this one.

    Parameters
    ----------
    model_name, click_wait_ms
        As for ``ClickProcessor``.
    """
    return FlowSpec(
        name="clicks",
        inputs={"clicks": CLICK, QUARANTINE_TOPIC: QUARANTINE},
        make_processor=lambda _key: ClickProcessor(model_name, click_wait_ms=click_wait_ms),
        outputs={"predictions": PREDICTION, "feedback": FEEDBACK},
        key=lambda _event: model_name,
    )
