"""When a stream of anomaly scores becomes an incident, and when the incident ends.

One ``AlertPolicy`` watches one series. It opens an incident when a score reaches the threshold, keeps
it open while the signal flaps (hysteresis: it resolves only after ``resolve_after`` normal readings in
a row), escalates severity with the peak score, and never has two incidents open for one series. The
incident key derives from the reading that opened it, so a replay after a crash re-opens the *same*
incident and the sinks (PagerDuty's dedup key, the ``alerts`` topic's event id) drop the repeat.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from schemas import derive_id

SEVERITIES = ("INFO", "WARNING", "ERROR", "CRITICAL")


@dataclass(frozen=True)
class PolicyConfig:
    """When anomaly scores open, escalate and resolve an incident; immutable, so a fleet's policies share one.

    Parameters
    ----------
    threshold
        A score at or above it is anomalous (the sensor flow takes the detector's own threshold).
    warmup
        Readings a series must have seen before it may open an incident: detectors are still learning.
    resolve_after
        Normal readings in a row before an open incident resolves (hysteresis against flapping).
    error_at
        Peak score from which the severity is ``ERROR`` (below: ``WARNING``).
    critical_at
        Peak score from which the severity is ``CRITICAL``.
    """

    threshold: float = 0.5
    warmup: int = 600  # readings a series must have before it may page anyone: detectors are still learning
    resolve_after: int = 30  # consecutive normal readings before an incident resolves
    error_at: float = 0.9  # peak score from which severity is ERROR
    critical_at: float = 0.99


@dataclass
class Transition:
    """An incident opened, escalated or resolved at one reading.

    Parameters
    ----------
    status
        ``OPENED``, ``UPDATED`` (severity escalated) or ``RESOLVED``.
    incident
        The incident key, derived from the reading that opened it (stable across replays).
    index
        The position of the reading in the batch passed to ``AlertPolicy.update``.
    severity
        ``WARNING``, ``ERROR`` or ``CRITICAL``.
    peak
        The highest score of the incident so far.
    opened_at
        Event time of the opening reading, ms.
    """

    status: str  # OPENED, UPDATED or RESOLVED
    incident: str
    index: int  # position of the reading in the batch
    severity: str
    peak: float
    opened_at: int  # event time of the opening reading, ms


class AlertPolicy:
    """Turns one series' anomaly scores into incidents: at most one open at a time, resolved with hysteresis.

    Parameters
    ----------
    config
        Thresholds, warm-up and hysteresis; ``PolicyConfig()`` by default.

    Examples
    --------
    >>> import numpy as np
    >>> from streams.flows.alert_policy import AlertPolicy, PolicyConfig
    >>> policy = AlertPolicy(PolicyConfig(warmup=0, resolve_after=2))
    >>> scores = np.array([0.1, 0.95, 0.99, 0.2, 0.1, 0.1])
    >>> for t in policy.update(scores, np.arange(6) * 1000, origin="batch-1"):
    ...     print(t.status, t.index, t.severity)
    OPENED 1 ERROR
    UPDATED 2 CRITICAL
    RESOLVED 4 CRITICAL
    """

    def __init__(self, config: PolicyConfig | None = None) -> None:
        self.config = config or PolicyConfig()
        self.incident: str | None = None
        self.opened_at = 0
        self.peak = 0.0
        self.severity = "WARNING"
        self.normal_run = 0
        self.seen = 0

    def _severity(self, peak: float) -> str:
        if peak >= self.config.critical_at:
            return "CRITICAL"
        if peak >= self.config.error_at:
            return "ERROR"
        return "WARNING"

    def update(self, scores: np.ndarray, timestamps: np.ndarray, origin: str,
               hot: int | None = None) -> list[Transition]:
        """Feed a batch of scores; ``origin`` identifies the batch (its event id) for incident keys.

        Parameters
        ----------
        scores
            The series' anomaly scores, in order.
        timestamps
            Their event times, ms.
        origin
            The input's identity; an incident's key derives from it and the reading's index, so a replay
            opens the same incident.
        hot
            How many scores are at or above the threshold, when the caller has counted them already: with no
            incident open, 0 returns at once (most batches), without looking at the scores.
        """
        cfg = self.config
        out: list[Transition] = []
        start = max(0, min(len(scores), cfg.warmup - self.seen))  # readings still inside the warm-up
        self.seen += len(scores)
        if self.incident is None and hot == 0:
            return out
        is_hot = scores >= cfg.threshold
        if self.incident is None and not is_hot[start:].any():
            return out
        for i in range(start, len(scores)):
            s = float(scores[i])
            if self.incident is None:
                if is_hot[i]:
                    self.incident = derive_id("incident", origin, i)
                    self.opened_at = int(timestamps[i])
                    self.peak = s
                    self.severity = self._severity(s)
                    self.normal_run = 0
                    out.append(Transition("OPENED", self.incident, i, self.severity, s, self.opened_at))
                continue
            if is_hot[i]:
                self.normal_run = 0
                if s > self.peak:
                    self.peak = s
                    sev = self._severity(s)
                    if SEVERITIES.index(sev) > SEVERITIES.index(self.severity):
                        self.severity = sev
                        out.append(Transition("UPDATED", self.incident, i, sev, s, self.opened_at))
            else:
                self.normal_run += 1
                if self.normal_run >= cfg.resolve_after:
                    out.append(Transition("RESOLVED", self.incident, i, self.severity, self.peak, self.opened_at))
                    self.incident = None
                    self.normal_run = 0
        return out

    def snapshot(self) -> dict[str, Any]:
        return {
            "incident": self.incident,
            "opened_at": self.opened_at,
            "peak": self.peak,
            "severity": self.severity,
            "normal_run": self.normal_run,
            "seen": self.seen,
        }

    def restore(self, state: dict[str, Any]) -> None:
        self.incident = state["incident"]
        self.opened_at = state["opened_at"]
        self.peak = state["peak"]
        self.severity = state["severity"]
        self.normal_run = state["normal_run"]
        self.seen = state["seen"]

    def params(self) -> dict[str, Any]:
        return asdict(self.config)
