"""The optional Prometheus endpoint serves the heartbeat's numbers on loopback."""

from __future__ import annotations

import socket
import urllib.request

import pytest

from connectors.broker import free_port
from edge_agent.health import Heartbeat
from edge_agent.metrics import MetricsEndpoint

pytestmark = pytest.mark.integration


def test_metrics_endpoint_serves_heartbeat_gauges() -> None:
    port = free_port()
    endpoint = MetricsEndpoint("127.0.0.1", port)
    try:
        endpoint.update(Heartbeat("pi-9", 12, 3400, 50_000, 4, 10_000, 6_600, 220.5, 3, 17, 2.5, 41.0))
        body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    finally:
        endpoint.close()
    assert 'eddyline_edge_buffer_depth{device="pi-9"} 12.0' in body
    assert 'eddyline_edge_send_rate{device="pi-9"} 220.5' in body
    assert 'eddyline_edge_dropped_readings{device="pi-9"} 17.0' in body
    assert 'eddyline_edge_rss_mb{device="pi-9"} 41.0' in body


def test_dead_letters_and_refused_rollouts_are_served_without_a_device_label() -> None:
    port = free_port()
    endpoint = MetricsEndpoint("127.0.0.1", port)
    try:
        endpoint.update(Heartbeat("pi-9", 0, 0, 0, 0, 10, 10, 0.0, 2, 0, 1.0, 40.0, dead_letters=2, rollouts_refused=1))
        body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    finally:
        endpoint.close()
    assert "\neddyline_edge_dead_letters 2.0\n" in body
    assert "\neddyline_edge_rollouts_refused 1.0\n" in body


def test_a_metrics_port_in_use_is_a_configuration_error_that_says_what_to_change() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(RuntimeError, match=f"metrics_port {port} on 127.0.0.1: .*choose a free port"):
            MetricsEndpoint("127.0.0.1", port)  # the runner exits 2 on it: no restart loop of tracebacks
