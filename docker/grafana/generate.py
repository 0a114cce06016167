"""Generate eddyline's Grafana dashboards (one per concern) as JSON under docker/grafana/dashboards/.

Dashboards are code: panels name series through streams.catalog's constants, and the test suite checks
that every query names a measurement, field or metric the system writes, and that the committed JSON is
what this script generates. Run it after changing a dashboard or the catalog:

    .venv/bin/python docker/grafana/generate.py          # write the files
    .venv/bin/python docker/grafana/generate.py --check  # exit 1 if the files are stale

InfluxDB panels use Flux (the datasource is provisioned in Flux mode); Prometheus panels use PromQL.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
OUT = HERE / "dashboards"
INFLUX = {"type": "influxdb", "uid": "eddyline-influxdb"}
PROMETHEUS = {"type": "prometheus", "uid": "eddyline-prometheus"}
SCHEMA_VERSION = 39
WIDTH = 24  # Grafana's grid is 24 columns wide
TOP_DEVICES = 10  # rows of a per-device ranking: a fleet has thousands

sys.path.insert(0, str(HERE.parents[1]))  # run as a script from anywhere in the repository

from streams.flows import quality
from streams.sinks import alerts as alert_metrics
from streams.sinks import drift as drift_metrics
from streams.sinks import fleet as fleet_metrics
from streams.sinks import sensor as sensor_metrics
from streams.sinks import sentiment as sentiment_metrics
from streams.flows.audio import FLOW as AUDIO_FLOW
from streams.flows.drift import FLOW as DRIFT_FLOW
from streams.flows.fleet import FLOW as FLEET_FLOW, KINDS as FLEET_KINDS, REFUSED
from streams.flows.sensor_anomaly import FLOW as SENSOR_FLOW


def flux(
    measurement: str,
    fields: list[str],
    *,
    filters: str = "",
    group: list[str] | None = None,
    agg: str = "mean",
    window: str = "v.windowPeriod",
    tail: str = "",
) -> str:
    """A Flux query over one measurement and some of its fields, windowed to the panel's resolution."""
    field_test = " or ".join(f'r._field == "{f}"' for f in fields)
    lines = [
        'from(bucket: "${bucket}")',
        "  |> range(start: v.timeRangeStart, stop: v.timeRangeStop)",
        f'  |> filter(fn: (r) => r._measurement == "{measurement}")',
        f"  |> filter(fn: (r) => {field_test})",
    ]
    if filters:
        lines.append(f"  |> filter(fn: (r) => {filters})")
    if group is not None:
        lines.append(f"  |> group(columns: {json.dumps(group)})")
    if agg:
        lines.append(f"  |> aggregateWindow(every: {window}, fn: {agg}, createEmpty: false)")
    if tail:
        lines.append(f"  |> {tail}")
    return "\n".join(lines)


@dataclass
class Panel:
    title: str
    queries: list[str]
    datasource: dict[str, str]
    kind: str = "timeseries"
    unit: str = "short"
    width: int = 12
    height: int = 8
    description: str = ""
    legend: str = ""
    options: dict[str, Any] = field(default_factory=dict)

    def build(self, pid: int, x: int, y: int) -> dict[str, Any]:
        if self.datasource is INFLUX:
            targets = [
                {"refId": chr(65 + i), "datasource": self.datasource, "query": q} for i, q in enumerate(self.queries)
            ]
        else:
            targets = [
                {
                    "refId": chr(65 + i),
                    "datasource": self.datasource,
                    "expr": q,
                    "legendFormat": self.legend,
                    "range": self.kind != "table",
                    "instant": self.kind == "table",
                }
                for i, q in enumerate(self.queries)
            ]
        return {
            "id": pid,
            "type": self.kind,
            "title": self.title,
            "description": self.description,
            "datasource": self.datasource,
            "gridPos": {"h": self.height, "w": self.width, "x": x, "y": y},
            "fieldConfig": {"defaults": {"unit": self.unit}, "overrides": []},
            "options": self.options,
            "targets": targets,
        }


