"""The sensor anomaly flow: sensor batches in; anomaly scores and alerts out.

One ``SensorAnomalyProcessor`` per device holds a detector and an alert policy per sensor. Each batch of
readings is scored as arrays (the detector scores before it learns), emitted as one ``scores.anomaly``
event, and fed to the policy, whose transitions become ``alerts`` events; an alert that opens or escalates
carries why it fired (``models.anomaly.explain``: the rule, the expected value and band, the recent
readings). Output ids derive from the input's, so replays after a crash repeat them exactly and sinks
drop the repeats.

A sensor silent for ``forget_after_s`` of the device's event time is forgotten (detector and policy), so that
names that change (per boot, a firmware update, a bad mapping) do not grow a device's state without bound; an
incident still open on it is resolved as it goes. Only silence while the device itself was reporting counts: a
jump between its batches far off their usual spacing (the device off for hours or a week, its clock set back, or
put years ahead by a glitch) counts as that usual spacing for every sensor, as if the batch had come on time, so a
device back from downtime keeps its sensors while one renamed is still forgotten after ``forget_after_s`` of the
device's reporting. A restored device takes the flow's current settings: the
detector's state is kept only if the detector and its parameters are those it was saved with.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict
from functools import lru_cache
from typing import Any

import numpy as np

from models.anomaly import DEFAULT_DETECTOR, make_detector
from models.anomaly.base import AnomalyDetector
from models.anomaly.explain import Explanation, score_explained
from connectors.alert_explanation import RULE_NAMES
from schemas import ALERT, ANOMALY_SCORE, SENSOR_BATCH, derive_id
from schemas.scores import pack_series
from streams.flows.alert_policy import AlertPolicy, PolicyConfig, Transition
from streams.processor import Emit, Event, FlowSpec, Processor
from streams.sequence import Sequencers
from streams.sinks.sensor import series_metrics

SOURCE_TOPIC = "sensor.readings"
SCORES_TOPIC = "scores.anomaly"
ALERTS_TOPIC = "alerts"
FLOW = "sensor-anomaly"
PRODUCER = "eddyline/sensor-anomaly"
REORDER = 8  # batches of one device held while waiting for a missing sequence number
FORGET_AFTER_S = 86_400.0  # a sensor silent a day of its device's event time is forgotten
JUMP_SPACINGS = 4  # a gap between a device's batches over this many usual spacings is downtime, nobody's silence
MIN_DOWNTIME_MS = 3_600_000  # nor one under an hour (a device publishing each sensor apart has uneven gaps)
MIN_SPACING_MS = 60_000  # downtime counts as at least this much silence


@lru_cache(maxsize=64)
def _policy_config(threshold: float, params: tuple[tuple[str, Any], ...]) -> PolicyConfig:
    """One shared config per threshold and policy: 100,000 devices' series hold one object, not 300,000 copies
    for the garbage collector to scan."""
    return PolicyConfig(**{"threshold": threshold, **dict(params)})


class SensorAnomalyProcessor(Processor):
    """One device's anomaly scoring: a detector and an alert policy per sensor, made when the sensor first reports.

    Each ``sensor_batch`` event becomes one ``scores.anomaly`` event (a score per reading, scored before the
    detector learns the reading), ``alerts`` events for the incidents its policies open, escalate or resolve,
    and ``sink.sensor_metrics`` emits for the dashboards. Batches are applied in ``seq`` order, each producer's
    numbers apart (``streams.sequence``): a repeat is dropped for good, a gap waited for in a small reorder buffer.

    Parameters
    ----------
    device_id
        The device this processor scores (the flow's state key).
    detector
        An anomaly detector name from ``models.anomaly.DETECTORS``.
    detector_params
        Passed to the detector's constructor, for every sensor.
    policy
        ``PolicyConfig`` fields other than ``threshold`` (which comes from the detector).
    packed
        Write scores packed (float32 bytes, ``anomaly_score`` v2) instead of one Avro double each.
    forget_after_s
        A sensor silent this long while the device kept reporting (event time; a sensor is heard at its batch's
        newest reading, so one sensor's own clock cannot make the others look silent; downtime or a clock jump
        counts as the device's usual spacing between batches) is forgotten, its open incident resolved;
        None: never.

    Examples
    --------
    >>> from itertools import islice
    >>> from streams.flows.sensor_anomaly import SensorAnomalyProcessor
    >>> from streams.processor import Event
    >>> from streams.producers.simulator import SensorSimulator
    >>> batch = next(iter(SensorSimulator(devices=1, readings_per_message=20)))
    >>> processor = SensorAnomalyProcessor(batch["device_id"])
    >>> emits = processor.process([Event("sensor.readings", batch["device_id"], batch)])
    >>> [e.topic for e in emits]
    ['scores.anomaly', 'sink.sensor_metrics', 'sink.sensor_metrics', 'sink.sensor_metrics']
    >>> [len(s["scores"]) for s in emits[0].record["series"]]
    [20, 20, 20]
    >>> processor.process([Event("sensor.readings", batch["device_id"], batch)])  # redelivered: dropped
    []
    """

    state_version = 2  # 1 (pickled, recent event ids) is refused: the device relearns

    def __init__(
        self,
        device_id: str,
        detector: str = DEFAULT_DETECTOR,
        detector_params: dict[str, Any] | None = None,
        policy: dict[str, Any] | None = None,
        packed: bool = False,
        forget_after_s: float | None = FORGET_AFTER_S,
    ) -> None:
        self.device_id = device_id
        self.packed = packed
        self.detector_name = detector
        self.detector_params = dict(detector_params or {})
        self.policy_params = dict(policy or {})
        self.forget_after_s = forget_after_s
        self._forget_ms = None if forget_after_s is None else int(forget_after_s * 1000)
        self.detectors: dict[str, AnomalyDetector] = {}
        self.policies: dict[str, AlertPolicy] = {}
        self.last_seen: dict[str, int] = {}  # sensor -> its last reading's event time less later downtime, ms
        self.newest: int | None = None  # the newest reading of the device's latest batch, ms
        self.spacing: int | None = None  # the usual gap between the newest readings of its batches, ms
        self.sequence = Sequencers(REORDER)

    def _series_state(self, sensor: str) -> tuple[AnomalyDetector, AlertPolicy]:
        det = self.detectors.get(sensor)
        if det is None:
            det = self.detectors[sensor] = make_detector(self.detector_name, **self.detector_params)
            self.policies[sensor] = AlertPolicy(_policy_config(det.threshold, tuple(self.policy_params.items())))
        return det, self.policies[sensor]

    @property
    def duplicates(self) -> int:
        return self.sequence.counts.dropped

    def process(self, events: Sequence[Event]) -> list[Emit]:
        out: list[Emit] = []
        before = dict(vars(self.sequence.counts))
        apply = lambda rec: out.extend(self._score(rec))  # noqa: E731
        for event in events:
            self.sequence.offer(event.record, apply)
        self.sequence.count_since(FLOW, before)
        return out

    def flush(self) -> list[Emit]:
        out: list[Emit] = []
        before = dict(vars(self.sequence.counts))
        self.sequence.flush(lambda rec: out.extend(self._score(rec)))
        self.sequence.count_since(FLOW, before)
        return out

    def _score(self, rec: dict[str, Any]) -> list[Emit]:
        source_id = rec["event_id"]
        scored_series = []
        alerts: list[Emit] = []
        metrics: list[Emit] = []
        threshold = 0.5
        newest = None
        heard: list[str] = []
        for s in rec["series"]:
            sensor = s["sensor"]
            values = np.asarray(s["values"], dtype=np.float64)  # arrays as the flow decodes them; lists converted
            stamps = np.asarray(s["timestamps"], dtype=np.int64)
            if not len(values):  # refused on the way in (schemas.validation); nothing to score if one gets here
                continue
            det, policy = self._series_state(sensor)
            threshold = det.threshold
            heard.append(sensor)
            newest = int(stamps[-1]) if newest is None else max(newest, int(stamps[-1]))
            scores, why = score_explained(det, values, stamps)
            scored_series.append(pack_series(sensor, stamps, scores) if self.packed else
                                 {"sensor": sensor, "timestamps": stamps, "scores": scores,
                                  "packed_timestamps": None, "packed_scores": None})
            summary = series_metrics(self.device_id, sensor, values, stamps, scores, threshold)
            metrics.append(summary)
            for t in policy.update(scores, stamps, f"{source_id}/{sensor}", hot=summary.record["anomalous"]):
                explanation = None if t.status == "RESOLVED" else why.at(t.index)
                alerts.append(self._alert(rec, sensor, t, float(values[t.index]), int(stamps[t.index]),
                                          explanation))
        if newest is not None:
            self._skip_downtime(newest)
        # heard at the device's time, not its own: a sensor with a clock of its own (hours ahead) would make the
        # batch's others look silent; as the clock reads now, so a clock set back takes it back
        self.last_seen.update(dict.fromkeys(heard, newest))
        if self._forget_ms is not None and newest is not None and len(self.detectors) > len(rec["series"]):
            alerts.extend(self._forget_silent(rec, newest))  # else all reported now
        score_event = {
            "event_id": derive_id(SCORES_TOPIC, source_id),
            "event_time": rec["event_time"],
            "producer": PRODUCER,
            "source_event_id": source_id,
            "device_id": self.device_id,
            "model": self.detector_name,
            "threshold": threshold,
            "series": scored_series,
        }
        return [Emit(SCORES_TOPIC, self.device_id, ANOMALY_SCORE, score_event), *alerts, *metrics]

    def _skip_downtime(self, newest: int) -> None:
        """Note the device's batch whose newest reading is ``newest``, taking a jump from the batch before out of
        every sensor's silence, the way the fleet flow takes out an outage.

        A gap over ``JUMP_SPACINGS`` usual spacings and over ``MIN_DOWNTIME_MS`` (the device off, even for less than
        ``forget_after_s``), or back (its clock set back, or back from a glitch ahead), counts as one usual spacing,
        at least ``MIN_SPACING_MS``: the device's downtime is no sensor's silence, yet every batch counts, so a
        renamed sensor is still forgotten on a device that is off every night. The usual spacing follows the gaps,
        each capped at the downtime bound, so one outage hardly moves it while a slower cadence is learnt within a
        few batches."""
        if self.newest is not None:
            gap, spacing = newest - self.newest, self.spacing or 0
            bound = max(JUMP_SPACINGS * spacing, MIN_DOWNTIME_MS)
            if not 0 <= gap <= bound:
                usual = max(spacing, MIN_SPACING_MS)
                for sensor in self.last_seen:
                    self.last_seen[sensor] += gap - usual
            seen = min(max(gap, 0), bound)
            self.spacing = seen if self.spacing is None else spacing + (seen - spacing) // 8
        self.newest = newest

    def _forget_silent(self, rec: dict[str, Any], now: int) -> list[Emit]:
        """Forget the sensors silent ``forget_after_s`` behind ``now``, this batch's newest reading, while the device
        reported (event time, so a replay forgets the same ones at the same batch), resolving their open incidents:
        a sensor renamed never reports again under its old name, and its incident would stay open for good. A sensor
        restored from a state without reading times (before they were kept) counts as seen now."""
        cutoff = now - self._forget_ms
        alerts: list[Emit] = []
        for sensor in [s for s in self.detectors if self.last_seen.setdefault(s, now) < cutoff]:
            policy = self.policies.pop(sensor)
            del self.detectors[sensor]
            silent_s = (now - self.last_seen.pop(sensor)) / 1000
            if policy.incident is not None:
                t = Transition("RESOLVED", policy.incident, -1, policy.severity, policy.peak, policy.opened_at)
                alerts.append(self._alert(rec, sensor, t, None, now, None, silent_s=silent_s))
        return alerts

    def _alert(self, rec: dict[str, Any], sensor: str, t: Transition, value: float | None, at_ms: int,
               explanation: Explanation | None, silent_s: float | None = None) -> Emit:
        entity = f"{self.device_id}/{sensor}"
        if silent_s is not None:
            summary = (f"{entity} stopped reporting ({silent_s / 3600:.3g} h without a reading); incident closed "
                       f"(peak anomaly score {t.peak:.2f})")
        elif t.status == "RESOLVED":
            summary = f"{entity} back to normal (peak anomaly score {t.peak:.2f})"
        elif explanation is not None:
            summary = (f"Anomaly on {entity}: {RULE_NAMES[explanation.rule]}, reading {value:.4g} where "
                       f"{explanation.expected:.4g} was expected ({explanation.deviation:.3g} robust SD off)")
        else:
            summary = f"Anomaly on {entity}: reading {value:.4g} scored {t.peak:.2f}"
        record = {
            "event_id": derive_id(ALERTS_TOPIC, t.incident, t.status, t.severity),
            "event_time": at_ms,
            "producer": PRODUCER,
            "alert_key": t.incident,
            "status": t.status,
            "severity": t.severity,
            "source": FLOW,
            "entity": entity,
            "summary": summary,
            "value": value,
            "details": {
                "device_id": self.device_id,
                "sensor": sensor,
                "opened_at_ms": str(t.opened_at),
                "peak_score": f"{t.peak:.4f}",
                "source_event_id": rec["event_id"],
                "detector": self.detector_name,
            },
            "explanation": None if explanation is None else explanation.as_record(),
        }
        return Emit(ALERTS_TOPIC, t.incident, ALERT, record)

    def snapshot(self) -> dict[str, Any]:
        return {
            "detectors": {k: d.snapshot() for k, d in self.detectors.items()},
            "policies": {k: p.snapshot() for k, p in self.policies.items()},
            "sequence": self.sequence.snapshot(),
            "last_seen": dict(self.last_seen),
            "newest": self.newest,
            "spacing": self.spacing,
        }

    def restore(self, state: dict[str, Any]) -> None:
        for sensor, det_state in state["detectors"].items():
            det, policy = self._series_state(sensor)
            det.restore(det_state)
            policy.restore(state["policies"][sensor])
        self._restore_rest(state)

    def _restore_rest(self, state: dict[str, Any]) -> None:
        self.sequence.restore(state["sequence"])
        # older snapshots have no reading times: their sensors count as seen at the device's next batch
        self.last_seen = {str(k): int(v) for k, v in state.get("last_seen", {}).items() if k in self.detectors}
        # older snapshots have no device clock (spacing: learnt from the next gap); their up_since is not needed
        self.newest, self.spacing = (None if state.get(k) is None else int(state[k]) for k in ("newest", "spacing"))

    def restore_under(self, params: dict[str, Any], state: dict[str, Any]) -> bool:
        """Restore a state saved by a processor built with ``params`` into this one, built with the flow's current
        settings (``streams.state.processor_from``), so that an operator's change reaches devices that have state;
        returns whether all of the state was kept.

        Settings without state of their own (score packing, the alert policy's thresholds) simply apply. A detector
        or detector parameters other than the state's leave its detectors behind: each series relearns from its
        next reading, with the alert policy's warm-up started again; the sequence and the policies (an open
        incident still resolves) are kept.

        Parameters
        ----------
        params
            The ``params()`` of the processor that saved ``state``.
        state
            Its ``snapshot()``.
        """
        if (params["detector"], params["detector_params"]) == (self.detector_name, self.detector_params):
            self.restore(state)
            return True
        for sensor, policy_state in state["policies"].items():
            _, policy = self._series_state(sensor)
            policy.restore(policy_state)
            policy.seen = 0  # the new detector is learning: no incident from it before the warm-up
        self._restore_rest(state)
        return False

    def params(self) -> dict[str, Any]:
        return {
            "device_id": self.device_id,
            "detector": self.detector_name,
            "detector_params": self.detector_params,
            "policy": self.policy_params,
            "packed": self.packed,
            "forget_after_s": self.forget_after_s,
        }


def sensor_anomaly_flow(
    detector: str = DEFAULT_DETECTOR,
    detector_params: dict[str, Any] | None = None,
    policy: PolicyConfig | None = None,
    sinks: list | None = None,
    packed: bool = False,
    forget_after_s: float | None = FORGET_AFTER_S,
) -> FlowSpec:
    """The sensor anomaly flow: ``sensor.readings`` in, ``scores.anomaly`` and ``alerts`` out, state per device.

    Parameters
    ----------
    detector
        The anomaly detector every sensor gets (``models.anomaly.DETECTORS``).
    detector_params
        Passed to each detector's constructor.
    policy
        When scores become incidents; its ``threshold`` is ignored in favour of the detector's own.
    sinks
        Side sink factories fed with every emit (alert delivery, dashboards).
    packed
        Write scores packed (float32 bytes, ``anomaly_score`` v2; ``schemas.scores.series_scores`` reads both).
    forget_after_s
        Forget a sensor (detector, policy; its open incident resolved) whose last reading is this far behind its
        device's newest, in event time; None: never (a device's state then grows with every sensor name it sent).

    Examples
    --------
    >>> from itertools import islice
    >>> from collections import Counter
    >>> from streams.flows.sensor_anomaly import sensor_anomaly_flow
    >>> from streams.processor import Event, run_local
    >>> from streams.producers.simulator import SensorSimulator
    >>> events = [Event("sensor.readings", r["device_id"], r) for r in islice(SensorSimulator(devices=2), 4)]
    >>> emits = run_local(sensor_anomaly_flow(), events)
    >>> Counter(e.topic for e in emits if not e.topic.startswith("sink."))
    Counter({'scores.anomaly': 4})
    """
    policy_params = {k: v for k, v in asdict(policy).items() if k != "threshold"} if policy else {}
    return FlowSpec(
        name=FLOW,
        inputs={SOURCE_TOPIC: SENSOR_BATCH},
        outputs={SCORES_TOPIC: ANOMALY_SCORE, ALERTS_TOPIC: ALERT},
        make_processor=lambda device: SensorAnomalyProcessor(device, detector, detector_params, policy_params, packed,
                                                              forget_after_s),
        key=lambda event: event.record["device_id"],
        sinks=list(sinks or []),
        arrays=True,
    )
