"""What dashboard viewers see of the sentiment flow: per conversation in InfluxDB, aggregates in Prometheus.

Conversations come and go, so a conversation id is an InfluxDB tag (one series per conversation) but never
a Prometheus label: Prometheus gets the score distribution and segment counts per label instead.
Points are timed at the segment's event time, so a replay overwrites them. Alerts raised by the flow
are counted as every flow's are (``streams.sinks.alerts``).
"""

from __future__ import annotations

from typing import Any

from connectors.prometheus import metric
from streams.sinks.base import MetricsSink, Point
from streams.processor import Emit

SENTIMENT_TOPIC = "scores.sentiment"
MEASUREMENT = "sentiment"
TAGS = ("conversation_id", "model")
FIELDS = ("score", "rolling_score", "segment")
SCORE_BUCKETS = (-1.0, -0.75, -0.5, -0.25, -0.1, 0.0, 0.1, 0.25, 0.5, 0.75, 1.0)


class SentimentMetricsSink(MetricsSink):
    """The sentiment flow's dashboards: a ``sentiment`` point per segment in InfluxDB, aggregates in Prometheus.

    Parameters
    ----------
    influx
        Where points go; None keeps Prometheus only.
    """

    def __init__(self, influx: Any | None = None) -> None:
        from prometheus_client import Counter, Histogram

        super().__init__(influx)
        self.segments = metric(
            Counter, "eddyline_sentiment_segments", "Transcript segments scored, by label.", ["label"]
        )
        self.scores = metric(
            Histogram,
            "eddyline_sentiment_score",
            "Sentiment score of each segment, from -1 (negative) to 1 (positive).",
            buckets=SCORE_BUCKETS,
        )

    def points(self, e: Emit) -> list[Point]:
        if e.topic != SENTIMENT_TOPIC:
            return []
        r = e.record
        self.segments.labels(r["label"]).inc()
        self.scores.observe(float(r["score"]))
        rolling = r.get("rolling_score")
        fields = {
            "score": float(r["score"]),
            "segment": int(r["segment"]),
            "rolling_score": float(rolling if rolling is not None else r["score"]),
        }
        return [(MEASUREMENT, {k: str(r[k]) for k in TAGS}, fields, int(r["event_time"]))]


sentiment_metrics_sink = SentimentMetricsSink.from_settings