def _variables(influx_tags: dict[str, tuple[str, str]]) -> list[dict[str, Any]]:
    """The bucket, plus one multi-value variable per InfluxDB tag the dashboard filters on."""
    out: list[dict[str, Any]] = [
        {
            "name": "bucket",
            "label": "InfluxDB bucket",
            "type": "constant",
            "query": "eddyline",
            "hide": 2,
        }
    ]
    for var, (measurement, tag) in influx_tags.items():
        out.append(
            {
                "name": var,
                "label": tag,
                "type": "query",
                "datasource": INFLUX,
                "query": (
                    'import "influxdata/influxdb/schema"\n'
                    f'schema.measurementTagValues(bucket: "${{bucket}}", measurement: "{measurement}", tag: "{tag}")'
                ),
                "refresh": 2,
                "multi": True,
                "includeAll": True,
                "allValue": ".*",
                "current": {},
                "sort": 1,
            }
        )
    return out


def dashboard(
    uid: str, title: str, description: str, panels: list[Panel], influx_tags: dict[str, tuple[str, str]] | None = None
) -> dict[str, Any]:
    built, x, y, row_h = [], 0, 0, 0
    for i, p in enumerate(panels, start=1):
        if x + p.width > WIDTH:
            x, y, row_h = 0, y + row_h, 0
        built.append(p.build(i, x, y))
        x, row_h = x + p.width, max(row_h, p.height)
    return {
        "uid": uid,
        "title": title,
        "description": description,
        "tags": ["eddyline"],
        "editable": True,
        "schemaVersion": SCHEMA_VERSION,
        "version": 1,
        "refresh": "10s",
        "time": {"from": "now-1h", "to": "now"},
        "timezone": "utc",
        "templating": {"list": _variables(influx_tags or {})},
        "annotations": {"list": []},
        "panels": built,
    }


def _alerts_table(source: str) -> Panel:
    return Panel(
        f"Alert changes ({source})",
        [
            flux(
                alert_metrics.ALERTS_MEASUREMENT,
                ["value"],
                filters=f'r.source == "{source}"',
                agg="",
                tail='keep(columns: ["_time", "status", "severity", "entity", "_value"])',
            )
        ],
        INFLUX,
        kind="table",
        width=24,
        description="Every alert state change the flow raised, newest last; value is the reading or score.",
    )


def devices() -> dict[str, Any]:
    m = sensor_metrics.MEASUREMENT
    device = "r.device_id =~ /^${device:regex}$/"
    return dashboard(
        "eddyline-devices",
        "eddyline · devices and anomalies",
        "Readings and anomaly scores per device and sensor, anomalous readings, alerts, edge agents.",
        [
            Panel(
                "Latest reading",
                [flux(m, ["value_last"], filters=device)],
                INFLUX,
                description="Last reading of each scored batch, per device and sensor.",
            ),
            Panel(
                "Anomaly score (batch maximum)",
                [flux(m, ["score_max"], filters=device, agg="max")],
                INFLUX,
                unit="percentunit",
            ),
            Panel(
                "Anomalous readings", [flux(m, ["anomalous"], filters=device, group=["device_id"], agg="sum")], INFLUX
            ),
            Panel(
                "Readings scored per second, whole fleet",
                ["sum(rate(eddyline_sensor_readings_total[5m]))"],
                PROMETHEUS,
                unit="ops",
            ),
            Panel(
                "Highest anomaly scores now",
                ["topk(10, max by (device, sensor) (eddyline_sensor_top_anomaly_score))"],
                PROMETHEUS,
                kind="table",
                unit="percentunit",
            ),
            Panel(
                "Anomalous share of readings",
                [
                    "sum(rate(eddyline_sensor_anomalous_readings_total[5m])) / sum(rate(eddyline_sensor_readings_total[5m]))"
                ],
                PROMETHEUS,
                kind="stat",
                unit="percentunit",
            ),
            _alerts_table(SENSOR_FLOW),
            Panel(
                "Edge agents: readings waiting on disk",
                ["eddyline_edge_buffer_readings"],
                PROMETHEUS,
                legend="{{device}}",
                description="Non-zero while a device is offline or the broker is slow.",
            ),
            Panel(
                "Edge agents: acknowledged readings per second",
                ["eddyline_edge_send_rate"],
                PROMETHEUS,
                unit="ops",
                legend="{{device}}",
            ),
        ],
        {"device": (m, "device_id")},
    )


