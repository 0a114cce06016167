"""What dashboard viewers see of the sensor flow: per device and sensor, in InfluxDB and Prometheus.

The processor emits one ``sink.sensor_metrics`` record per series per batch (never written to Kafka).
In InfluxDB each becomes a point timed at the batch's last reading, so a replay overwrites rather than
doubles it. Prometheus gets the latest value and score per device and sensor, and reading counters.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from connectors.prometheus import metric
from streams.alert_metrics import alert_point, count_alert
from streams.processor import Emit

TOPIC = "sink.sensor_metrics"
EVENT_TYPE = "sensor_metrics"
MEASUREMENT = "sensor"


def series_metrics(device_id: str, sensor: str, values: np.ndarray, stamps: np.ndarray, scores: np.ndarray,
                   threshold: float) -> Emit:
    record = {
        "device_id": device_id,
        "sensor": sensor,
        "time_ms": int(stamps[-1]),
        "readings": int(values.size),
        "value_last": float(values[-1]),
        "value_mean": float(values.mean()),
        "value_min": float(values.min()),
        "value_max": float(values.max()),
        "score_max": float(scores.max()),
        "score_mean": float(scores.mean()),
        "anomalous": int((scores >= threshold).sum()),
    }
    return Emit(TOPIC, device_id, EVENT_TYPE, record)


class SensorMetricsSink:
    def __init__(self, influx: Any | None = None) -> None:
        from prometheus_client import Counter, Gauge

        self.influx = influx
        self.value = metric(Gauge, "eddyline_sensor_value", "Latest reading per device and sensor.", ["device", "sensor"])
        self.score = metric(Gauge, "eddyline_sensor_anomaly_score", "Highest anomaly score in the latest batch.",
                             ["device", "sensor"])
        self.readings = metric(Counter, "eddyline_sensor_readings", "Readings scored.", ["device"])
        self.anomalous = metric(Counter, "eddyline_sensor_anomalous_readings", "Readings scored as anomalous.", ["device"])

    def write(self, emits: Sequence[Emit]) -> None:
        points = []
        for e in emits:
            r = e.record
            if e.topic == TOPIC:
                self.value.labels(r["device_id"], r["sensor"]).set(r["value_last"])
                self.score.labels(r["device_id"], r["sensor"]).set(r["score_max"])
                self.readings.labels(r["device_id"]).inc(r["readings"])
                self.anomalous.labels(r["device_id"]).inc(r["anomalous"])
                fields = {k: v for k, v in r.items() if k not in ("device_id", "sensor", "time_ms")}
                points.append((MEASUREMENT, {"device_id": r["device_id"], "sensor": r["sensor"]}, fields, r["time_ms"]))
            elif e.topic == "alerts":
                count_alert(r)
                points.append(alert_point(r))
        if self.influx is not None and points:
            self.influx.write_points(points)

    def close(self) -> None:
        if self.influx is not None:
            self.influx.close()


def sensor_metrics_sink() -> SensorMetricsSink:
    from connectors.influx import InfluxSettings, InfluxSink

    settings = InfluxSettings()
    return SensorMetricsSink(InfluxSink(settings) if settings.enabled else None)
