"""What dashboard viewers see of the sensor flow: per device and sensor, in InfluxDB and Prometheus.

The processor emits one ``sink.sensor_metrics`` record per series per batch (never written to Kafka).
In InfluxDB each becomes a point timed at the batch's last reading, so a replay overwrites rather than
doubles it. Prometheus gets the latest value and score per device and sensor, and reading counters.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from connectors.prometheus import metric
from streams.sinks.base import MetricsSink, Point
from streams.processor import Emit

TOPIC = "sink.sensor_metrics"
EVENT_TYPE = "sensor_metrics"
MEASUREMENT = "sensor"


def series_metrics(device_id: str, sensor: str, values: list[float], stamps: list[int], scores: np.ndarray,
                   threshold: float) -> Emit:
    """One batch of one series, summarised. Values arrive as the decoded Python list: on batches of tens of
    readings the builtins are several times cheaper than a numpy call each.

    Parameters
    ----------
    device_id, sensor
        The series.
    values, stamps
        The batch's readings and their event times (ms).
    scores
        The anomaly score of each reading.
    threshold
        Scores at or above it count as anomalous.

    Examples
    --------
    >>> import numpy as np
    >>> from streams.sinks.sensor import series_metrics
    >>> scores = np.array([0.1, 0.2, 0.97])
    >>> emit = series_metrics("d-1", "temperature", [20.0, 21.0, 35.0], [1000, 2000, 3000], scores, threshold=0.9)
    >>> emit.topic, emit.record["time_ms"], emit.record["value_max"], emit.record["anomalous"]
    ('sink.sensor_metrics', 3000, 35.0, 1)
    """
    n = len(values)
    record = {
        "device_id": device_id,
        "sensor": sensor,
        "time_ms": int(stamps[-1]),
        "readings": n,
        "value_last": float(values[-1]),
        "value_mean": sum(values) / n,
        "value_min": float(min(values)),
        "value_max": float(max(values)),
        "score_max": float(scores.max()),
        "score_mean": float(scores.sum()) / n,
        "anomalous": int(np.count_nonzero(scores >= threshold)),
    }
    return Emit(TOPIC, device_id, EVENT_TYPE, record)


class SensorMetricsSink(MetricsSink):
    """The sensor flow's dashboards: an InfluxDB ``sensor`` point per series and batch, and Prometheus gauges.

    Parameters
    ----------
    influx
        Where points go; None keeps Prometheus only.
    """

    def __init__(self, influx: Any | None = None) -> None:
        from prometheus_client import Counter, Gauge

        super().__init__(influx)
        self.value = metric(Gauge, "eddyline_sensor_value", "Latest reading per device and sensor.", ["device", "sensor"])
        self.score = metric(Gauge, "eddyline_sensor_anomaly_score", "Highest anomaly score in the latest batch.",
                             ["device", "sensor"])
        self.readings = metric(Counter, "eddyline_sensor_readings", "Readings scored.", ["device"])
        self.anomalous = metric(Counter, "eddyline_sensor_anomalous_readings", "Readings scored as anomalous.", ["device"])
        self._children: dict[tuple[str, str], tuple[Any, Any, Any, Any]] = {}

    def _series(self, device: str, sensor: str) -> tuple[Any, Any, Any, Any]:
        """The four labelled children of one series, looked up once (``labels()`` is the costly part)."""
        key = (device, sensor)
        children = self._children.get(key)
        if children is None:
            children = self._children[key] = (self.value.labels(device, sensor), self.score.labels(device, sensor),
                                              self.readings.labels(device), self.anomalous.labels(device))
        return children

    def points(self, e: Emit) -> list[Point]:
        if e.topic != TOPIC:
            return []
        r = e.record
        value, score, readings, anomalous = self._series(r["device_id"], r["sensor"])
        value.set(r["value_last"])
        score.set(r["score_max"])
        readings.inc(r["readings"])
        anomalous.inc(r["anomalous"])
        fields = {k: v for k, v in r.items() if k not in ("device_id", "sensor", "time_ms")}
        return [(MEASUREMENT, {"device_id": r["device_id"], "sensor": r["sensor"]}, fields, r["time_ms"])]


sensor_metrics_sink = SensorMetricsSink.from_settings