def conversations() -> dict[str, Any]:
    m = sentiment_metrics.MEASUREMENT
    conv = "r.conversation_id =~ /^${conversation:regex}$/"
    return dashboard(
        "eddyline-conversations",
        "eddyline · conversations and sentiment",
        "Sentiment per conversation, the mix of labels, and conversations that turned negative.",
        [
            Panel(
                "Rolling sentiment per conversation",
                [flux(m, ["rolling_score"], filters=conv, group=["conversation_id"])],
                INFLUX,
                description="-1 is negative, 1 positive; the flow alerts on a sustained negative rolling score.",
            ),
            Panel("Segment sentiment", [flux(m, ["score"], filters=conv, group=["conversation_id"])], INFLUX),
            Panel(
                "Latest sentiment by conversation",
                [flux(m, ["rolling_score"], filters=conv, group=["conversation_id"], agg="", tail="last()")],
                INFLUX,
                kind="table",
            ),
            Panel(
                "Segments per second by label",
                ["sum by (label) (rate(eddyline_sentiment_segments_total[5m]))"],
                PROMETHEUS,
                unit="ops",
                legend="{{label}}",
            ),
            Panel(
                "Median segment score",
                ["histogram_quantile(0.5, sum by (le) (rate(eddyline_sentiment_score_bucket[5m])))"],
                PROMETHEUS,
                kind="stat",
            ),
            Panel(
                "Segments scored", [flux(m, ["segment"], filters=conv, group=["conversation_id"], agg="count")], INFLUX
            ),
            _alerts_table(AUDIO_FLOW),
        ],
        {"conversation": (m, "conversation_id")},
    )


def models() -> dict[str, Any]:
    q, d = quality.MEASUREMENT, drift_metrics.MEASUREMENT
    model = "r.model_name =~ /^${model:regex}$/"
    return dashboard(
        "eddyline-models",
        "eddyline · models and drift",
        "Model quality per closed event-time window and version, and drift detections.",
        [
            Panel("Accuracy, F1, AUC", [flux(q, ["accuracy", "f1", "auc"], filters=model)], INFLUX, unit="percentunit"),
            Panel("Log loss", [flux(q, ["log_loss"], filters=model)], INFLUX),
            Panel(
                "Prediction latency p50 / p99",
                [flux(q, ["latency_p50_ms", "latency_p99_ms"], filters=model)],
                INFLUX,
                unit="ms",
            ),
            Panel(
                "Feedback: missing and late",
                [flux(q, ["missing_feedback", "late_events"], filters=model, agg="sum")],
                INFLUX,
                description="Predictions whose feedback never came in time; events after their window closed.",
            ),
            Panel(
                "Quality now",
                ["eddyline_model_auc", "eddyline_model_error_rate"],
                PROMETHEUS,
                kind="table",
                legend="{{model}} {{version}}",
            ),
            Panel(
                "Predictions per second (last window)",
                ["eddyline_model_throughput_per_s"],
                PROMETHEUS,
                unit="ops",
                legend="{{model}} {{version}}",
            ),
            Panel(
                "Drift statistic by subject",
                [flux(d, ["statistic", "threshold"], filters=model, agg="max")],
                INFLUX,
                description="Subject: a feature (data drift) or 'concept' (drift in the model's errors).",
            ),
            Panel(
                "Drift detections (1 h)",
                ["sum by (model, kind) (increase(eddyline_drift_detections_total[1h]))"],
                PROMETHEUS,
                kind="stat",
                legend="{{model}} {{kind}}",
            ),
            _alerts_table(DRIFT_FLOW),
        ],
        {"model": (q, "model_name")},
    )


