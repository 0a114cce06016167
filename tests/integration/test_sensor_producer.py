"""The sensor producer's ground truth holds the anomalies of the readings it sent, not of one batch more; a run keeps
none of them in memory."""

from __future__ import annotations

import json
from dataclasses import asdict
from itertools import islice
from pathlib import Path
from typing import Any

import pytest

from connectors.kafka import KafkaSettings, read_topic
from streams.producers import sensors
from streams.producers.sensors import TOPIC, ProduceStats, SensorProducer
from streams.producers.simulator import SensorSimulator

pytestmark = pytest.mark.integration


def test_a_run_that_stops_counts_the_anomalies_of_what_it_sent(kafka_settings: KafkaSettings) -> None:
    producer = SensorProducer(kafka_settings, devices=2, rate=0, anomaly_rate=0.05)
    twin = SensorSimulator(devices=2, readings_per_message=50, interval_ms=producer.sim.interval_ms,
                           anomaly_rate=0.05, start_ms=producer.sim.start_ms, stagger=True)
    injected_after = []
    for _ in islice(twin, 60):
        injected_after.append({a.anomaly_id for a in twin.injected})
    # a run of `sent` batches whose next batch (never sent) would inject an anomaly
    sent = next(n for n in range(30, 59) if injected_after[n] != injected_after[n - 1])
    with producer:
        stats = producer.run(count=sent)
    assert stats.messages == sent == len(read_topic(kafka_settings, TOPIC, expected=sent, timeout=30))
    assert {a.anomaly_id for a in producer.sim.injected} == injected_after[sent - 1]


def _produced(kafka_settings: KafkaSettings, monkeypatch: pytest.MonkeyPatch, truth: Path | None,
              anomaly_rate: float = 0.05) -> tuple[SensorProducer, ProduceStats]:
    """``produce sensors`` as the command runs it, and the producer it made."""
    made = []

    class Seen(SensorProducer):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            made.append(self)

    monkeypatch.setattr(sensors, "SensorProducer", Seen)
    stats = sensors.produce(kafka_settings, devices=2, rate=0, count=60, duration=None, anomaly_rate=anomaly_rate,
                            bad_events=0, truth_path=truth)
    return made[0], stats


def test_a_run_keeps_no_anomaly_in_memory_and_writes_its_truth_as_it_goes(
    kafka_settings: KafkaSettings, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Every anomaly stayed in the simulator until the end of the run, truth file or not: 100 MB a day."""
    producer, stats = _produced(kafka_settings, monkeypatch, None)
    assert stats.injected > 0 and producer.sim.injected == []
    producer, stats = _produced(kafka_settings, monkeypatch, tmp_path / "truth.json")
    twin = SensorSimulator(devices=2, readings_per_message=50, interval_ms=producer.sim.interval_ms,
                           anomaly_rate=0.05, start_ms=producer.sim.start_ms, stagger=True)
    list(islice(twin, 60))
    assert producer.sim.injected == []
    assert json.loads((tmp_path / "truth.json").read_text()) == [asdict(a) for a in twin.injected]
    assert stats.injected == len(twin.injected) > 0
    _, stats = _produced(kafka_settings, monkeypatch, tmp_path / "none.json", anomaly_rate=0)
    assert json.loads((tmp_path / "none.json").read_text()) == [] and stats.injected == 0
