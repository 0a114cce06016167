"""The model-security flow: watches what the online click model learns from and quarantines poisoning sources.

It reads ``clicks`` (the events the click flow learns from; its ``feedback`` is derived from them) and the
quarantine list itself (``security.quarantine``, a compacted topic keyed by source). Each event goes to a
``models.security.PoisonDetector`` per producer and per user; a source it finds suspicious is written to the
quarantine list (the click flow stops learning from it, and still scores its events) and an alert says why
(``alerts``, delivered by the notify flow). ``eddyline security release SOURCE`` writes a release to the
list: the click flow learns from the source again, and this flow gives it fresh history and a grace period.

All sources share one detector (one state key): the item consensus every source is compared with needs every
event. Its state is bounded (``PoisonLimits.max_sources``, ``max_items``, least recently seen evicted).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any, ClassVar

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from connectors.config import Section
from models.security import PoisonDetector, PoisonLimits, Verdict, parse_source
from schemas import ALERT, CLICK, QUARANTINE, derive_id
from streams.flows.clicks import LIKE, QUARANTINE_TOPIC
from streams.processor import Emit, Event, FlowSpec, Processor

FLOW = "model-security"
PRODUCER = "eddyline/model_security"
ALERTS_TOPIC = "alerts"
KEY = "clicks"  # the one state key: every click event goes to the same detector
log = logging.getLogger(__name__)


class ModelSecuritySettings(Section):
    """``[model_security]`` / ``EDDYLINE_MODEL_SECURITY_*``: when a source of click events is quarantined."""

    toml_table: ClassVar[str] = "model_security"
    model_config = SettingsConfigDict(env_prefix="EDDYLINE_MODEL_SECURITY_", extra="forbid")

    window_ms: int = Field(3_600_000, gt=0, description="Event-time window for rates and item shares.")
    flood_factor: float = Field(20.0, gt=1, description="A window this many times a source's usual rate is a flood.")
    min_flood: int = Field(1000, gt=0, description="...when the window also holds this many events.")
    new_burst: int = Field(2000, gt=0, description="Events in one window that make a new source a flood.")
    z: float = Field(6.0, gt=0, description="z-score of a rise in contrariness that quarantines.")
    min_shift: float = Field(0.45, gt=0, le=1, description="Smallest rise in a user's contrariness that quarantines.")
    producer_min_shift: float = Field(0.15, gt=0, le=1,
                                      description="Smallest rise in a producer's contrariness that quarantines.")
    one_item_share: float = Field(0.5, gt=0, le=1, description="Share of a window on one item that quarantines...")
    one_item_min: int = Field(50, gt=0, description="...once the window holds this many events.")
    release_grace_ms: int = Field(86_400_000, ge=0, description="Event time after a release without re-quarantine.")
    max_sources: int = Field(200_000, gt=0, description="Sources remembered; the least recently seen go first.")

    def limits(self) -> dict[str, Any]:
        """The ``PoisonLimits`` fields these settings give, as plain data (processor parameters)."""
        return self.model_dump()


class ModelSecurityProcessor(Processor):
    """Every click event through a ``PoisonDetector``; verdicts out as quarantine records and alerts.

    Parameters
    ----------
    limits
        ``PoisonLimits`` fields that differ from the defaults.

    Examples
    --------
    >>> from streams.flows.model_security import ModelSecurityProcessor
    >>> from streams.processor import Event
    >>> proc = ModelSecurityProcessor({"new_burst": 3})
    >>> def click(i):
    ...     return Event("clicks", f"u{i}", {"event_id": f"c{i}", "event_time": 1000 + i, "producer": "bot",
    ...                  "user_id": f"u{i}", "item_id": f"m{i}", "action": "IMPRESSION", "rating": 5.0})
    >>> emits = proc.process([click(i) for i in range(3)])
    >>> [(e.topic, e.key[:15]) for e in emits], emits[1].record["details"]["source"]
    ([('security.quarantine', 'producer:bot'), ('alerts', 'model-security/')], 'producer:bot')
    """

    def __init__(self, limits: dict[str, Any] | None = None) -> None:
        self.limits = dict(limits or {})
        self.detector = PoisonDetector(PoisonLimits(**self.limits))
        self.watermark = 0
        self.ignored = 0  # quarantine-list records naming no source this flow knows how to watch
        self.legacy: set[str] = set()  # sources quarantined before alert keys named the quarantine (their old key)

    def params(self) -> dict[str, Any]:
        return {"limits": self.limits}

    def process(self, events: Sequence[Event]) -> list[Emit]:
        out: list[Emit] = []
        for ev in events:
            rec = ev.record
            if ev.topic == QUARANTINE_TOPIC:
                out.extend(self._standing(rec))
                continue
            self.watermark = max(self.watermark, int(rec["event_time"]))
            for verdict in self.detector.observe(int(rec["event_time"]), rec["item_id"], _label(rec),
                                                 producer=rec["producer"], user=rec["user_id"]):
                out.extend(self._quarantine(verdict))
        return out

    def _standing(self, rec: dict[str, Any]) -> list[Emit]:
        source = rec["source"]
        try:
            parse_source(source)
        except ValueError as exc:  # written by someone else's tool: the list cannot name it, so it changes nothing
            log.warning("quarantine record %s ignored: %s", rec["event_id"], exc)
            self.ignored += 1
            return []
        if rec["action"] == "QUARANTINE":
            self.detector.quarantine(source, rec["rule"], rec["reason"], int(rec["event_time"]))
            return []
        # a release: the grace period runs in the clicks' event time, which may be a replay's past
        standing = self.detector.quarantined.get(source)
        if standing is None or not self.detector.release(source, self.watermark):
            return []
        incident = _incident(source, standing["rule"], standing["time_ms"])
        if source in self.legacy:  # paged under the source's own key (an earlier release): resolve that one
            self.legacy.discard(source)
            incident = None
        return [_alert(source, "RESOLVED", int(rec["event_time"]), f"{source} released from quarantine: "
                       f"{rec['reason']}", None, {"rule": "release", "released_by": rec["producer"]}, incident)]

    def _quarantine(self, v: Verdict) -> list[Emit]:
        qid = derive_id(QUARANTINE_TOPIC, v.source, v.rule, v.events, v.time_ms)
        record = {"event_id": qid, "event_time": v.time_ms, "producer": PRODUCER, "source": v.source,
                  "action": "QUARANTINE", "rule": v.rule, "reason": v.reason, "statistic": v.statistic,
                  "threshold": v.threshold, "events": v.events}
        details = {"rule": v.rule, "statistic": f"{v.statistic:g}", "threshold": f"{v.threshold:g}",
                   "events": str(v.events), "first_seen_ms": str(v.first_ms),
                   "release": f"eddyline security release {v.source}"}
        summary = f"Quarantined from learning: {v.reason}"
        return [Emit(QUARANTINE_TOPIC, v.source, QUARANTINE, record),
                _alert(v.source, "OPENED", v.time_ms, summary, v.statistic, details, _incident(v.source, v.rule,
                                                                                                v.time_ms))]

    def snapshot(self) -> dict[str, Any]:
        return {"detector": self.detector.snapshot(), "watermark": self.watermark, "ignored": self.ignored,
                "legacy": sorted(self.legacy)}

    def restore(self, state: dict[str, Any]) -> None:
        self.detector.restore(state["detector"])
        self.watermark = int(state["watermark"])
        self.ignored = int(state.get("ignored", 0))
        # a snapshot without the list is older: every quarantine standing in it was paged under the old key
        self.legacy = set(state["legacy"]) if "legacy" in state else set(self.detector.quarantined)


def _label(rec: dict[str, Any]) -> float | None:
    """What the click flow will learn from this event: a rated impression's like, a click's 1; None when it
    teaches nothing by itself (an unrated impression, or a replay's click on an impression already rated)."""
    if rec["action"] == "IMPRESSION":
        return None if rec.get("rating") is None else float(rec["rating"] >= LIKE)
    return None if rec.get("rating") is not None else 1.0


def _incident(source: str, rule: str, time_ms: int) -> str:
    """One quarantine's identity, from what the detector keeps of it until the release (a restored one too)."""
    return derive_id(QUARANTINE_TOPIC, source, rule, int(time_ms))


def _alert(source: str, status: str, t: int, summary: str, value: float | None, details: dict[str, str],
           incident: str | None) -> Emit:
    """The alert of one quarantine. Its key names that quarantine, not the source: an alert key is one incident's
    (notify resolves a key for good), and a source's id is free text of any length, so it goes in the details.
    ``incident`` None: the source's own key, under which earlier releases paged (``legacy``)."""
    key = f"{FLOW}/{incident if incident is not None else source}"
    rec = {"event_id": derive_id(ALERTS_TOPIC, key, status), "event_time": t, "producer": PRODUCER,
           "alert_key": key, "status": status, "severity": "WARNING" if status == "OPENED" else "INFO",
           "source": FLOW, "entity": source, "summary": summary, "value": value,
           "details": {**details, "source": source}}
    return Emit(ALERTS_TOPIC, key, ALERT, rec)


def flow(limits: dict[str, Any] | None = None) -> FlowSpec:
    """The model-security flow: ``clicks`` and the quarantine list in; quarantines and alerts out.

    Parameters
    ----------
    limits
        ``PoisonLimits`` fields that differ from the defaults (``ModelSecuritySettings`` gives them).
    """
    return FlowSpec(
        name=FLOW,
        inputs={"clicks": CLICK, QUARANTINE_TOPIC: QUARANTINE},
        make_processor=lambda _key: ModelSecurityProcessor(limits),
        outputs={QUARANTINE_TOPIC: QUARANTINE, ALERTS_TOPIC: ALERT},
        key=lambda _event: KEY,
    )
