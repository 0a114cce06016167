"""What dashboard viewers see of the quality flow: each closed window in InfluxDB and in Prometheus gauges.

A window's metrics are one InfluxDB ``model_quality`` point tagged by model and version, timed at the window's
end (a replay overwrites it), and Prometheus gauges ``eddyline_model_<metric>{model,version}`` holding the last
closed window. Automatic retraining promotes new versions for as long as the flow runs, so Prometheus keeps the
``VERSIONS_SHOWN`` versions of a model with the latest windows and drops the gauges of older ones (their history is
in InfluxDB). Alerts raised by the flow are counted as every flow's are (``streams.sinks.alerts``).
"""

from __future__ import annotations

from typing import Any

from connectors.prometheus import metric
from streams.flows.quality import MEASUREMENT, METRICS_TYPE
from streams.processor import Emit
from streams.sinks.base import MetricsSink, Point

TAGS = ("model_name", "model_version")
_NOT_FIELDS = ("event_id", "window_start", "window_end", *TAGS)
VERSIONS_SHOWN = 5  # per model: those serving (champion, canary) and the few they replaced


class QualityMetricsSink(MetricsSink):
    """The quality flow's dashboards: a ``model_quality`` point per window, the last window in Prometheus gauges.

    Parameters
    ----------
    influx
        Where points go; None keeps Prometheus only.
    """

    def __init__(self, influx: Any | None = None) -> None:
        super().__init__(influx)
        self._shown: dict[tuple[str, str], set[str]] = {}  # gauges with a value per (model, version), latest last

    def points(self, e: Emit) -> list[Point]:
        if e.event_type != METRICS_TYPE:
            return []
        r = e.record
        fields = {k: float(v) for k, v in r.items() if k not in _NOT_FIELDS and v is not None}
        labels = (r["model_name"], r["model_version"])
        for name, value in fields.items():
            self._gauge(name).labels(*labels).set(value)
        for name in self._shown.pop(labels, set()) - fields.keys():  # undefined in this window: no stale value
            self._gauge(name).remove(*labels)
        self._shown[labels] = set(fields)
        for old in [k for k in self._shown if k[0] == labels[0]][:-VERSIONS_SHOWN]:
            for name in self._shown.pop(old):
                self._gauge(name).remove(*old)
        return [(MEASUREMENT, {k: r[k] for k in TAGS}, fields, int(r["window_end"]))]

    @staticmethod
    def _gauge(name: str) -> Any:
        from prometheus_client import Gauge

        return metric(Gauge, f"eddyline_model_{name}", f"model quality: {name}, last closed window", ["model", "version"])


quality_metrics_sink = QualityMetricsSink.from_settings
