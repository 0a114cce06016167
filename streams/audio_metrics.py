"""What supervisors' dashboards see of the audio flow: sentiment per conversation in InfluxDB and Prometheus.

The sink reads the flow's own outputs (transcripts, sentiment scores, alerts). In InfluxDB each sentiment
score is a point timed at its segment's event time, tagged by conversation and label, so a replay overwrites
it instead of doubling it. Prometheus gets the latest rolling sentiment per conversation and counters.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from streams.audio import ALERTS_TOPIC, SENTIMENT_TOPIC, TRANSCRIPTS_TOPIC
from streams.processor import Emit, Sink

MEASUREMENT = "sentiment"
ALERTS_MEASUREMENT = "alerts"


class AudioMetricsSink(Sink):
    def __init__(self, influx: Any | None = None) -> None:
        from prometheus_client import Counter, Gauge

        from connectors.prometheus import ALERTS

        self.influx = influx
        self.alerts = ALERTS
        self.rolling = _metric(Gauge, "eddyline_conversation_sentiment", "Rolling sentiment per conversation, -1..1.",
                               ["conversation"])
        self.segments = _metric(Counter, "eddyline_sentiment_segments", "Transcript segments scored, by label.", ["label"])
        self.speech = _metric(Counter, "eddyline_transcribed_seconds", "Seconds of speech transcribed.", [])

    def write(self, emits: Sequence[Emit]) -> None:
        points = []
        for e in emits:
            r = e.record
            if e.topic == SENTIMENT_TOPIC:
                rolling = r["rolling_score"] if r["rolling_score"] is not None else r["score"]
                self.rolling.labels(r["conversation_id"]).set(rolling)
                self.segments.labels(r["label"]).inc()
                fields = {"score": float(r["score"]), "rolling_score": float(rolling), "segment": int(r["segment"])}
                points.append((MEASUREMENT, {"conversation_id": r["conversation_id"], "label": r["label"]}, fields,
                               r["event_time"]))
            elif e.topic == TRANSCRIPTS_TOPIC:
                self.speech.inc((r["end_ms"] - r["start_ms"]) / 1000)
            elif e.topic == ALERTS_TOPIC:
                self.alerts.labels(r["source"], r["status"]).inc()
                tags = {"source": r["source"], "status": r["status"], "severity": r["severity"], "entity": r["entity"]}
                fields = {"value": float(r["value"] if r["value"] is not None else 0.0), "count": 1}
                points.append((ALERTS_MEASUREMENT, tags, fields, r["event_time"]))
        if self.influx is not None and points:
            self.influx.write_points(points)

    def close(self) -> None:
        if self.influx is not None:
            self.influx.close()


def _metric(kind: Any, name: str, doc: str, labels: list[str]) -> Any:
    """Metrics are process-wide; building the sink twice (tests, several workers) reuses them."""
    from prometheus_client import REGISTRY

    existing = REGISTRY._names_to_collectors.get(name) or REGISTRY._names_to_collectors.get(f"{name}_total")
    return existing if existing is not None else kind(name, doc, labels)


def audio_metrics_sink() -> AudioMetricsSink:
    from connectors.influx import InfluxSettings, InfluxSink

    settings = InfluxSettings()
    return AudioMetricsSink(InfluxSink(settings) if settings.enabled else None)
