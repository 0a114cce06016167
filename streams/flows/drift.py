"""The drift flow: data drift on each feature of a model's predictions, concept drift on its errors.

One ``DriftProcessor`` per model (predictions and feedback are keyed by model name). Data drift: every
numeric feature a prediction carries feeds a ``FeatureDriftMonitor`` (a fixed reference sample against
a sliding window; PSI and a two-sample KS test), checked every ``check_every`` predictions; after a
drift the monitor takes a new reference, so the next alarm is about the next change. Concept drift:
predictions are joined with their feedback by prediction id (whichever comes first waits, up to
``max_wait_ms`` of event time; after that it is counted as unmatched, not dropped silently), each
joined pair gives a 0/1 error, and the error stream feeds a concept-drift detector (ours by default:
CUSUM + ADWIN; ``adwin`` and ``page_hinkley`` are river's).

A model without feedback (no ground truth, or a labeller down for a day) would keep every prediction
waiting: as in the quality flow, after ``stall_after`` predictions in a row without any feedback the
feedback stream counts as stalled, its clock is brought up to the predictions', and waiting predictions
give up on it. The other way round too: after ``stall_after`` feedback events in a row without a prediction
(a model retired while its labels still come, a labeller writing under a name no model predicts for), the
predictions stream counts as stalled and waiting feedback gives up on its prediction, where it waited for ever.
Delivery is at least once, so a prediction or feedback may come twice (a producer's replay): the ids of joined
predictions are remembered while a repeat could still join, and repeats are counted (``duplicates``), never joined
or fed to a monitor again. A NaN or infinite feature value (refused by validation, so only from inputs that skip
it) is counted in ``bad_values`` and left out.

Which features: by default, for a model listed in ``MODEL_FEATURES``, only those its module says are
worth watching (for the click model: the smoothed rates and ratings, not the log counts, which grow with
the stream's age and would raise data drift again and again); for any other model, all of them.
``[drift] features`` / ``EDDYLINE_DRIFT_FEATURES`` (a JSON list) chooses for every model. At most
``MAX_MONITORED`` features are watched per model (the first seen): a model with sparse or one-hot features
would otherwise grow a monitor, and state, per name; values of the others are counted in ``unmonitored``.

Each detection is a ``drift`` event and an ``alerts`` record. Alerts follow incidents: the first drift
of a subject (a feature, or the model's errors) opens one, a drift while it is open updates it, and
``resolve_after`` quiet checks in a row resolve it. Ids derive from the input event that caused them (the alert key
from the drift that opened the incident), so a replay repeats them and sinks drop the repeats. A model that stops
predicting (retired) has no more checks, so its open incidents stay open until someone resolves them: resolving
them when its key leaves memory for being idle would also resolve, and page again, the drift of a model that
predicts less often than ``[runtime] idle_evict_s`` (a nightly batch).
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np
from pydantic import Field, field_validator
from pydantic_settings import SettingsConfigDict

from connectors.config import Section
from models.drift import FeatureDriftMonitor, make_detector
from models.drift.settle import MIN_SETTLE, SETTLE
from models.online import DRIFT_FEATURES
from schemas import ALERT, DRIFT, FEEDBACK, PREDICTION, derive_id
from streams.flows.names import MODEL_NAME as CLICK_MODEL
from streams.flows.waiting import Stalls, Waiting
from streams.processor import Emit, Event, FlowSpec, Processor

FLOW = "drift"
PRODUCER = "eddyline/drift"
DRIFT_TOPIC = "drift"
ALERTS_TOPIC = "alerts"
CONCEPT = "concept"  # the subject name of the error stream
MAX_MONITORED = 256  # features watched per model when none are named
MODEL_FEATURES: dict[str, tuple[str, ...]] = {CLICK_MODEL: DRIFT_FEATURES}  # model -> features watched by default


class DriftSettings(Section):
    """``[drift]`` / ``EDDYLINE_DRIFT_*``: what the drift flow watches and how sure it must be."""

    toml_table: ClassVar[str] = "drift"
    model_config = SettingsConfigDict(env_prefix="EDDYLINE_DRIFT_", extra="forbid")

    detector: str = Field("ours", description="Concept-drift detector on the error stream: ours, adwin, page_hinkley.")
    settle: int = Field(SETTLE, ge=0, description="Warm-up of the concept-drift detector, whichever it is: no concept "
                        "drift counts until a window of this many errors has settled (its halves agree), because a "
                        "fresh model's error rate climbs while it warms up. 0 turns the warm-up off; else at least "
                        f"{MIN_SETTLE}.")
    features: list[str] | None = Field(None, description="Features to watch for data drift, for every model "
                                                         "(default: each model's own choice, else all).")
    reference_size: int = Field(2000, gt=0, description="Values in a feature's reference sample.")
    window_size: int = Field(1000, gt=0, description="Latest values compared with the reference.")
    check_every: int = Field(500, gt=0, description="Values between two data-drift checks of a feature.")
    psi_threshold: float = Field(0.25, gt=0, description="Population stability index that counts as drift.")
    p_threshold: float = Field(1e-4, ge=0, description="KS p-value under which it counts as drift.")
    max_wait_ms: int = Field(3_600_000, ge=0, description="Event time a prediction waits for its feedback.")
    stall_after: int = Field(10_000, gt=0, description="Predictions in a row without feedback after which the "
                             "feedback stream counts as stalled and waiting predictions give up on it; and feedback "
                             "in a row without predictions, the other way round.")
    resolve_after: int = Field(10, gt=0, description="Quiet checks in a row that resolve an incident.")

    @field_validator("settle")
    @classmethod
    def _settle_judgeable(cls, value: int) -> int:
        if 0 < value < MIN_SETTLE:
            raise ValueError(f"a warm-up window needs at least {MIN_SETTLE} values to compare its halves: "
                             f"give 0 (no warm-up) or {MIN_SETTLE} or more (default {SETTLE})")
        return value

    def processor_params(self) -> dict[str, Any]:
        """``DriftProcessor`` keywords, ``settle`` among the detector's: every detector gets the warm-up."""
        params = self.model_dump(exclude={"detector", "features", "settle"})
        return params | {"detector_params": {"settle": self.settle}}