def pipeline() -> dict[str, Any]:
    return dashboard(
        "eddyline-pipeline",
        "eddyline · pipeline health",
        "Throughput, consumer lag, dead letters, processing and end-to-end latency, alert delivery, InfluxDB alerts.",
        [
            Panel(
                "Events consumed per second",
                ["sum by (flow, topic) (rate(eddyline_events_consumed_total[1m]))"],
                PROMETHEUS,
                unit="ops",
                legend="{{flow}} ← {{topic}}",
            ),
            Panel(
                "Events emitted per second",
                ["sum by (flow, topic) (rate(eddyline_events_emitted_total[1m]))"],
                PROMETHEUS,
                unit="ops",
                legend="{{flow}} → {{topic}}",
            ),
            Panel(
                "Consumer lag (messages behind the high watermark)",
                ["max by (flow, topic) (eddyline_consumer_lag)"],
                PROMETHEUS,
                legend="{{flow}} ← {{topic}}",
                description="Per flow and input topic, the worst partition: high watermark minus committed offset.",
            ),
            Panel(
                "Consumer lag by partition",
                ["max by (flow, topic, partition) (eddyline_consumer_lag)"],
                PROMETHEUS,
                kind="table",
            ),
            Panel(
                "Dead letters (5 m)",
                ["sum by (flow, topic, reason) (increase(eddyline_dlq_events_total[5m]))"],
                PROMETHEUS,
                legend="{{flow}} {{topic}} {{reason}}",
            ),
            Panel(
                "Batch processing time p99",
                ["histogram_quantile(0.99, sum by (flow, le) (rate(eddyline_processing_seconds_bucket[5m])))"],
                PROMETHEUS,
                unit="s",
                legend="{{flow}}",
            ),
            Panel(
                "End-to-end latency p50 / p99",
                [
                    "histogram_quantile(0.5, sum by (flow, le) (rate(eddyline_end_to_end_latency_seconds_bucket[5m])))",
                    "histogram_quantile(0.99, sum by (flow, le) (rate(eddyline_end_to_end_latency_seconds_bucket[5m])))",
                ],
                PROMETHEUS,
                unit="s",
                legend="{{flow}}",
            ),
            Panel(
                "Alert deliveries per second",
                ["sum by (sink, outcome) (rate(eddyline_alert_deliveries_total[5m]))"],
                PROMETHEUS,
                unit="ops",
                legend="{{sink}} {{outcome}}",
            ),
            Panel(
                "Alert retries scheduled per second (notify flow)",
                ["sum by (sink, reason) (rate(eddyline_alert_retries_total[5m]))"],
                PROMETHEUS,
                unit="ops",
                legend="{{sink}} {{reason}}",
            ),
            Panel(
                "Alert circuit breakers (0 closed, 1 half-open, 2 open)",
                ["max by (sink) (eddyline_alert_breaker_state)"],
                PROMETHEUS,
                legend="{{sink}}",
            ),
            Panel(
                "Alert changes by source and status",
                ["sum by (source, status) (increase(eddyline_alerts_total[1h]))"],
                PROMETHEUS,
                kind="table",
            ),
            Panel(
                "Alerts written to InfluxDB",
                [flux(alert_metrics.ALERTS_MEASUREMENT, ["count"], group=["source"], agg="sum")],
                INFLUX,
            ),
        ],
    )


def _fleet_total(fields: list[str], filters: str) -> str:
    """The fleet's sum of a count each agent reports since its start: each device's highest per window, added up
    (a device changes series as its state tag changes, so it is grouped by device first)."""
    return flux(
        fleet_metrics.MEASUREMENT,
        fields,
        filters=filters,
        group=["device_id", "_field"],
        agg="max",
        tail="\n  |> ".join(
            ['group(columns: ["_field", "_time"])', "sum()", 'group(columns: ["_field"])', 'sort(columns: ["_time"])']
        ),
    )


def _top_devices(field: str, filters: str) -> str:
    """The ``TOP_DEVICES`` devices with the highest ``field`` in the time range, those above 0 only."""
    return flux(
        fleet_metrics.MEASUREMENT,
        [field],
        filters=filters,
        group=["device_id", "device_class"],
        agg="",
        tail="\n  |> ".join(
            [
                "max()",
                "filter(fn: (r) => r._value > 0)",
                "group()",
                f"top(n: {TOP_DEVICES})",
                'keep(columns: ["device_id", "device_class", "_value"])',
            ]
        ),
    )


