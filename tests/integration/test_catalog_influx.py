"""Every flow's metrics sink writes to the real time-series server; what comes back is what the catalog lists."""

from __future__ import annotations

import time

import pytest

from connectors.influx import InfluxSink
from streams import catalog
from streams.sinks.drift import DriftMetricsSink
from streams.processor import Emit
from streams.sinks.sentiment import SentimentMetricsSink
from tests.unit.test_catalog import drift_emits, sentiment_emits

pytestmark = pytest.mark.integration


def recent(emits: list[Emit], t0: int) -> list[Emit]:
    """The same emits moved to recent times (the server refuses points older than its retention)."""
    out = []
    for i, e in enumerate(emits):
        out.append(Emit(e.topic, e.key, e.event_type, {**e.record, "event_time": t0 + i}))
    return out


def test_sentiment_and_drift_sinks_write_catalogued_series_that_read_back(victoria) -> None:
    t0 = (int(time.time()) - 600) * 1000
    sink = SentimentMetricsSink(InfluxSink(victoria.influx_settings("catalog")))
    sink.write(recent(sentiment_emits(), t0))
    sink.close()
    sink = DriftMetricsSink(InfluxSink(victoria.influx_settings("catalog")))
    sink.write(recent(drift_emits(), t0 + 100))
    sink.close()

    series = victoria.export('{__name__=~"(sentiment|drift)_.*"}')
    names = {s["metric"]["__name__"] for s in series}
    assert names == {n for n in catalog.victoria_names() if n.startswith(("sentiment_", "drift_"))}
    rolling = [s for s in series if s["metric"]["__name__"] == "sentiment_rolling_score"]
    assert rolling[0]["metric"]["conversation_id"] == "call-1"
    assert sorted(rolling[0]["values"]) == [-0.8, 0.0, 0.35]  # the first segment has no rolling score yet: its own
    statistic = {s["metric"]["subject"]: s["values"] for s in series if s["metric"]["__name__"] == "drift_statistic"}
    assert statistic == {"amount": [0.4], "concept": [0.4]}
    alerts = victoria.export('{__name__="alerts_count", source=~"audio-sentiment|drift"}')
    assert {s["metric"]["source"]: s["values"] for s in alerts} == {"audio-sentiment": [1.0], "drift": [1.0]}