class DriftProcessor(Processor):
    """Data drift on each watched feature of one model's predictions, and concept drift on its errors.

    Parameters
    ----------
    model_name
        The model (the flow's state key).
    detector
        The concept-drift detector on the error stream, by ``models.drift.make_detector`` name.
    detector_params
        Passed to the detector.
    reference_size, window_size, psi_threshold, p_threshold
        Of each feature's ``FeatureDriftMonitor``.
    check_every
        Values of a feature (or errors) between two checks; at least 1.
    features
        The features to watch; None for the model's own choice (``MODEL_FEATURES``), else all.
    max_wait_ms
        Event time a prediction waits for its feedback (and feedback for its prediction) before it
        counts as unmatched.
    stall_after
        Predictions in a row without any feedback after which the feedback stream counts as stalled; and
        feedback in a row without any prediction, the predictions stream.
    resolve_after
        Quiet checks in a row that resolve an open incident; at least 1.
    threshold
        A prediction's score at or above it means it predicted the positive class; the error is whether
        that disagrees with the label.
    """

    def __init__(
        self,
        model_name: str,
        detector: str = "ours",
        detector_params: dict[str, Any] | None = None,
        reference_size: int = 2000,
        window_size: int = 1000,
        check_every: int = 500,
        psi_threshold: float = 0.25,
        p_threshold: float = 1e-4,
        features: list[str] | None = None,
        max_wait_ms: int = 3_600_000,
        resolve_after: int = 10,
        threshold: float = 0.5,
        stall_after: int = 10_000,
    ) -> None:
        if check_every < 1 or resolve_after < 1 or stall_after < 1:
            raise ValueError("check_every, resolve_after and stall_after must be at least 1")
        self.model_name, self.detector_name = model_name, detector
        self.detector_params = dict(detector_params or {})
        self.monitor_params = {"reference_size": reference_size, "window_size": window_size,
                               "psi_threshold": psi_threshold, "p_threshold": p_threshold}
        if features is None and model_name in MODEL_FEATURES:
            features = list(MODEL_FEATURES[model_name])
        self.check_every, self.features = check_every, list(features) if features is not None else None
        self.max_wait_ms, self.resolve_after, self.threshold = max_wait_ms, resolve_after, threshold
        self.stall_after = stall_after
        self.monitors: dict[str, FeatureDriftMonitor] = {}
        self.times: dict[str, deque[int]] = {}  # per feature: event times of the latest values
        self.seen: dict[str, int] = {}  # per subject: values since the last check
        self.detector = make_detector(detector, **self.detector_params)
        self.errors_since = 0  # errors fed to the detector since it last started afresh
        self.errors_start = self.errors_end = -1  # the event-time span they cover (inputs arrive out of order)
        self.errors_sum = 0.0  # and their sum: the error rate the detector compared against
        self.last_errors: deque[float] = deque(maxlen=100)  # the statistic of a concept drift: the recent error rate
        self.preds = Waiting()  # prediction id -> score and time, waiting for feedback
        self.early = Waiting()  # feedback waiting for its prediction
        self.incidents: dict[str, dict[str, Any]] = {}  # subject -> open incident
        self.max_time = 0
        self.stream_time = {"predictions": 0, "feedback": 0}  # how far each input has come, in event time
        self.unmatched = {"predictions": 0, "feedback": 0}
        self.stalls = Stalls(stall_after, never=0)
        self.joined = Waiting(time_of=int)  # prediction id -> its time, once joined: a repeat is not joined again
        self.duplicates = {"predictions": 0, "feedback": 0}
        self.bad_values = 0  # non-finite feature values, left out of data drift
        self.unmonitored = 0  # values of features beyond MAX_MONITORED, left out of data drift

    def params(self) -> dict[str, Any]:
        return {"model_name": self.model_name, "detector": self.detector_name,
                "detector_params": self.detector_params, **self.monitor_params, "check_every": self.check_every,
                "features": self.features, "max_wait_ms": self.max_wait_ms, "resolve_after": self.resolve_after,
                "threshold": self.threshold, "stall_after": self.stall_after}

    def process(self, events: Sequence[Event]) -> list[Emit]:
        out: list[Emit] = []
        errors: list[tuple[float, int, str]] = []  # (error, event time, feedback event id)
        for ev in events:
            rec = ev.record
            t = int(rec["event_time"])
            self.max_time = max(self.max_time, t)
            side = "feedback" if "prediction_id" in rec else "predictions"
            self.stream_time[side] = max(self.stream_time[side], t)
            self.stalls.heard(side, self.stream_time)
            if side == "feedback":
                joined = self._feedback(rec)
            else:
                if rec["event_id"] in self.preds or rec["event_id"] in self.joined:
                    self.duplicates["predictions"] += 1
                    continue
                out.extend(self._prediction(rec))
                joined = self._match_early(rec)
            if joined is not None:
                errors.append(joined)
        if errors:
            out.extend(self._concept(errors))
        self._expire()
        return out

    # data drift

    def _prediction(self, rec: dict[str, Any]) -> list[Emit]:
        if rec.get("error"):
            return []
        out: list[Emit] = []
        t = int(rec["event_time"])
        for name, value in rec.get("features", {}).items():
            if self.features is not None and name not in self.features:
                continue
            if not math.isfinite(value):  # one NaN in the reference sample would blind this feature's checks for good
                self.bad_values += 1
                continue
            mon = self.monitors.get(name)
            if mon is None:
                if len(self.monitors) >= MAX_MONITORED:
                    self.unmonitored += 1
                    continue
                mon = self.monitors[name] = FeatureDriftMonitor(**self.monitor_params)
                self.times[name] = deque(maxlen=self.monitor_params["window_size"])
            mon.update(np.array([float(value)]))
            self.times[name].append(t)  # once the monitor is ready: the times of its window
            self.seen[name] = self.seen.get(name, 0) + 1
            if self.seen[name] < self.check_every or not mon.ready:
                continue
            self.seen[name] = 0
            result = mon.check()
            if result is not None and result.drifted:
                win = self.times[name]
                out.extend(self._detected(
                    name, "DATA", rec["event_id"], t, statistic=result.psi,
                    threshold=self.monitor_params["psi_threshold"], window=(min(win), max(win)),
                    sizes=(result.reference_size, result.window_size),
                    details={"psi": f"{result.psi:.4f}", "ks": f"{result.ks:.4f}", "p_value": f"{result.p_value:.3g}"}))
                self.monitors[name] = FeatureDriftMonitor(**self.monitor_params)
                self.times[name].clear()
            else:
                out.extend(self._quiet(name, t, rec["event_id"]))
        return out

    # concept drift

    def _error(self, score: float, label: float) -> float:
        return float((score >= self.threshold) != (label >= 0.5))

    def _match_early(self, rec: dict[str, Any]) -> tuple[float, int, str] | None:
        if rec.get("error"):
            return None
        fb = self.early.pop(rec["event_id"])
        if fb is None:
            self.preds.add(rec["event_id"], {"score": float(rec["score"]), "time": int(rec["event_time"])})
            return None
        self.joined.add(rec["event_id"], int(rec["event_time"]))
        return self._error(float(rec["score"]), fb["label"]), fb["time"], fb["id"]

    def _feedback(self, rec: dict[str, Any]) -> tuple[float, int, str] | None:
        p = self.preds.pop(rec["prediction_id"])
        if p is None:
            if rec["prediction_id"] in self.joined:
                self.duplicates["feedback"] += 1
                return None
            self.early.add(rec["prediction_id"], {"label": float(rec["label"]), "time": int(rec["event_time"]),
                                                  "id": rec["event_id"]})
            return None
        self.joined.add(rec["prediction_id"], p["time"])
        return self._error(p["score"], float(rec["label"])), int(rec["event_time"]), rec["event_id"]

    def _concept(self, errors: list[tuple[float, int, str]]) -> list[Emit]:
        out: list[Emit] = []
        values = np.array([e[0] for e in errors])
        hits = {int(i) for i in self.detector.update(values)}
        for i, (err, t, fid) in enumerate(errors):
            self.last_errors.append(err)
            if self.errors_since == 0:
                self.errors_start, self.errors_end, self.errors_sum = t, t, 0.0
            self.errors_start, self.errors_end = min(self.errors_start, t), max(self.errors_end, t)
            self.errors_since += 1
            self.errors_sum += err
            if i in hits:
                rate = float(np.mean(self.last_errors))
                out.extend(self._detected(
                    CONCEPT, "CONCEPT", fid, t, statistic=rate, threshold=self.errors_sum / self.errors_since,
                    window=(self.errors_start, self.errors_end), sizes=(0, self.errors_since),
                    details={"error_rate_last_100": f"{rate:.4f}", "detector_statistic": f"{self.detector.statistic:.4g}",
                             "fired": str(getattr(self.detector, "last_fired", None) or self.detector_name)}))
                self.errors_since = 0
                continue
            self.seen[CONCEPT] = self.seen.get(CONCEPT, 0) + 1
            if self.seen[CONCEPT] >= self.check_every:
                self.seen[CONCEPT] = 0
                out.extend(self._quiet(CONCEPT, t, fid))
        return out

    def _expire(self) -> None:
        """A prediction gives up on its feedback once the feedback stream is ``max_wait_ms`` past it, and
        the other way round: the two topics are read at their own pace, so neither's clock rules alone. A joined
        id is kept until both clocks are past it by the wait: a repeat after that would have given up anyway."""
        feedback_time = self.stalls.reach("feedback", self.stream_time)
        predictions_time = self.stalls.reach("predictions", self.stream_time)
        self.unmatched["predictions"] += len(self.preds.expire(feedback_time - self.max_wait_ms, inclusive=False))
        self.unmatched["feedback"] += len(self.early.expire(predictions_time - self.max_wait_ms, inclusive=False))
        self.joined.expire(min(predictions_time, feedback_time) - self.max_wait_ms, inclusive=False)

    # events and incidents

    def _detected(self, subject: str, kind: str, source_id: str, t: int, *, statistic: float, threshold: float,
                  window: tuple[int, int], sizes: tuple[int, int], details: dict[str, str]) -> list[Emit]:
        drift_id = derive_id(DRIFT_TOPIC, self.model_name, subject, source_id)
        rec = {
            "event_id": drift_id, "event_time": t, "producer": PRODUCER, "model_name": self.model_name,
            "feature": None if kind == "CONCEPT" else subject, "kind": kind,
            "detector": self.detector_name if kind == "CONCEPT" else "psi+ks",
            "statistic": float(statistic), "threshold": float(threshold),
            "window_start": int(window[0]), "window_end": int(window[1]),
            "reference_size": int(sizes[0]), "window_size": int(sizes[1]),
        }
        inc = self.incidents.get(subject)
        status = "UPDATED" if inc is not None else "OPENED"
        if inc is None:
            inc = self.incidents[subject] = {"key": derive_id("alert", drift_id), "opened_at": t, "count": 0}
        inc["count"] += 1
        inc["quiet"] = 0
        what = "its errors (concept drift)" if kind == "CONCEPT" else f"feature {subject!r} (data drift)"
        alert = self._alert(inc, status, t, f"Drift in {self.model_name}: {what}, {rec['detector']} "
                            f"statistic {statistic:.3g}", statistic, kind,
                            {**details, "drift_event_id": drift_id, "kind": kind, "subject": subject})
        return [Emit(DRIFT_TOPIC, self.model_name, DRIFT, rec), alert]

    def _quiet(self, subject: str, t: int, source_id: str) -> list[Emit]:
        inc = self.incidents.get(subject)
        if inc is None:
            return []
        inc["quiet"] = inc.get("quiet", 0) + 1
        if inc["quiet"] < self.resolve_after:
            return []
        return [self._resolve(subject, t, source_id, f"No more drift in {self.model_name} ({subject}) after "
                              f"{inc['count']} detection(s)")]

    def _resolve(self, subject: str, t: int, cause: str, summary: str) -> Emit:
        inc = self.incidents.pop(subject)
        kind = "CONCEPT" if subject == CONCEPT else "DATA"
        return self._alert(inc, "RESOLVED", t, summary, None, kind, {"subject": subject, "kind": kind,
                                                                     "resolved_by": cause})

    def _alert(self, inc: dict[str, Any], status: str, t: int, summary: str, value: float | None, kind: str,
               details: dict[str, str]) -> Emit:
        rec = {
            "event_id": derive_id(ALERTS_TOPIC, inc["key"], status, inc["count"]), "event_time": t,
            "producer": PRODUCER, "alert_key": inc["key"], "status": status,
            "severity": "ERROR" if kind == "CONCEPT" else "WARNING", "source": FLOW, "entity": self.model_name,
            "summary": summary, "value": value,
            "details": {**details, "model_name": self.model_name, "opened_at_ms": str(inc["opened_at"])},
        }
        return Emit(ALERTS_TOPIC, inc["key"], ALERT, rec)

    def snapshot(self) -> dict[str, Any]:
        return {
            "monitors": {k: m.snapshot() for k, m in self.monitors.items()},
            "times": {k: list(v) for k, v in self.times.items()}, "seen": self.seen,
            "detector": self.detector.snapshot(), "errors_since": self.errors_since,
            "errors_start": self.errors_start, "errors_end": self.errors_end, "last_errors": list(self.last_errors),
            "errors_sum": self.errors_sum, "preds": self.preds.entries, "early": self.early.entries,
            "incidents": self.incidents, "max_time": self.max_time, "stream_time": self.stream_time,
            "unmatched": self.unmatched,
            "unanswered_run": self.stalls.unanswered_run, "stalled_at": self.stalls.stalled_at,
            "joined": self.joined.entries,  # between the stall fields, where states have always had it
            "unpredicted_run": self.stalls.unpredicted_run,
            "predictions_stalled_at": self.stalls.predictions_stalled_at,
            "duplicates": self.duplicates, "bad_values": self.bad_values, "unmonitored": self.unmonitored,
        }

    def restore(self, state: dict[str, Any]) -> None:
        for name, s in state["monitors"].items():
            mon = self.monitors[name] = FeatureDriftMonitor(**self.monitor_params)
            mon.restore(s)
            self.times[name] = deque(state["times"][name], maxlen=self.monitor_params["window_size"])
        self.seen = dict(state["seen"])
        self.detector.restore(state["detector"])
        self.errors_since, self.errors_start = int(state["errors_since"]), int(state["errors_start"])
        self.errors_end = int(state.get("errors_end", self.errors_start))
        self.last_errors.extend(state["last_errors"])
        self.errors_sum = float(state["errors_sum"])
        self.preds, self.early = Waiting(state["preds"]), Waiting(state["early"])
        self.incidents, self.max_time = dict(state["incidents"]), int(state["max_time"])
        self.stream_time = dict(state["stream_time"])
        self.unmatched = dict(state["unmatched"])
        # fields a state from before stalls and repeats were noticed lacks
        self.stalls.restore(state)
        self.joined = Waiting({str(k): int(v) for k, v in state.get("joined", {}).items()}, time_of=int)
        self.duplicates = dict(state.get("duplicates", {"predictions": 0, "feedback": 0}))
        self.bad_values = int(state.get("bad_values", 0))
        self.unmonitored = int(state.get("unmonitored", 0))  # older snapshots: none counted


def flow(detector: str | None = None, features: list[str] | None = None, **params: Any) -> FlowSpec:
    """The drift flow: ``predictions`` and ``feedback`` in, ``drift`` and ``alerts`` out, state per model.

    Parameters
    ----------
    detector
        The concept-drift detector (default: ``[drift] detector``).
    features
        The features to watch for every model (default: ``[drift] features``).
    params
        The rest of ``DriftProcessor``'s settings (window sizes, thresholds, waits); what is not given
        comes from ``DriftSettings``.
    """
    settings = DriftSettings()
    chosen = detector or settings.detector
    watched = features if features is not None else settings.features
    merged = settings.processor_params() | params
    return FlowSpec(
        name=FLOW,
        inputs={"predictions": PREDICTION, "feedback": FEEDBACK},
        outputs={DRIFT_TOPIC: DRIFT, ALERTS_TOPIC: ALERT},
        make_processor=lambda model: DriftProcessor(model, chosen, features=watched, **merged),
        key=lambda ev: ev.record["model_name"],
    )
