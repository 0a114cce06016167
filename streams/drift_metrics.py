"""What dashboard viewers see of the drift flow: each detection in InfluxDB, the latest statistic in Prometheus.

A detection's subject is the feature for data drift and ``concept`` for drift in the model's errors; it is a
tag in InfluxDB and a label in Prometheus (a model's features are a bounded set). Points are timed at the
detection's event time, so a replay overwrites them. Alerts raised by the flow are counted as every flow's
are (``streams.alert_metrics``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from streams.alert_metrics import alert_point, count_alert
from streams.processor import Emit
from connectors.prometheus import metric

DRIFT_TOPIC = "drift"
MEASUREMENT = "drift"
CONCEPT_SUBJECT = "concept"
TAGS = ("model_name", "subject", "kind", "detector")
FIELDS = ("statistic", "threshold", "reference_size", "window_size", "detections")


def subject(record: dict[str, Any]) -> str:
    return record["feature"] or CONCEPT_SUBJECT


class DriftMetricsSink:
    def __init__(self, influx: Any | None = None) -> None:
        from prometheus_client import Counter, Gauge

        self.influx = influx
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

    def write(self, emits: Sequence[Emit]) -> None:
        points = []
        for e in emits:
            r = e.record
            if e.topic == DRIFT_TOPIC:
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
                points.append((MEASUREMENT, tags, fields, int(r["event_time"])))
            elif e.topic == "alerts":
                count_alert(r)
                points.append(alert_point(r))
        if self.influx is not None and points:
            self.influx.write_points(points)

    def close(self) -> None:
        if self.influx is not None:
            self.influx.close()


def drift_metrics_sink() -> DriftMetricsSink:
    from connectors.influx import InfluxSettings, InfluxSink

    settings = InfluxSettings()
    return DriftMetricsSink(InfluxSink(settings) if settings.enabled else None)
