"""Every time series eddyline writes: InfluxDB measurements (tags, fields) and Prometheus metrics (labels).

Dashboards, the live page and the docs query these names, so they are listed once, here, and taken from
the writing code's own constants where it has them (measurement names, the pipeline metric objects, the
records the flows build). Tests drive every sink and fail when one writes a name missing from this list,
and check every dashboard query against it.

InfluxDB servers differ in what they keep: InfluxDB 2 stores each field under its measurement; VictoriaMetrics
(the server in tests) stores numbers only, as the metric ``<measurement>_<field>``, and ignores the bucket.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from typing import Literal

__all__ = [
    "Measurement",
    "Metric",
    "UnknownSeriesError",
    "check_metric",
    "check_point",
    "measurements",
    "metrics",
    "prometheus_names",
    "victoria_names",
]

MetricKind = Literal["counter", "gauge", "histogram"]


class UnknownSeriesError(ValueError):
    """A sink wrote, or a query asked for, a name that the catalog does not list."""


@dataclass(frozen=True)
class Measurement:
    name: str
    tags: tuple[str, ...]
    fields: tuple[str, ...]
    writer: str  # the module whose sink writes it
    doc: str


@dataclass(frozen=True)
class Metric:
    name: str  # as exposed; counters end in _total
    kind: MetricKind
    labels: tuple[str, ...]
    writer: str
    doc: str

    @property
    def samples(self) -> tuple[str, ...]:
        """The sample names a scrape shows (what PromQL selects)."""
        if self.kind == "histogram":
            return tuple(f"{self.name}_{s}" for s in ("bucket", "sum", "count", "created"))
        if self.kind == "counter":
            return (self.name, f"{self.name.removesuffix('_total')}_created")
        return (self.name,)


QUALITY_BASE_FIELDS = (
    "predictions",
    "labelled",
    "missing_feedback",
    "late_events",
    "error_rate",
    "throughput_per_s",
    "latency_p50_ms",
    "latency_p99_ms",
)
EDGE_GAUGES = (
    "buffer_depth",
    "buffer_readings",
    "buffer_bytes",
    "in_flight",
    "sampled_readings",
    "acked_readings",
    "send_rate",
    "errors",
    "dropped_readings",
    "cpu_percent",
    "rss_mb",
    "health_dropped",
)
EDGE_UNLABELLED_GAUGES = ("dead_letters", "rollouts_refused")  # one agent per endpoint: its target names it


def _sensor_fields() -> tuple[str, ...]:
    """The fields of one ``sink.sensor_metrics`` record, as the flow builds it."""
    import numpy as np

    from streams.sinks.sensor import series_metrics

    one = np.ones(1)
    record = series_metrics("d", "s", one, np.ones(1, dtype=np.int64), one, 0.5).record
    return tuple(k for k in record if k not in ("device_id", "sensor", "time_ms"))


def _quality_fields() -> tuple[str, ...]:
    """The quality flow's window fields: its own and every classification metric (computed on two labels)."""
    import numpy as np

    from models.metrics import classification_report

    return QUALITY_BASE_FIELDS + tuple(classification_report(np.array([0.0, 1.0]), np.array([0.2, 0.8])))


@cache
def measurements() -> dict[str, Measurement]:
    from streams.flows import quality
    from streams.sinks import alerts as alert_metrics
    from streams.sinks import drift as drift_metrics
    from streams.sinks import fleet as fleet_metrics
    from streams.sinks import sensor as sensor_metrics
    from streams.sinks import sentiment as sentiment_metrics
    from streams.sinks.alerts import ALERT_FIELDS, ALERT_TAGS

    found = [
        Measurement(
            sensor_metrics.MEASUREMENT,
            ("device_id", "sensor"),
            _sensor_fields(),
            "streams.sinks.sensor",
            "Per device and sensor, one point per scored batch: readings, values, anomaly scores.",
        ),
        Measurement(
            alert_metrics.ALERTS_MEASUREMENT,
            ALERT_TAGS,
            ALERT_FIELDS,
            "streams.sinks.alerts",
            "One point per alert state change, from every flow that raises alerts.",
        ),
        Measurement(
            quality.MEASUREMENT,
            ("model_name", "model_version"),
            _quality_fields(),
            "streams.flows.quality",
            "Per model and version, one point per closed event-time window.",
        ),
        Measurement(
            sentiment_metrics.MEASUREMENT,
            sentiment_metrics.TAGS,
            sentiment_metrics.FIELDS,
            "streams.sinks.sentiment",
            "Per conversation, one point per scored transcript segment.",
        ),
        Measurement(
            drift_metrics.MEASUREMENT,
            drift_metrics.TAGS,
            drift_metrics.FIELDS,
            "streams.sinks.drift",
            "Per model and subject (feature or concept), one point per drift detection.",
        ),
        Measurement(
            fleet_metrics.MEASUREMENT,
            fleet_metrics.TAGS,
            fleet_metrics.FIELDS,
            "streams.sinks.fleet",
            "Per edge device, one point per heartbeat (device.health) with the fleet flow's state.",
        ),
    ]
    return {m.name: m for m in found}