def fleet() -> dict[str, Any]:
    h = fleet_metrics.MEASUREMENT
    device = "r.device_id =~ /^${device:regex}$/"
    return dashboard(
        "eddyline-fleet",
        "eddyline · edge fleet",
        "Edge devices from their device.health events: counts by state and version, backlog, errors, dead letters, "
        "refused rollout records, clock, memory.",
        [
            Panel(
                "Devices by state",
                ["sum by (state) (eddyline_fleet_devices)"],
                PROMETHEUS,
                legend="{{state}}",
                description=f"The fleet flow's view: {', '.join(FLEET_KINDS)} (an open alert), else ok.",
            ),
            Panel(
                "Devices by agent and model version",
                ["sum by (agent_version, model_version, state) (eddyline_fleet_devices)"],
                PROMETHEUS,
                kind="table",
            ),
            Panel(
                "Devices by class",
                ["sum by (device_class) (eddyline_fleet_devices)"],
                PROMETHEUS,
                kind="stat",
                legend="{{device_class}}",
            ),
            Panel(
                "Buffered batches per device",
                [flux(h, ["buffer_depth"], filters=device, group=["device_id"], agg="max")],
                INFLUX,
                description="A depth that keeps growing is a device that cannot send (the fleet flow alerts on it).",
            ),
            Panel(
                "Oldest buffered batch per device",
                [flux(h, ["buffer_oldest_age_s"], filters=device, group=["device_id"], agg="max")],
                INFLUX,
                unit="s",
            ),
            Panel(
                "Readings acknowledged per second per device",
                [flux(h, ["send_rate"], filters=device, group=["device_id"])],
                INFLUX,
                unit="ops",
            ),
            Panel(
                "Agent errors per device (since start)",
                [flux(h, ["errors", "dropped_readings"], filters=device, group=["device_id"], agg="max")],
                INFLUX,
            ),
            Panel(
                "Dead letters and refused rollout records, whole fleet (since agent start)",
                [_fleet_total(["dead_letters", "rollouts_refused"], device)],
                INFLUX,
                description="Dead letters: batches devices gave up to their dead-letter file, readings the platform "
                "will not see unless someone fetches it. Refused: rollout records devices would not follow "
                f"(the flow's {REFUSED} alert, one per device class: a forged or replayed record, or a key they do "
                "not trust). Counts restart with the agent.",
            ),
            Panel(
                f"Most dead letters (top {TOP_DEVICES} devices)",
                [_top_devices("dead_letters", device)],
                INFLUX,
                kind="table",
                description="Highest count since agent start in the time range; a device here opens a dead_letters "
                "alert while its count rises.",
            ),
            Panel(
                f"Most rollout records refused (top {TOP_DEVICES} devices)",
                [_top_devices("rollouts_refused", device)],
                INFLUX,
                kind="table",
                description="Highest count since agent start in the time range, with the device class the "
                f"{REFUSED} alert names.",
            ),
            Panel(
                "Clock offset (device minus broker)",
                [flux(h, ["clock_offset_ms"], filters=device, group=["device_id"])],
                INFLUX,
                unit="ms",
                description="Known only where device.health has message.timestamp.type=LogAppendTime.",
            ),
            Panel(
                "Agent memory and CPU",
                [flux(h, ["rss_mb", "cpu_percent"], filters=device, group=["device_id"])],
                INFLUX,
            ),
            Panel(
                "Local inference latency",
                [flux(h, ["inference_latency_ms"], filters=device, group=["device_id"])],
                INFLUX,
                unit="ms",
            ),
            _alerts_table(FLEET_FLOW),
        ],
        {"device": (h, "device_id")},
    )


DASHBOARDS = {
    "devices.json": devices,
    "conversations.json": conversations,
    "models.json": models,
    "pipeline.json": pipeline,
    "fleet.json": fleet,
}


def render() -> dict[str, str]:
    return {name: json.dumps(build(), indent=2, ensure_ascii=False) + "\n" for name, build in DASHBOARDS.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="Exit 1 if the committed files differ.")
    args = parser.parse_args(argv)
    stale = []
    for name, text in render().items():
        path = OUT / name
        if args.check:
            if not path.is_file() or path.read_text() != text:
                stale.append(name)
        else:
            OUT.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
    if stale:
        print(f"stale dashboards (run docker/grafana/generate.py): {', '.join(stale)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
