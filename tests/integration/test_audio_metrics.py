"""The audio flow's dashboard sink: Prometheus values in process, InfluxDB points in a real VictoriaMetrics."""

from __future__ import annotations

import pytest
from prometheus_client import REGISTRY

from connectors.influx import InfluxSink
from streams.audio import AudioFlowConfig, sentiment_flow
from streams.audio_metrics import AudioMetricsSink
from streams.processor import Event, run_local
from tests.fixtures.timeseries import VictoriaMetrics

pytestmark = pytest.mark.integration


def transcript(cid: str, segment: int, text: str) -> Event:
    return Event("transcripts", cid, {
        "event_id": f"{cid}-{segment}", "event_time": 1_700_000_000_000 + 1000 * segment, "producer": "test",
        "conversation_id": cid, "segment": segment, "start_ms": 1000 * segment, "end_ms": 1000 * segment + 900,
        "text": text, "language": "en", "confidence": None, "model": "test"})


def test_sentiment_and_alerts_reach_prometheus_and_influx(victoria: VictoriaMetrics) -> None:
    lines = ["thank you, great", "this is awful", "terrible, I hate this", "the worst service ever", "awful, just awful"]
    emits = run_local(sentiment_flow(AudioFlowConfig(sentiment_model="vader")),
                      [transcript("call-m", i, t) for i, t in enumerate(lines)])
    before = REGISTRY.get_sample_value("eddyline_alerts_total", {"source": "audio-sentiment", "status": "OPENED"}) or 0
    with InfluxSink(victoria.influx_settings("audio")) as influx:
        sink = AudioMetricsSink(influx)
        sink.write(emits)
        sink.write(emits)  # a replayed epoch: same points, same times
        influx.flush()
    last = [e.record for e in emits if e.topic == "scores.sentiment"][-1]
    assert REGISTRY.get_sample_value("eddyline_conversation_sentiment", {"conversation": "call-m"}) == pytest.approx(
        last["rolling_score"])
    assert REGISTRY.get_sample_value("eddyline_alerts_total", {"source": "audio-sentiment", "status": "OPENED"}) == before + 2
    series = victoria.export('{__name__="sentiment_rolling_score",conversation_id="call-m"}')
    assert sum(len(s["values"]) for s in series) == len(lines)  # the replay overwrote, it did not double
    alerts = victoria.export('{__name__="alerts_count",entity="call-m"}')
    assert [s["metric"]["status"] for s in alerts] == ["OPENED"]
