"""Bounded metrics: the sensor sink's Prometheus series do not grow with the fleet; latency is measured honestly."""

import itertools
import time

from prometheus_client import REGISTRY

from connectors.kafka import KafkaSettings
from streams.engines.output import FlowOutput
from streams.flows.sensor_anomaly import sensor_anomaly_flow
from streams.processor import Emit, Event
from streams.producers.simulator import SensorSimulator
from streams.sinks.sensor import TOPIC, SensorMetricsSink, TopSeries, series_metrics


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def metric_emit(device: str, sensor: str, score: float) -> Emit:
    import numpy as np

    return series_metrics(device, sensor, [1.0, 2.0], [1000, 2000], np.array([0.0, score]), 0.5)


def sensor_series_in_registry() -> set[tuple[str, tuple]]:
    return {(s.name, tuple(sorted(s.labels.items()))) for fam in REGISTRY.collect() for s in fam.samples
            if s.name.startswith("eddyline_sensor_")}


def test_prometheus_series_stay_bounded_as_the_fleet_grows():
    sink = SensorMetricsSink(top_k=5)
    sink.top.publish()
    before = sensor_series_in_registry()
    readings = REGISTRY.get_sample_value("eddyline_sensor_readings_total") or 0.0
    sink.write([metric_emit(f"dev-{i}", s, (i % 97) / 100) for i in range(3000) for s in ("a", "b")])
    sink.top.publish()
    grown = sensor_series_in_registry() - before
    assert all(name.startswith("eddyline_sensor_top_anomaly_score") for name, _ in grown)
    top = {dict(labels)["device"] for name, labels in sensor_series_in_registry()
           if name == "eddyline_sensor_top_anomaly_score"}
    assert len(top) <= 5 and all(int(d.split("-")[1]) % 97 == 96 for d in top)
    assert REGISTRY.get_sample_value("eddyline_sensor_readings_total") == readings + 2 * 6000


class FakeGauge:
    def __init__(self) -> None:
        self.children: dict[tuple[str, str], float] = {}

    def labels(self, *key: str) -> "FakeGauge":
        self._key = key
        return self

    def set(self, v: float) -> None:
        self.children[self._key] = v

    def remove(self, *key: str) -> None:
        del self.children[key]


def test_top_k_follows_the_latest_interval_and_forgets_the_rest():
    clock, gauge = Clock(), FakeGauge()
    top = TopSeries(gauge, k=2, interval_s=10, clock=clock)
    for device, score in [("a", 0.9), ("b", 0.2), ("c", 0.5), ("b", 0.95), ("d", 0.1)]:
        top.offer(device, "t", score)
    clock.t = 10
    top.offer("e", "t", 0.3)
    assert gauge.children == {("b", "t"): 0.95, ("a", "t"): 0.9}
    clock.t = 12
    top.offer("e", "t", 0.3)
    clock.t = 20
    top.offer("f", "t", 0.4)
    assert gauge.children == {("f", "t"): 0.4, ("e", "t"): 0.3}


def test_event_times_ahead_of_the_clock_are_counted_not_hidden():
    out = FlowOutput(sensor_anomaly_flow(), KafkaSettings())
    ahead = REGISTRY.get_sample_value("eddyline_event_time_ahead_total", {"flow": "sensor-anomaly"}) or 0.0
    sim = SensorSimulator(devices=1, readings_per_message=10, start_ms=int(time.time() * 1000) + 60_000)
    record = next(iter(sim))
    emits = sensor_anomaly_flow().make_processor(record["device_id"]).process([Event("sensor.readings", "x", record)])
    for e in emits:
        if e.topic != TOPIC:
            out.encode(e)
    assert REGISTRY.get_sample_value("eddyline_event_time_ahead_total", {"flow": "sensor-anomaly"}) == ahead + 1


def test_broker_latency_is_observed_from_the_kafka_timestamp():
    out = FlowOutput(sensor_anomaly_flow(), KafkaSettings())
    name = "eddyline_broker_to_processed_latency_seconds"
    labels = {"flow": "sensor-anomaly"}

    def sample(suffix: str, **extra: str) -> float:
        return REGISTRY.get_sample_value(f"{name}_{suffix}", {**labels, **extra}) or 0.0

    count, fast, slow = sample("count"), sample("bucket", le="0.1"), sample("bucket", le="1.0")
    now_ms = int(time.time() * 1000)
    out.processed([Event("sensor.readings", "d", {}, 0, 1, now_ms - 300), Event("sensor.readings", "d", {}, 0, 2)])
    assert sample("count") == count + 1, "an event without a broker timestamp is not observed"
    assert sample("bucket", le="0.1") == fast and sample("bucket", le="1.0") == slow + 1


def test_a_live_simulator_never_stamps_readings_in_the_future():
    now_ms = int(time.time() * 1000)
    sim = SensorSimulator(devices=3, readings_per_message=5, interval_ms=12.5, start_ms=now_ms)
    for record in itertools.islice(sim, 9):
        for s in record["series"]:
            assert s["timestamps"][-1] <= record["event_time"]
        assert SensorSimulator.due_s(record) * 1000 == record["event_time"]
    assert record["series"][0]["timestamps"][-1] == now_ms + int(14 * 12.5)


def test_series_summaries_are_the_numpy_and_builtin_values_to_the_bit():
    """One compiled pass replaces a numpy call per statistic; every field stays what those calls gave."""
    import numpy as np

    rng = np.random.default_rng(11)
    for n in [*range(1, 140), 255, 256, 1000]:
        values = rng.normal(20.0, 5.0, n) * rng.choice([1e-3, 1.0, 1e6])
        scores = rng.random(n) ** rng.choice([1, 8])
        stamps = np.arange(n, dtype=np.int64) * 1000
        r = series_metrics("d", "s", values, stamps, scores, 0.9).record
        listed = values.tolist()
        assert r["value_mean"] == sum(listed) / n and r["score_mean"] == float(scores.sum()) / n
        assert (r["value_min"], r["value_max"], r["value_last"]) == (min(listed), max(listed), listed[-1])
        assert r["score_max"] == float(scores.max()) and r["anomalous"] == int(np.count_nonzero(scores >= 0.9))
        assert r == series_metrics("d", "s", listed, stamps.tolist(), scores, 0.9).record


def test_a_summary_of_no_readings_is_refused_with_why_before_the_compiled_pass():
    """The compiled pass reads the first value without a bounds check, and the point is timed at the last reading:
    an empty series raised IndexError after reading past its array."""
    import numpy as np
    import pytest

    with pytest.raises(ValueError, match="at least one reading, not 0 values"):
        series_metrics("d-1", "t", np.zeros(0), np.zeros(0, dtype=np.int64), np.zeros(0), 0.5)
    with pytest.raises(ValueError, match="one score and time per reading"):
        series_metrics("d-1", "t", [1.0, 2.0], [1000], np.array([0.1, 0.2]), 0.5)
