"""What dashboard viewers see of the drift flow: each detection in InfluxDB, the latest statistic in Prometheus.

A detection's subject is the feature for data drift and ``concept`` for drift in the model's errors; it is a
tag in InfluxDB and a label in Prometheus (a model's features are a bounded set). Points are timed at the
detection's event time, so a replay overwrites them. Alerts raised by the flow are counted as every flow's
are (``streams.sinks.alerts``).
"""

from __future__ import annotations

from typing import Any

from connectors.prometheus import metric
from streams.sinks.base import MetricsSink, Point
from streams.processor import Emit

DRIFT_TOPIC = "drift"
MEASUREMENT = "drift"
CONCEPT_SUBJECT = "concept"
TAGS = ("model_name", "subject", "kind", "detector")
FIELDS = ("statistic", "threshold", "reference_size", "window_size", "detections")


def subject(record: dict[str, Any]) -> str:
    """What a drift record is about: its feature, or ``concept`` for drift in the model's errors.

    Parameters
    ----------
    record
        A ``drift`` record.
    """
    return record["feature"] or CONCEPT_SUBJECT


class DriftMetricsSink(MetricsSink):
    """The drift flow's dashboards: each detection as an InfluxDB ``drift`` point, the latest statistic in Prometheus.

    Parameters
    ----------
    influx
        Where points go; None keeps Prometheus only.
    """

    def __init__(self, influx: Any | None = None) -> None:
        from prometheus_client import Counter, Gauge

        super().__init__(influx)
        self.detections = metric(
            Counter,
            "eddyline_drift_detections",
            "Drift detections, by model, kind and detector.",
            ["model", "kind", "detector"],
        )
        self.statistic = metric(
            Gauge, "eddyline_drift_statistic", "Test statistic of the latest drift detection.", ["model", "subject"]
        )
        self.threshold = metric(
            Gauge, "eddyline_drift_threshold", "Threshold the latest drift statistic crossed.", ["model", "subject"]
        )

    def points(self, e: Emit) -> list[Point]:
        if e.topic != DRIFT_TOPIC:
            return []
        r = e.record
        subj = subject(r)
        self.detections.labels(r["model_name"], r["kind"], r["detector"]).inc()
        self.statistic.labels(r["model_name"], subj).set(float(r["statistic"]))
        self.threshold.labels(r["model_name"], subj).set(float(r["threshold"]))
        tags = {
            "model_name": r["model_name"],
            "subject": subj,
            "kind": str(r["kind"]),
            "detector": r["detector"],
        }
        fields = {
            "statistic": float(r["statistic"]),
            "threshold": float(r["threshold"]),
            "reference_size": int(r["reference_size"]),
            "window_size": int(r["window_size"]),
            "detections": 1,
        }
        return [(MEASUREMENT, tags, fields, int(r["event_time"]))]


drift_metrics_sink = DriftMetricsSink.from_settings
