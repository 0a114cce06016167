"""Model-quality metrics from the quality flow, written to the real time-series server and read back."""

from __future__ import annotations

import time

import pytest

from connectors.influx import InfluxSink
from streams.flows import quality
from streams.processor import Event, run_local
from streams.sinks.quality import QualityMetricsSink

pytestmark = pytest.mark.integration


def test_window_metrics_reach_victoriametrics_through_influx_client(victoria) -> None:
    t0 = (int(time.time()) - 600) * 1000  # recent: the server refuses points older than its retention
    events = []
    for i in range(20):
        pid = f"p{i}"
        events.append(Event("predictions", "m", {"event_id": pid, "event_time": t0 + i * 10,
                                                 "model_name": "m", "model_version": "3", "score": 0.9 if i % 2 else 0.1,
                                                 "latency_ms": 2.0, "error": None}))
        events.append(Event("feedback", "m", {"event_id": f"f{i}", "event_time": t0 + i * 10 + 5,
                                              "model_name": "m", "prediction_id": pid, "label": float(i % 2 if i < 16 else 1 - i % 2)}))
    events.append(Event("predictions", "m", {"event_id": "tick", "event_time": t0 + 100_000, "model_name": "m",
                                             "model_version": "3", "score": 0.5, "latency_ms": 2.0, "error": None}))
    events.append(Event("feedback", "m", {"event_id": "ftick", "event_time": t0 + 100_000, "model_name": "m",
                                          "prediction_id": "tick", "label": 1.0}))  # both inputs move on
    emits = run_local(quality.flow("m", window_ms=1000, max_wait_ms=500), events)
    sink = QualityMetricsSink(InfluxSink(victoria.influx_settings("quality")))
    sink.write(emits)
    sink.close()
    series = {s["metric"]["__name__"]: s for s in victoria.export('{__name__=~"model_quality_.*"}')}
    assert series, "nothing exported"
    acc = series["model_quality_accuracy"]
    assert acc["metric"]["model_name"] == "m" and acc["metric"]["model_version"] == "3"
    assert acc["values"] == [0.8] and acc["timestamps"] == [t0 + 1000]
    assert series["model_quality_predictions"]["values"] == [20.0]
    assert series["model_quality_latency_p99_ms"]["values"] == [2.0]
