"""The pipeline-health metrics, defined once so that every flow and sink reports under the same names.

Names follow Prometheus conventions: ``_total`` counters, base units (seconds) in the name. Labels stay
low-cardinality: flow, logical topic, reason, sink; never a device or user id.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from wsgiref.simple_server import WSGIServer

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram, start_http_server

__all__ = [
    "ALERTS",
    "ALERT_BREAKER_STATE",
    "ALERT_DELIVERIES",
    "ALERT_RETRIES",
    "CONSUMER_LAG",
    "DLQ_EVENTS",
    "END_TO_END_LATENCY",
    "EVENTS_CONSUMED",
    "EVENTS_EMITTED",
    "PROCESSING_SECONDS",
    "MetricsServer",
    "metric",
    "serve",
]

EVENTS_CONSUMED = Counter(
    "eddyline_events_consumed_total", "Events a flow decoded from its input topics.", ["flow", "topic"]
)
EVENTS_EMITTED = Counter(
    "eddyline_events_emitted_total", "Events a flow produced to its output topics.", ["flow", "topic"]
)
DLQ_EVENTS = Counter(
    "eddyline_dlq_events_total",
    "Events sent to a dead-letter topic instead of being processed.",
    ["flow", "topic", "reason"],
)
PROCESSING_SECONDS = Histogram(
    "eddyline_processing_seconds",
    "Time a flow spent processing one batch.",
    ["flow"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)
END_TO_END_LATENCY = Histogram(
    "eddyline_end_to_end_latency_seconds",
    "From an event's event_time to its result being emitted.",
    ["flow"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0),
)
CONSUMER_LAG = Gauge(
    "eddyline_consumer_lag",
    "Messages in a flow's input partition after its committed offset (high watermark minus committed offset).",
    ["flow", "topic", "partition"],
)
ALERTS = Counter("eddyline_alerts_total", "Alert state changes raised by the flows.", ["source", "status"])
ALERT_DELIVERIES = Counter(
    "eddyline_alert_deliveries_total", "Alert deliveries to subscribers, by sink and outcome.", ["sink", "outcome"]
)
ALERT_RETRIES = Counter(
    "eddyline_alert_retries_total",
    "Alert deliveries scheduled on the retry topic, by sink and why (failed, breaker_open).",
    ["sink", "reason"],
)
ALERT_BREAKER_STATE = Gauge(
    "eddyline_alert_breaker_state", "Circuit breaker per alert sink: 0 closed, 1 half-open, 2 open.", ["sink"]
)


def metric(kind: type[Any], name: str, doc: str, labels: Sequence[str] = (), **options: Any) -> Any:
    """A process-wide metric, created on first use: sinks built twice (tests, several workers) share it.

    Parameters
    ----------
    kind
        ``prometheus_client.Counter``, ``Gauge`` or ``Histogram``.
    name
        The metric's name (``eddyline_..._total`` for counters).
    doc
        Its help text.
    labels
        Label names; never one per device or user (unbounded series).
    options
        More keyword arguments for ``kind`` (a histogram's ``buckets``).

    Examples
    --------
    A name already registered gives the metric already there:

    >>> from prometheus_client import Counter
    >>> from connectors.prometheus import EVENTS_CONSUMED, metric
    >>> again = metric(Counter, "eddyline_events_consumed_total", "Events a flow decoded.", ["flow", "topic"])
    >>> again is EVENTS_CONSUMED
    True
    """
    existing = REGISTRY._names_to_collectors.get(name)
    return existing if existing is not None else kind(name, doc, list(labels), **options)


@dataclass
class MetricsServer:
    """A running exporter; ``port`` is the bound one (useful when asked for port 0).

    Parameters
    ----------
    host, port
        Where it listens.
    """

    host: str
    port: int
    _server: WSGIServer

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/metrics"

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def serve(port: int, host: str = "127.0.0.1", registry: CollectorRegistry = REGISTRY) -> MetricsServer:
    """Start the exporter in a daemon thread; loopback by default so that exposing it is a decision.

    Parameters
    ----------
    port
        TCP port; 0 picks a free one (read it from the result).
    host
        Listen address; ``0.0.0.0`` to let a Prometheus on another machine scrape it.
    registry
        The collectors to expose (the process-wide default registry).
    """
    server, _thread = start_http_server(port, addr=host, registry=registry)
    return MetricsServer(host=host, port=server.server_port, _server=server)