def _pipeline_metrics() -> list[Metric]:
    """Read straight off the metric objects of the modules that define theirs at import."""
    import importlib

    from prometheus_client.metrics import MetricWrapperBase

    out = []
    for module in ("connectors.prometheus", "streams.engines.output", "streams.sequence", "streams.state"):
        for obj in vars(importlib.import_module(module)).values():
            if isinstance(obj, MetricWrapperBase):
                name = f"{obj._name}_total" if obj._type == "counter" else obj._name
                out.append(Metric(name, obj._type, tuple(obj._labelnames), module, obj._documentation))
    return out


@cache
def metrics() -> dict[str, Metric]:
    found = _pipeline_metrics() + [
        Metric("eddyline_sensor_readings_total", "counter", (), "streams.sinks.sensor", "Readings scored, whole fleet."),
        Metric(
            "eddyline_sensor_anomalous_readings_total",
            "counter",
            (),
            "streams.sinks.sensor",
            "Readings scored at or above their detector's threshold, whole fleet.",
        ),
        Metric(
            "eddyline_sensor_batch_anomaly_score",
            "histogram",
            (),
            "streams.sinks.sensor",
            "Highest anomaly score of each scored series batch, whole fleet.",
        ),
        Metric(
            "eddyline_sensor_top_anomaly_score",
            "gauge",
            ("device", "sensor"),
            "streams.sinks.sensor",
            "The k series with the highest anomaly score in the last interval (at most k children).",
        ),
        Metric(
            "eddyline_sentiment_segments_total",
            "counter",
            ("label",),
            "streams.sinks.sentiment",
            "Transcript segments scored, by label.",
        ),
        Metric(
            "eddyline_sentiment_score", "histogram", (), "streams.sinks.sentiment", "Sentiment score of each segment."
        ),
        Metric(
            "eddyline_drift_detections_total",
            "counter",
            ("model", "kind", "detector"),
            "streams.sinks.drift",
            "Drift detections.",
        ),
        Metric(
            "eddyline_drift_statistic",
            "gauge",
            ("model", "subject"),
            "streams.sinks.drift",
            "Test statistic of the latest drift detection.",
        ),
        Metric(
            "eddyline_drift_threshold",
            "gauge",
            ("model", "subject"),
            "streams.sinks.drift",
            "Threshold the latest drift statistic crossed.",
        ),
    ]
    found.append(Metric("eddyline_quarantine_changes_total", "counter", ("kind", "rule", "action"),
                        "streams.sinks.model_security",
                        "Sources quarantined from (or released to) online learning, by kind, rule and action."))
    found.append(Metric("eddyline_fleet_devices", "gauge", ("shard", "state", "device_class", "agent_version",
                                                            "model_version"), "streams.sinks.fleet",
                        "Edge devices by state, class, agent and model version (no device label)."))
    found += [
        Metric(
            f"eddyline_model_{f}",
            "gauge",
            ("model", "version"),
            "streams.flows.quality",
            f"Model quality, last closed window: {f}.",
        )
        for f in _quality_fields()
    ]
    found += [
        Metric(f"eddyline_edge_{g}", "gauge", ("device",), "edge_agent.metrics", f"Edge agent: {g}.")
        for g in EDGE_GAUGES
    ]
    found += [Metric(f"eddyline_edge_{g}", "gauge", (), "edge_agent.metrics", f"Edge agent: {g} (no device label).")
              for g in EDGE_UNLABELLED_GAUGES]
    return {m.name: m for m in found}


def prometheus_names() -> set[str]:
    """Every sample name a scrape of eddyline can show."""
    return {s for m in metrics().values() for s in m.samples}


def victoria_names() -> set[str]:
    """The metric names VictoriaMetrics gives InfluxDB points: ``<measurement>_<field>``."""
    return {f"{m.name}_{f}" for m in measurements().values() for f in m.fields}


def check_point(measurement: str, tags: object, fields: object) -> None:
    """Raise ``UnknownSeriesError`` unless the measurement, every tag key and every field are catalogued."""
    m = measurements().get(measurement)
    if m is None:
        raise UnknownSeriesError(f"measurement {measurement!r} is not in streams.catalog")
    extra_tags = set(tags) - set(m.tags)  # type: ignore[call-overload]
    extra_fields = set(fields) - set(m.fields)  # type: ignore[call-overload]
    if extra_tags or extra_fields:
        raise UnknownSeriesError(
            f"{measurement}: tags {sorted(extra_tags)} / fields {sorted(extra_fields)} are not in streams.catalog"
        )


def check_metric(sample: str) -> None:
    if sample not in prometheus_names():
        raise UnknownSeriesError(f"Prometheus sample {sample!r} is not in streams.catalog")
