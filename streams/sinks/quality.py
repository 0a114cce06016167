"""What dashboard viewers see of the quality flow: each closed window in InfluxDB and in Prometheus gauges.

A window's metrics are one InfluxDB ``model_quality`` point tagged by model and version, timed at the window's
end (a replay overwrites it), and Prometheus gauges ``eddyline_model_<metric>{model,version}`` holding the last
closed window (a model's versions are a bounded set). Alerts raised by the flow are counted as every flow's are
(``streams.sinks.alerts``).
"""

from __future__ import annotations

from typing import Any

from connectors.prometheus import metric
from streams.flows.quality import MEASUREMENT, METRICS_TYPE
from streams.processor import Emit
from streams.sinks.base import MetricsSink, Point

TAGS = ("model_name", "model_version")
_NOT_FIELDS = ("event_id", "window_start", "window_end", *TAGS)


class QualityMetricsSink(MetricsSink):
    """The quality flow's dashboards: a ``model_quality`` point per window, the last window in Prometheus gauges.

    Parameters
    ----------
    influx
        Where points go; None keeps Prometheus only.
    """

    def __init__(self, influx: Any | None = None) -> None:
        super().__init__(influx)
        self._shown: dict[tuple[str, str], set[str]] = {}  # the gauges each model version has a value in

    def points(self, e: Emit) -> list[Point]:
        if e.event_type != METRICS_TYPE:
            return []
        r = e.record
        fields = {k: float(v) for k, v in r.items() if k not in _NOT_FIELDS and v is not None}
        labels = (r["model_name"], r["model_version"])
        for name, value in fields.items():
            self._gauge(name).labels(*labels).set(value)
        for name in self._shown.get(labels, set()) - fields.keys():  # undefined in this window: no stale value
            self._gauge(name).remove(*labels)
        self._shown[labels] = set(fields)
        return [(MEASUREMENT, {k: r[k] for k in TAGS}, fields, int(r["window_end"]))]

    @staticmethod
    def _gauge(name: str) -> Any:
        from prometheus_client import Gauge

        return metric(Gauge, f"eddyline_model_{name}", f"model quality: {name}, last closed window", ["model", "version"])


quality_metrics_sink = QualityMetricsSink.from_settings
