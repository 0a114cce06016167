"""Both engines' flow processes report their consumer lag: run as production runs them, metrics scraped.

A known number of sensor messages is published; once the flow took them all, every input partition's
``eddyline_consumer_lag`` must be 0 on the metrics endpoint, and the flow's group must have committed
exactly what was published (Faust commits as it consumes; Bytewax's monitor commits the positions the flow
decoded), so the live page and Kafka tools can read it too.
"""

from __future__ import annotations

import itertools
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from connectors.broker import free_port
from connectors.kafka import KafkaSettings
from connectors.lag import LagReader
from streams.engines.lag import consumer_group
from streams.producers.simulator import SensorSimulator
from tests.integration.test_sensor_flow import flow_env, publish, stop

pytestmark = pytest.mark.integration
MESSAGES = 60


def lag_samples(url: str) -> dict[str, float]:
    """partition -> lag of the sensor flow's input, from one scrape ({} if the endpoint is not up yet)."""
    try:
        text = urllib.request.urlopen(url, timeout=5).read().decode()
    except OSError:
        return {}
    return {
        s.labels["partition"]: s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == "eddyline_consumer_lag" and s.labels.get("flow") == "sensor-anomaly"
        and s.labels.get("topic") == "sensor.readings"
    }


@pytest.mark.parametrize("engine", ["bytewax", "faust"])
def test_a_flow_process_reports_zero_lag_once_it_took_everything(kafka_settings: KafkaSettings, tmp_path: Path,
                                                                  engine: str) -> None:
    publish(kafka_settings, list(itertools.islice(SensorSimulator(devices=6, readings_per_message=20, seed=5),
                                                  MESSAGES)))
    port = free_port()
    env = flow_env(kafka_settings) | {"EDDYLINE_RUNTIME_LAG_INTERVAL_S": "0.5"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "streams.cli", "run", "anomaly", "--engine", engine, "--metrics-port", str(port),
         "--state-dir", str(tmp_path / "state")],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}/metrics"
    partitions = {str(p) for p in range(kafka_settings.partitions)}
    seen: dict[str, float] = {}
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            seen = lag_samples(url)
            if set(seen) == partitions and not any(seen.values()):
                break
            time.sleep(0.5)
        else:
            pytest.fail(f"lag never reached 0 on every partition: {seen}\n{stop(proc)}")
        reader = LagReader(kafka_settings)
        try:
            group = consumer_group("sensor-anomaly", engine, kafka_settings)  # type: ignore[arg-type]
            lags = reader.lag(group, [kafka_settings.topic("sensor.readings")])
        finally:
            reader.close()
        assert sum(p.committed or 0 for p in lags) == MESSAGES
        assert all(p.lag == 0 and p.committed == p.high for p in lags)
    finally:
        stop(proc)


def test_a_bytewax_cluster_commits_every_partition_from_the_process_that_reads_it(
    kafka_settings: KafkaSettings, tmp_path: Path
) -> None:
    publish(kafka_settings, list(itertools.islice(SensorSimulator(devices=6, readings_per_message=20, seed=5),
                                                  MESSAGES)))
    env = flow_env(kafka_settings) | {"EDDYLINE_RUNTIME_LAG_INTERVAL_S": "0.5"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "streams.cli", "run", "anomaly", "--workers", "2",
         "--state-dir", str(tmp_path / "state")],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True,
    )
    group = consumer_group("sensor-anomaly", "bytewax", kafka_settings)
    reader = LagReader(kafka_settings)
    lags: list = []
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            lags = reader.lag(group, [kafka_settings.topic("sensor.readings")])
            if sum(p.committed or 0 for p in lags) == MESSAGES:
                break
            time.sleep(0.5)
        else:
            pytest.fail(f"the cluster's group never committed all {MESSAGES} messages: {lags}\n{stop(proc)}")
        assert all(p.lag == 0 for p in lags) and len(lags) == kafka_settings.partitions
    finally:
        reader.close()
        stop(proc)
