"""What the live page shows, folded from the output topics' events: plain data, no Kafka, no server.

Delivery is at least once, so every event id is counted once (a bounded memory of recent ids). Lists are
bounded too (the newest rows win): the page is a view of now, dashboards keep history. The charts' series
(``charts.Charts``) are folded from the same events, plus the sensor readings the scores belong to. Model quality is
computed here from predictions and feedback with the quality flow's own processor, since its metrics go
to InfluxDB and Prometheus rather than to a topic.
"""

from __future__ import annotations

import heapq
import json
import logging
import math
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from connectors.alert_explanation import explanation_text
from schemas import (
    ALERT, ANOMALY_SCORE, DRIFT, FEEDBACK, PREDICTION, ROUTING_RECOMMENDATION, SENSOR_BATCH, SENTIMENT_SCORE,
)
from schemas.catalog import DEVICE_HEALTH
from schemas.scores import series_scores
from streams.apps.live.charts import ChartLimits, Charts, bounded_get
from streams.processor import Event
from streams.flows.fleet import KINDS, heard_at
from streams.flows.quality import QualityProcessor

TOPICS: dict[str, str] = {
    "scores.anomaly": ANOMALY_SCORE,
    "alerts": ALERT,
    "scores.sentiment": SENTIMENT_SCORE,
    "drift": DRIFT,
    "predictions": PREDICTION,
    "feedback": FEEDBACK,
    "sensor.readings": SENSOR_BATCH,
    "device.health": DEVICE_HEALTH,
    "routing": ROUTING_RECOMMENDATION,
}
log = logging.getLogger(__name__)
OUTPUTS = ("scores.anomaly", "alerts", "scores.sentiment", "drift", "routing")  # what flows emit: the throughput chart


def page_json(view: Any) -> str:
    """``view`` as JSON a browser can parse: a NaN or infinite number (a device's or a model's, decoded as sent)
    is written ``null``, since one ``NaN`` token makes ``JSON.parse`` refuse the whole view and the page freeze."""
    try:
        return json.dumps(view, allow_nan=False)
    except ValueError:
        return json.dumps(_finite(view), allow_nan=False)


