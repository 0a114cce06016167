"""The quality flow: predictions joined with their feedback in event time, metrics per window and version.

One ``QualityProcessor`` per model. A prediction waits up to ``max_wait_ms`` of event time for its
feedback (feedback that comes first waits for its prediction the same way); after that it counts as
missing feedback. Windows are tumbling, by the prediction's event time, and their metrics are emitted
once, as a ``model_quality`` record (for sinks: InfluxDB and Prometheus).

Predictions and feedback come from two topics that a consumer reads at their own pace, so one is often
far ahead of the other in event time. Each input therefore has its own clock (the largest event time
seen on it) and its own watermark (that clock minus ``allowed_lateness_ms``): a prediction gives up on
its feedback only once the *feedback* watermark is ``max_wait_ms`` past it, stray feedback gives up on
its prediction only once the *prediction* watermark is, and a window closes when the prediction
watermark has passed its end and the feedback watermark its end plus the wait. A feedback stream that
stops altogether would hold every window open; reading skew gives at most a poll's worth of predictions
with no feedback between them, so after ``stall_after`` predictions in a row without any feedback the
feedback stream counts as stalled: its watermark is brought up to the predictions', and unanswered
predictions count as missing (an event count, not an event-time span, because a fast replay of
history packs days of event time into one poll). The other way round too: after ``stall_after`` feedback events in a
row without a prediction (a model retired while its labels still come, a labeller writing under a name no model
predicts for), the predictions stream counts as stalled and its watermark is brought up to the feedback's, where
stray feedback waited for ever. Events for a window already closed are late: they are counted, in the
``late_events`` field of the next window emitted for that version, never silently dropped.

A model that stops predicting (at night, or retired) moves neither clock, so its last windows would wait for traffic
that may never come; when the engine evicts its idle key (``flush``) those before the first prediction still waiting
for its feedback close as they stand, and whatever comes for them later is late, so no window is emitted twice. The
window of a prediction still waiting stays open: a model that predicts less often than the idle eviction gets its
feedback after it.

Delivery is at least once: a producer's replay after a crash sends the same predictions and feedback again (same
ids). Each open window remembers the ids of its predictions (and which are labelled), forgotten when it closes, so a
repeat is counted in ``duplicates`` instead of twice in the window's metrics.

A failed prediction (``error`` set) counts in the window's ``error_rate``; its feedback, which producers send for
every prediction, has no score to judge, so it joins nothing and is no late event.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np
from pydantic import Field
from pydantic_settings import SettingsConfigDict

from connectors.config import Section
from models.metrics import classification_report
from schemas import FEEDBACK, PREDICTION, derive_id
from streams.flows.waiting import Stalls, Waiting
from streams.processor import Emit, Event, FlowSpec, Processor

METRICS_TOPIC = "sink.model_quality"  # sink-only: feeds streams.sinks.quality, never written to Kafka
METRICS_TYPE = "model_quality"  # not a schemas event type
MEASUREMENT = "model_quality"


_NEVER = -(2**62)
_FAILED = -1  # a window's ids value of a failed prediction whose feedback has not come


def _start_of(key: str) -> int:
    """The start of a window keyed ``version|start``; a version may hold ``|`` itself."""
    return int(key.rsplit("|", 1)[1])


def _new_window() -> dict[str, Any]:
    # ids: prediction id -> 1 once labelled (or answered, if it failed), else 0 (or _FAILED), to tell repeats from new
    # events while the window is open
    return {"labels": [], "scores": [], "latency": [], "predictions": 0, "errors": 0, "missing": 0, "ids": {}}


class QualityProcessor(Processor):
    """One model's predictions joined with their feedback in event time; metrics per tumbling window and version.

    Parameters
    ----------
    model_name
        The model (the flow's state key).
    window_ms
        Window length, by the prediction's event time; positive.
    max_wait_ms
        Event time a prediction waits for its feedback (and stray feedback for its prediction).
    allowed_lateness_ms
        How far behind its input's clock an event may come and still count.
    stall_after
        Predictions in a row without any feedback after which the feedback stream counts as stalled; and
        feedback in a row without any prediction, the predictions stream.
    """

    def __init__(self, model_name: str, window_ms: int = 60_000, max_wait_ms: int = 60_000,
                 allowed_lateness_ms: int = 5_000, stall_after: int = 10_000) -> None:
        if window_ms < 1 or stall_after < 1 or max_wait_ms < 0 or allowed_lateness_ms < 0:
            raise ValueError("window_ms and stall_after must be positive; waits and lateness must not be negative")
        self.model_name, self.window_ms = model_name, window_ms
        self.max_wait_ms, self.allowed_lateness_ms, self.stall_after = max_wait_ms, allowed_lateness_ms, stall_after
        self.preds = Waiting()  # predictions waiting for their feedback
        self.early = Waiting()  # feedback waiting for its prediction
        self.windows: dict[str, dict[str, Any]] = {}  # "version|start" -> accumulators
        self.late: dict[str, int] = {}  # version -> late events not yet reported
        self.clock = {"predictions": _NEVER, "feedback": _NEVER}  # how far each input has come, in event time
        self.closed_before = _NEVER  # windows starting before this are closed
        self.stalls = Stalls(stall_after, never=_NEVER)
        self.duplicates = {"predictions": 0, "feedback": 0}  # repeats of events an open window has counted

    def params(self) -> dict[str, Any]:
        return {"model_name": self.model_name, "window_ms": self.window_ms, "max_wait_ms": self.max_wait_ms,
                "allowed_lateness_ms": self.allowed_lateness_ms, "stall_after": self.stall_after}

    @property
    def prediction_watermark(self) -> int:
        return self.stalls.reach("predictions", self.clock) - self.allowed_lateness_ms

    @property
    def feedback_watermark(self) -> int:
        return self.stalls.reach("feedback", self.clock) - self.allowed_lateness_ms

    def _start(self, t: int) -> int:
        return t - t % self.window_ms

    def process(self, events: Sequence[Event]) -> list[Emit]:
        out: list[Emit] = []
        for ev in events:
            rec = ev.record
            side = "feedback" if "prediction_id" in rec else "predictions"
            self.clock[side] = max(self.clock[side], int(rec["event_time"]))
            self.stalls.heard(side, self.clock)
            if side == "feedback":
                self._feedback(rec)
            else:
                self._prediction(rec)
            out.extend(self._advance())
        return out

    def _prediction(self, rec: dict[str, Any]) -> None:
        t, version = int(rec["event_time"]), rec["model_version"]
        start = self._start(t)
        if start < self.closed_before:
            self.late[version] = self.late.get(version, 0) + 1
            return
        w = self.windows.setdefault(f"{version}|{start}", _new_window())
        if rec["event_id"] in w["ids"]:
            self.duplicates["predictions"] += 1
            return
        w["ids"][rec["event_id"]] = 0
        w["predictions"] += 1
        w["latency"].append(float(rec["latency_ms"]))
        fb = self.early.pop(rec["event_id"])
        if rec.get("error"):  # no score to judge; its feedback is no late event, nor its want of one missing feedback
            w["errors"] += 1
            w["ids"][rec["event_id"]] = _FAILED if fb is None else 1
            return
        if fb is not None:
            w["ids"][rec["event_id"]] = 1
            w["labels"].append(fb["label"])
            w["scores"].append(float(rec["score"]))
            return
        self.preds.add(rec["event_id"], {"time": t, "version": version, "score": float(rec["score"]), "start": start})

    def _feedback(self, rec: dict[str, Any]) -> None:
        p = self.preds.pop(rec["prediction_id"])
        if p is None:
            ids = next((w["ids"] for w in self.windows.values() if rec["prediction_id"] in w["ids"]), {})
            if ids.get(rec["prediction_id"]) == _FAILED:
                ids[rec["prediction_id"]] = 1
                return
            if ids.get(rec["prediction_id"]):
                self.duplicates["feedback"] += 1
                return
            if int(rec["event_time"]) + self.max_wait_ms <= self.prediction_watermark:
                self.late["unknown"] = self.late.get("unknown", 0) + 1  # its prediction gave up on it, or never was
            else:
                self.early.add(rec["prediction_id"], {"label": float(rec["label"]), "time": int(rec["event_time"])})
            return
        w = self.windows[f"{p['version']}|{p['start']}"]
        w["ids"][rec["prediction_id"]] = 1
        w["labels"].append(float(rec["label"]))
        w["scores"].append(p["score"])

    def _advance(self) -> list[Emit]:
        pred_wm, fb_wm = self.prediction_watermark, self.feedback_watermark
        for p in self.preds.expire(fb_wm - self.max_wait_ms, inclusive=True):
            self.windows[f"{p['version']}|{p['start']}"]["missing"] += 1
        if expired := len(self.early.expire(pred_wm - self.max_wait_ms, inclusive=True)):
            self.late["unknown"] = self.late.get("unknown", 0) + expired
        horizon = min(pred_wm, fb_wm - self.max_wait_ms)  # every prediction before it is in and answered
        if horizon <= self.closed_before:
            return []
        out = self._close(horizon)
        self.closed_before = max(self.closed_before, self._start(horizon))
        return out

    def flush(self) -> list[Emit]:
        """A silent model's open windows would be emitted only when it predicts again, if ever, or be lost with its
        key's state: those before the first prediction still waiting for its feedback close now, as the clocks
        reaching them would close them. That one and later ones wait on: a model that predicts less often than the
        engine's idle eviction gets its feedback after it, and closing them would count every label late."""
        if not self.windows:
            return []
        end = max(_start_of(k) for k in self.windows) + self.window_ms
        end = min([end, *(p["start"] for p in self.preds.entries.values())])
        out = self._close(end)
        self.closed_before = max(self.closed_before, end)
        return out

    def _close(self, horizon: int) -> list[Emit]:
        """Emit and forget the windows that end by ``horizon``, oldest first."""
        out = []
        for key in sorted((k for k in self.windows if _start_of(k) + self.window_ms <= horizon),
                          key=lambda k: (_start_of(k), k)):
            version, start = key.rsplit("|", 1)
            out.append(self._emit(version, int(start), self.windows.pop(key)))
        return out

    def _emit(self, version: str, start: int, w: dict[str, Any]) -> Emit:
        rec: dict[str, Any] = {
            "event_id": derive_id(self.model_name, version, start, "quality"), "model_name": self.model_name,
            "model_version": version, "window_start": start, "window_end": start + self.window_ms,
            "predictions": w["predictions"], "labelled": len(w["labels"]), "missing_feedback": w["missing"],
            "late_events": self.late.pop(version, 0) + self.late.pop("unknown", 0),
            "error_rate": w["errors"] / w["predictions"] if w["predictions"] else 0.0,
            "throughput_per_s": w["predictions"] * 1000 / self.window_ms,
        }
        if w["latency"]:
            lat = np.asarray(w["latency"])
            rec["latency_p50_ms"], rec["latency_p99_ms"] = float(np.percentile(lat, 50)), float(np.percentile(lat, 99))
        rec.update(classification_report(np.asarray(w["labels"]), np.asarray(w["scores"])) if w["labels"] else {})
        return Emit(METRICS_TOPIC, self.model_name, METRICS_TYPE, rec)

    def snapshot(self) -> dict[str, Any]:
        return {"preds": self.preds.entries, "early": self.early.entries, "windows": self.windows, "late": self.late,
                "clock": self.clock, "closed_before": self.closed_before, **self.stalls.snapshot(),
                "duplicates": self.duplicates}

    def restore(self, state: dict[str, Any]) -> None:
        self.preds, self.early = Waiting(state["preds"]), Waiting(state["early"])
        self.windows, self.late = dict(state["windows"]), dict(state["late"])
        if "clock" in state:
            self.clock = dict(state["clock"])
        else:  # a checkpoint from before the per-input clocks: one clock for both
            self.clock = {"predictions": int(state["max_time"]), "feedback": int(state["max_time"])}
        self.closed_before = int(state["closed_before"])
        self.stalls.restore(state)
        for w in self.windows.values():  # a checkpoint from before repeats were noticed: its windows have no ids
            w.setdefault("ids", {})
        self.duplicates = dict(state.get("duplicates", {"predictions": 0, "feedback": 0}))


class QualitySettings(Section):
    """``[quality]`` / ``EDDYLINE_QUALITY_*``: windows and waits of the quality flow."""

    toml_table: ClassVar[str] = "quality"
    model_config = SettingsConfigDict(env_prefix="EDDYLINE_QUALITY_", extra="forbid")

    window_ms: int = Field(60_000, gt=0, description="Tumbling metric windows, by prediction event time.")
    max_wait_ms: int = Field(31 * 60_000, ge=0, description="Event time a prediction waits for its feedback "
                             "(the click flow calls an impression a non-click after 30 minutes).")
    allowed_lateness_ms: int = Field(5_000, ge=0, description="Out-of-order slack of each input's watermark.")
    stall_after: int = Field(10_000, gt=0, description="Predictions in a row without feedback after which "
                             "the feedback stream counts as stalled; and feedback in a row without predictions, the "
                             "other way round.")


def flow(model_name: str, window_ms: int | None = None, max_wait_ms: int | None = None,
         allowed_lateness_ms: int | None = None, stall_after: int | None = None) -> FlowSpec:
    """The quality flow: ``predictions`` and ``feedback`` in, window metrics (``sink.model_quality``) out for
    the dashboards' sink (``streams.sinks.quality``), state per model.

    What is not given comes from ``QualitySettings``.

    Parameters
    ----------
    model_name
        The model whose predictions are measured.
    window_ms, max_wait_ms, allowed_lateness_ms, stall_after
        As for ``QualityProcessor``.
    """
    settings = QualitySettings()
    params = (window_ms or settings.window_ms, settings.max_wait_ms if max_wait_ms is None else max_wait_ms,
              settings.allowed_lateness_ms if allowed_lateness_ms is None else allowed_lateness_ms,
              stall_after or settings.stall_after)

    return FlowSpec(
        name="quality",
        inputs={"predictions": PREDICTION, "feedback": FEEDBACK},
        make_processor=lambda key: QualityProcessor(key, *params),
        key=lambda ev: ev.record["model_name"],
    )
