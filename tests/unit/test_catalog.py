"""Every sink writes only what streams.catalog lists, and the catalog lists nothing that no sink writes."""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from typing import Any

import pytest
from prometheus_client import REGISTRY

from schemas import ALERT, DRIFT, SENTIMENT_SCORE, AvroSerde
from streams import catalog
from streams.sinks.drift import DriftMetricsSink
from streams.sinks.fleet import FleetMetricsSink
from streams.sinks.model_security import ModelSecurityMetricsSink
from streams.flows.clicks import QUARANTINE_TOPIC
from streams.sinks.quality import QualityMetricsSink
from streams.processor import Emit, Event, run_local
from streams.flows.quality import flow as quality_flow
from streams.flows.sensor_anomaly import sensor_anomaly_flow
from streams.sinks.sensor import SensorMetricsSink
from streams.producers.simulator import SensorSimulator
from streams.sinks.sentiment import SentimentMetricsSink

serde = AvroSerde()
T0 = 1_700_000_000_000


class RecordingInflux:
    """Stands in for InfluxSink's two write methods; the real write path is tested against VictoriaMetrics."""

    def __init__(self) -> None:
        self.points: list[tuple[str, Mapping[str, str], Mapping[str, Any], int]] = []

    def write(self, measurement: str, tags: Mapping[str, str], fields: Mapping[str, Any], time_ms: int) -> None:
        self.points.append((measurement, tags, fields, time_ms))

    def write_points(self, points: Any) -> None:
        self.points.extend(points)

    def close(self) -> None:
        pass


def sensor_emits() -> list[Emit]:
    sim = SensorSimulator(devices=2, readings_per_message=40, anomaly_rate=0.01, seed=3)
    records = list(itertools.islice(sim, 60))
    return run_local(sensor_anomaly_flow(), [Event("sensor.readings", r["device_id"], r) for r in records])


def quality_emits() -> list[Emit]:
    events = []
    for i in range(20):
        pid = f"p{i}"
        events.append(
            Event(
                "predictions",
                "m",
                {
                    "event_id": pid,
                    "event_time": T0 + i * 10,
                    "model_name": "m",
                    "model_version": "3",
                    "score": 0.9 if i % 2 else 0.1,
                    "latency_ms": 2.0,
                    "error": None,
                },
            )
        )
        events.append(
            Event(
                "feedback",
                "m",
                {
                    "event_id": f"f{i}",
                    "event_time": T0 + i * 10 + 5,
                    "model_name": "m",
                    "prediction_id": pid,
                    "label": float(i % 2),
                },
            )
        )
    events.append(
        Event(
            "predictions",
            "m",
            {
                "event_id": "tick",
                "event_time": T0 + 100_000,
                "model_name": "m",
                "model_version": "3",
                "score": 0.5,
                "latency_ms": 2.0,
                "error": None,
            },
        )
    )
    events.append(  # each input has its own clock: both must move past the windows for them to close
        Event(
            "feedback",
            "m",
            {"event_id": "ftick", "event_time": T0 + 100_000, "model_name": "m", "prediction_id": "tick", "label": 1.0},
        )
    )
    return run_local(quality_flow("m", window_ms=1000, max_wait_ms=500), events)


def alert(source: str, status: str, value: float | None) -> dict[str, Any]:
    return {
        "event_id": f"a-{source}-{status}",
        "event_time": T0,
        "producer": "test",
        "alert_key": f"k-{source}",
        "status": status,
        "severity": "WARNING",
        "source": source,
        "entity": "x",
        "summary": "s",
        "value": value,
        "details": {},
    }


def sentiment_emits() -> list[Emit]:
    out = []
    for i, (label, score) in enumerate([("negative", -0.8), ("neutral", 0.0), ("positive", 0.7)]):
        rec = {
            "event_id": f"s{i}",
            "event_time": T0 + i,
            "producer": "test",
            "source_event_id": f"t{i}",
            "conversation_id": "call-1",
            "segment": i,
            "text": "words",
            "label": label,
            "score": score,
            "probabilities": {},
            "rolling_score": score / 2 if i else None,
            "model": "minilm-head",
        }
        serde.encode(SENTIMENT_SCORE, rec)  # the records a real flow could emit
        out.append(Emit("scores.sentiment", "call-1", SENTIMENT_SCORE, rec))
    out.append(Emit("alerts", "k-audio", ALERT, alert("audio-sentiment", "OPENED", -0.6)))
    return out