def _finite(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


@dataclass
class LiveLimits:
    rows: int = 50  # anomalies, drift detections and model versions' quality windows kept
    conversations: int = 100
    remembered_ids: int = 200_000
    quality_window_ms: int = 10_000
    quality_wait_ms: int = 10_000  # event time a prediction waits for its feedback
    quality_lateness_ms: int = 30_000  # predictions and feedback arrive on two topics, not in step
    fleet_devices: int = 10_000  # edge devices remembered (the least recently heard leave first)
    scored_devices: int = 10_000  # devices in the anomaly tally (the least recently scored leave first)
    open_alerts: int = 10_000  # open alerts remembered (the least recently updated leave first); ``rows`` are shown
    charts: ChartLimits = field(default_factory=ChartLimits)


class LiveState:
    """The page's view; ``clock`` (seconds) is now for the throughput chart and the fleet's ages, and the time of
    an event read without a broker timestamp."""

    def __init__(self, limits: LiveLimits | None = None, clock: Callable[[], float] = time.time) -> None:
        self.limits = limits or LiveLimits()
        self.clock = clock
        self.charts = Charts(self.limits.charts)
        self.version = 0
        self.events: dict[str, int] = {t: 0 for t in TOPICS}
        self.rejected: dict[str, dict[str, int]] = {}  # topic -> reason -> count
        self.duplicates = 0
        self._ids: OrderedDict[str, None] = OrderedDict()
        self.scored = 0
        self.anomalous = 0
        self.anomalies: deque[dict[str, Any]] = deque(maxlen=self.limits.rows)
        self.devices: OrderedDict[str, dict[str, Any]] = OrderedDict()  # device -> tally, last scored last
        self.open_alerts: OrderedDict[str, dict[str, Any]] = OrderedDict()  # key -> alert, last updated last
        self.alert_counts: dict[str, int] = {"OPENED": 0, "UPDATED": 0, "RESOLVED": 0}
        self.conversations: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self.drift: deque[dict[str, Any]] = deque(maxlen=self.limits.rows)
        self.drift_counts: dict[str, int] = {}
        self._quality: dict[str, QualityProcessor] = {}
        self.quality: OrderedDict[str, dict[str, Any]] = OrderedDict()  # "model version" -> last closed window,
        # last closed last; bounded: every retraining of a model brings a new version, for months
        self.predictions: dict[str, int] = {}
        self.fleet: OrderedDict[str, dict[str, Any]] = OrderedDict()  # device -> latest health, last heard last
        self.fleet_incidents: OrderedDict[str, dict[str, str]] = OrderedDict()  # device -> kind -> alert key, last
        # alerted last; bounded like ``fleet``: a retired device's alert that never resolves is not kept for good

    def reject(self, topic: str, reason: str) -> None:
        """An event that could not be decoded: counted and shown, never silently dropped."""
        by_reason = self.rejected.setdefault(topic, {})
        by_reason[reason] = by_reason.get(reason, 0) + 1
        self.version += 1

    def apply(self, topic: str, record: dict[str, Any], broker_ms: int = -1) -> None:
        """A decoded event; one the view cannot take is counted as rejected with its error, so that one bad
        event (a model version the quality join cannot file) never stops the page.

        Parameters
        ----------
        topic
            The logical topic it came from.
        record
            The decoded record.
        broker_ms
            The message's Kafka timestamp (-1: none): when a device was heard, or a flow wrote its output, whenever
            the page reads it.
        """
        if self._repeat(record["event_id"]):
            self.duplicates += 1
            return
        try:
            if topic == "device.health":
                self._device_health(record, broker_ms)
            else:
                getattr(self, "_" + topic.replace(".", "_"))(record)
        except Exception as exc:  # noqa: BLE001 - counted and logged: the page goes on with the other events
            if not self.rejected.get(topic, {}).get(type(exc).__name__):
                log.warning("live page: a %s event could not be shown (%s: %s); counting such events as rejected",
                            topic, type(exc).__name__, exc)
            self.reject(topic, type(exc).__name__)
            return
        self.events[topic] = self.events.get(topic, 0) + 1
        if topic in OUTPUTS:
            now = self.clock()
            self.charts.output(topic, broker_ms // 1000 if broker_ms >= 0 else int(now), now)
        self.version += 1

    def lag(self, lags: Mapping[str, int]) -> None:
        """A consumer-lag reading: messages behind, per flow and engine."""
        self.charts.lag(self.clock(), lags)
        self.version += 1

    def _repeat(self, event_id: str) -> bool:
        if event_id in self._ids:
            return True
        self._ids[event_id] = None
        if len(self._ids) > self.limits.remembered_ids:
            self._ids.popitem(last=False)
        return False

    def _sensor_readings(self, rec: dict[str, Any]) -> None:
        self.charts.readings(rec)

    def _scores_anomaly(self, rec: dict[str, Any]) -> None:
        self.charts.scores(rec)
        device, threshold = rec["device_id"], rec["threshold"]
        d = bounded_get(self.devices, device, self.limits.scored_devices,
                        lambda: {"device": device, "scored": 0, "anomalous": 0, "max_score": 0.0})
        for s in rec["series"]:
            stamps, packed = series_scores(s)
            scores = packed.tolist()
            self.scored += len(scores)
            d["scored"] += len(scores)
            if scores:
                d["max_score"] = max(d["max_score"], max(scores))
            for t, score in zip(stamps.tolist(), scores):
                if score >= threshold:
                    self.anomalous += 1
                    d["anomalous"] += 1
                    self.anomalies.appendleft(
                        {
                            "device": device,
                            "sensor": s["sensor"],
                            "time": t,
                            "score": round(score, 4),
                            "threshold": threshold,
                        }
                    )

    def _alerts(self, rec: dict[str, Any]) -> None:
        self.charts.alert(rec)
        status, key = rec["status"], rec["alert_key"]
        if rec["source"] == "fleet":
            self._fleet_alert(rec)
        self.alert_counts[status] = self.alert_counts.get(status, 0) + 1
        if status == "RESOLVED":
            self.open_alerts.pop(key, None)
            return
        before = self.open_alerts.pop(key, None) or {}
        self.open_alerts[key] = {
            "key": key,
            "source": rec["source"],
            "entity": rec["entity"],
            "severity": rec["severity"],
            "summary": rec["summary"],
            "why": explanation_text(rec.get("explanation")) or before.get("why", ""),
            "opened": before.get("opened", rec["event_time"]),
            "updated": rec["event_time"],
        }
        while len(self.open_alerts) > self.limits.open_alerts:
            self.open_alerts.popitem(last=False)

    def _conversation(self, conv: str) -> dict[str, Any]:
        return bounded_get(self.conversations, conv, self.limits.conversations,
                           lambda: {"conversation": conv, "segments": 0, "route": "", "reason": ""})

    def _scores_sentiment(self, rec: dict[str, Any]) -> None:
        self.charts.sentiment(rec)
        c = self._conversation(rec["conversation_id"])
        c.update(
            segments=c["segments"] + 1,
            label=rec["label"],
            score=round(rec["score"], 3),
            rolling=None if rec["rolling_score"] is None else round(rec["rolling_score"], 3),
            emotion=rec.get("emotion") or "",
            text=rec["text"][:200],
            time=rec["event_time"],
        )

    def _routing(self, rec: dict[str, Any]) -> None:
        self._conversation(rec["conversation_id"]).update(route=rec["action"], reason=rec["reason"])

    def _drift(self, rec: dict[str, Any]) -> None:
        subject = rec["feature"] or "concept"
        self.drift_counts[rec["model_name"]] = self.drift_counts.get(rec["model_name"], 0) + 1
        self.drift.appendleft(
            {
                "model": rec["model_name"],
                "subject": subject,
                "kind": rec["kind"],
                "detector": rec["detector"],
                "statistic": round(rec["statistic"], 4),
                "threshold": rec["threshold"],
                "time": rec["event_time"],
            }
        )

    def _predictions(self, rec: dict[str, Any]) -> None:
        self.predictions[rec["model_name"]] = self.predictions.get(rec["model_name"], 0) + 1
        self._judge("predictions", rec)

    def _feedback(self, rec: dict[str, Any]) -> None:
        self._judge("feedback", rec)

    def _judge(self, topic: str, rec: dict[str, Any]) -> None:
        model = rec["model_name"]
        proc = self._quality.get(model)
        if proc is None:
            lim = self.limits
            proc = self._quality[model] = QualityProcessor(
                model, lim.quality_window_ms, lim.quality_wait_ms, lim.quality_lateness_ms
            )
        for emit in proc.process([Event(topic, model, rec)]):
            w = emit.record
            key = f"{model} {w['model_version']}"
            self.quality.pop(key, None)
            self.quality[key] = {k: (round(v, 4) if isinstance(v, float) else v) for k, v in w.items()
                                 if k != "event_id"}
            while len(self.quality) > self.limits.rows:
                self.quality.popitem(last=False)

    def _device_health(self, rec: dict[str, Any], broker_ms: int) -> None:
        device = rec["device_id"]
        heard_ms = heard_at(Event("device.health", device, rec, broker_ms=broker_ms))
        self.fleet.pop(device, None)
        self.fleet[device] = {
            "device": device, "device_class": rec["device_class"], "agent_version": rec["agent_version"],
            "model_version": rec["model_version"] or "none", "model_state": rec["model_state"],
            "buffer_depth": rec["buffer_depth"], "errors": rec["errors"], "rss_mb": round(rec["rss_mb"], 1),
            "clock_offset_ms": rec["clock_offset_ms"], "heard": heard_ms / 1000,
        }
        while len(self.fleet) > self.limits.fleet_devices:
            self.fleet.popitem(last=False)

    def _fleet_alert(self, rec: dict[str, Any]) -> None:
        kinds = bounded_get(self.fleet_incidents, rec["entity"], self.limits.fleet_devices, dict)
        kind = rec["details"].get("kind", "unknown")
        if rec["status"] == "RESOLVED":
            kinds.pop(kind, None)
            if not kinds:
                del self.fleet_incidents[rec["entity"]]
        else:
            kinds[kind] = rec["alert_key"]

    def fleet_view(self, now: float) -> dict[str, Any]:
        """Devices by agent version, model version and state (the fleet flow's open alerts), and the devices
        that are not ok, with how long ago each was heard at ``now``."""
        groups: dict[tuple[str, str, str], int] = {}
        trouble = []
        for device, d in self.fleet.items():
            open_kinds = self.fleet_incidents.get(device, {})
            state = next((k for k in KINDS if k in open_kinds), "ok")
            key = (d["agent_version"], d["model_version"], state)
            groups[key] = groups.get(key, 0) + 1
            if state != "ok":
                trouble.append({**d, "state": state, "age_s": round(now - d["heard"], 1)})
        return {
            "devices": len(self.fleet),
            "groups": [{"agent_version": a, "model_version": m, "state": s, "devices": n}
                       for (a, m, s), n in sorted(groups.items())],
            "trouble": sorted(trouble, key=lambda r: -r["age_s"])[: self.limits.rows],
        }

    def snapshot(self) -> dict[str, Any]:
        """The whole view as JSON-ready data, newest first where order matters."""
        now = self.clock()
        return {
            "version": self.version,
            "events": dict(self.events),
            "rejected": {t: dict(r) for t, r in self.rejected.items()},
            "duplicates": self.duplicates,
            "anomalies": {
                "scored": self.scored,
                "anomalous": self.anomalous,
                "recent": list(self.anomalies),
                "devices": sorted(self.devices.values(), key=lambda d: -d["anomalous"])[: self.limits.rows],
            },
            "alerts": {
                "counts": dict(self.alert_counts),
                "open": heapq.nlargest(self.limits.rows, self.open_alerts.values(), key=lambda a: a["updated"]),
                "open_count": len(self.open_alerts),
            },
            "sentiment": list(reversed(self.conversations.values())),
            "quality": {
                "windows": [self.quality[k] for k in sorted(self.quality)],
                "predictions": dict(self.predictions),
            },
            "drift": {"recent": list(self.drift), "counts": dict(self.drift_counts)},
            "fleet": self.fleet_view(now),
            "charts": self.charts.overview(now),
        }

    def selected(self, selection: Mapping[str, str | None]) -> dict[str, Any]:
        """The charts one client chose: ``device``, ``sensor`` and ``call`` (each defaults to the latest)."""
        return {
            "device_chart": self.charts.device_view(selection.get("device"), selection.get("sensor")),
            "call_chart": self.charts.call_view(selection.get("call")),
        }
