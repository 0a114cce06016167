"""The sensor producer's ground truth holds the anomalies of the readings it sent, not of one batch more."""

from __future__ import annotations

from itertools import islice

import pytest

from connectors.kafka import KafkaSettings, read_topic
from streams.producers.sensors import TOPIC, SensorProducer
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