def drift_emits() -> list[Emit]:
    out = []
    for feature, kind in [("amount", "DATA"), (None, "CONCEPT")]:
        rec = {
            "event_id": f"d-{kind}",
            "event_time": T0,
            "producer": "test",
            "model_name": "m",
            "feature": feature,
            "kind": kind,
            "detector": "ours",
            "statistic": 0.4,
            "threshold": 0.25,
            "window_start": T0 - 1000,
            "window_end": T0,
            "reference_size": 2000,
            "window_size": 1000,
        }
        serde.encode(DRIFT, rec)
        out.append(Emit("drift", "m", DRIFT, rec))
    out.append(Emit("alerts", "k-drift", ALERT, alert("drift", "RESOLVED", None)))
    return out


def fleet_emits() -> list[Emit]:
    """Heartbeats of two devices, one with a model and a known clock offset, through the fleet flow."""
    from streams.flows.fleet import flow as fleet_flow
    from tests.unit.test_fleet_flow import beat

    events = [beat(d, t, **({"inference_latency_ms": 0.4, "clock_offset_ms": -3.0, "model_version": "m1"}
                            if d == "b" else {})) for t in range(0, 12_000, 1000) for d in "ab"]
    return run_local(fleet_flow(), events)


@pytest.fixture(scope="module")
def written() -> list[tuple[str, Mapping[str, str], Mapping[str, Any], int]]:
    """Drive every sink with what its flow emits; return the InfluxDB points they wrote."""
    influx = RecordingInflux()
    SensorMetricsSink(influx).write(sensor_emits())
    QualityMetricsSink(influx).write(quality_emits())
    SentimentMetricsSink(influx).write(sentiment_emits())
    DriftMetricsSink(influx).write(drift_emits())
    FleetMetricsSink(influx).write(fleet_emits())
    # every sink's metrics exist here, whichever tests ran before in this process (pytest-xdist deals files out)
    ModelSecurityMetricsSink(influx).write([Emit(QUARANTINE_TOPIC, "user:7", "quarantine",
                                                 {"source": "user:7", "rule": "flood", "action": "quarantined"})])
    return influx.points


def test_every_point_a_sink_writes_is_catalogued(written) -> None:
    assert written
    for measurement, tags, fields, _ in written:
        catalog.check_point(measurement, tags, fields)


def test_every_catalogued_field_and_tag_is_written_by_some_sink(written) -> None:
    seen: dict[str, tuple[set[str], set[str]]] = {}
    for measurement, tags, fields, _ in written:
        t, f = seen.setdefault(measurement, (set(), set()))
        t.update(tags)
        f.update(fields)
    for m in catalog.measurements().values():
        assert m.name in seen, f"no sink wrote measurement {m.name}"
        assert seen[m.name] == (set(m.tags), set(m.fields)), m.name


def test_every_eddyline_prometheus_sample_is_catalogued(written, monkeypatch) -> None:
    import prometheus_client

    from edge_agent.health import Heartbeat
    from edge_agent.metrics import MetricsEndpoint

    class NoServer:
        def shutdown(self) -> None: ...
        def server_close(self) -> None: ...

    monkeypatch.setattr(prometheus_client, "start_http_server", lambda *a, **k: (NoServer(), None))
    edge = MetricsEndpoint("127.0.0.1", 0)
    fields = {f: 0 for f in Heartbeat.__dataclass_fields__} | {"device_id": "pi-1"}
    edge.update(Heartbeat(**fields))
    edge.close()
    exposed = {
        s.name
        for reg in (REGISTRY, edge.registry)
        for fam in reg.collect()
        for s in fam.samples
        if s.name.startswith("eddyline_")
    }
    unknown = exposed - catalog.prometheus_names()
    assert not unknown, f"written but not catalogued: {sorted(unknown)}"
    families = {fam.name for reg in (REGISTRY, edge.registry) for fam in reg.collect()}
    for m in catalog.metrics().values():
        assert m.name.removesuffix("_total") in families, f"catalogued but never registered: {m.name}"


def test_check_point_refuses_unknown_names() -> None:
    with pytest.raises(catalog.UnknownSeriesError, match="measurement 'nope'"):
        catalog.check_point("nope", {}, {"x": 1})
    with pytest.raises(catalog.UnknownSeriesError, match="bogus"):
        catalog.check_point("sensor", {"device_id": "d"}, {"bogus": 1})
    with pytest.raises(catalog.UnknownSeriesError):
        catalog.check_metric("eddyline_sensor_values")
    catalog.check_metric("eddyline_processing_seconds_bucket")


def test_victoria_names_join_measurement_and_field() -> None:
    names = catalog.victoria_names()
    assert {"sensor_score_max", "model_quality_auc", "sentiment_rolling_score", "drift_statistic"} <= names
