"""The pipeline-health metrics, scraped over HTTP from the exporter as Prometheus would."""

from __future__ import annotations

import urllib.request
from collections.abc import Iterator

import pytest
from prometheus_client.parser import text_string_to_metric_families

from connectors import prometheus as metrics

pytestmark = pytest.mark.integration


@pytest.fixture
def exporter() -> Iterator[metrics.MetricsServer]:
    server = metrics.serve(0)
    try:
        yield server
    finally:
        server.stop()


def scrape(url: str) -> dict[str, list]:
    with urllib.request.urlopen(url, timeout=5) as r:
        assert r.status == 200
        text = r.read().decode()
    return {family.name: family for family in text_string_to_metric_families(text)}


def sample(families: dict, family: str, name: str, **labels: str) -> float:
    for s in families[family].samples:
        if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
            return s.value
    raise AssertionError(f"no sample {name}{labels} in {family}")


def test_exporter_listens_on_loopback_and_shows_every_pipeline_metric(exporter: metrics.MetricsServer) -> None:
    assert exporter.host == "127.0.0.1" and exporter.port > 0
    metrics.EVENTS_CONSUMED.labels(flow="exp-test", topic="sensor.readings").inc(5)
    metrics.EVENTS_EMITTED.labels(flow="exp-test", topic="scores.anomaly").inc(4)
    metrics.DLQ_EVENTS.labels(flow="exp-test", topic="sensor.readings", reason="schema").inc()
    metrics.PROCESSING_SECONDS.labels(flow="exp-test").observe(0.003)
    metrics.END_TO_END_LATENCY.labels(flow="exp-test").observe(0.2)
    metrics.ALERTS.labels(source="exp-test", status="OPENED").inc()
    metrics.ALERT_DELIVERIES.labels(sink="exp-test", outcome="delivered").inc(2)

    families = scrape(exporter.url)
    assert families["eddyline_events_consumed"].type == "counter"
    assert (
        sample(
            families,
            "eddyline_events_consumed",
            "eddyline_events_consumed_total",
            flow="exp-test",
            topic="sensor.readings",
        )
        == 5
    )
    assert sample(families, "eddyline_events_emitted", "eddyline_events_emitted_total", flow="exp-test") == 4
    assert sample(families, "eddyline_dlq_events", "eddyline_dlq_events_total", flow="exp-test", reason="schema") == 1
    assert sample(families, "eddyline_alerts", "eddyline_alerts_total", source="exp-test", status="OPENED") == 1
    assert (
        sample(
            families,
            "eddyline_alert_deliveries",
            "eddyline_alert_deliveries_total",
            sink="exp-test",
            outcome="delivered",
        )
        == 2
    )

    assert families["eddyline_processing_seconds"].type == "histogram"
    assert sample(families, "eddyline_processing_seconds", "eddyline_processing_seconds_count", flow="exp-test") == 1
    assert (
        sample(
            families, "eddyline_processing_seconds", "eddyline_processing_seconds_bucket", flow="exp-test", le="0.005"
        )
        == 1
    )
    assert (
        sample(
            families, "eddyline_processing_seconds", "eddyline_processing_seconds_bucket", flow="exp-test", le="0.001"
        )
        == 0
    )
    assert (
        sample(
            families, "eddyline_end_to_end_latency_seconds", "eddyline_end_to_end_latency_seconds_sum", flow="exp-test"
        )
        == 0.2
    )


def test_a_stopped_exporter_frees_its_port() -> None:
    server = metrics.serve(0)
    url = server.url
    scrape(url)
    server.stop()
    with pytest.raises(OSError):
        urllib.request.urlopen(url, timeout=2)
