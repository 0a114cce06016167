"""The optional local Prometheus endpoint (``metrics_port``); needs the ``edge`` extra's prometheus-client."""

from __future__ import annotations

from typing import Any

from edge_agent.health import Heartbeat


class MetricsEndpoint:
    """Gauges refreshed from each heartbeat, on their own registry, served on loopback by default.

    One agent, one endpoint: the scrape target already names the device, so newer gauges carry no label (the
    older ones keep their ``device`` label: queries written against them would lose their series).
    """

    def __init__(self, host: str, port: int) -> None:
        try:
            from prometheus_client import CollectorRegistry, Gauge, start_http_server
        except ImportError:
            raise RuntimeError(
                "metrics_port is set but prometheus-client is not installed; "
                "pip install 'eddyline[edge]' or unset metrics_port"
            ) from None
        self.registry = CollectorRegistry()
        names = {
            "buffer_depth": "Batches waiting on disk.",
            "buffer_readings": "Readings waiting on disk.",
            "buffer_bytes": "Payload bytes waiting on disk.",
            "in_flight": "Batches sent and not yet acknowledged.",
            "sampled_readings": "Readings sampled since start.",
            "acked_readings": "Readings acknowledged by the broker since start.",
            "send_rate": "Readings acknowledged per second over the last heartbeat interval.",
            "errors": "Source, send and encoding errors since start.",
            "dropped_readings": "Readings dropped by the buffer's size policy, ever.",
            "cpu_percent": "The agent's CPU use in percent of one core.",
            "rss_mb": "The agent's resident memory in MB.",
            "health_dropped": "Health events skipped or failed since start (health never displaces readings).",
        }
        self._gauges: dict[str, Any] = {
            k: Gauge(f"eddyline_edge_{k}", doc, ["device"], registry=self.registry) for k, doc in names.items()
        }
        unlabelled = {
            "dead_letters": "Batches given up since start (refused for good, or unencodable): in the dead-letter file.",
            "rollouts_refused": "Rollout records refused since start (unsigned, another key's, an older one replayed).",
        }
        self._plain: dict[str, Any] = {
            k: Gauge(f"eddyline_edge_{k}", doc, registry=self.registry) for k, doc in unlabelled.items()
        }
        try:
            self.server, self.thread = start_http_server(port, addr=host, registry=self.registry)
        except OSError as exc:  # a configuration error: restarting the agent would not free the port
            raise RuntimeError(
                f"metrics_port {port} on {host}: {exc.strerror}; choose a free port or unset metrics_port"
            ) from None

    def update(self, hb: Heartbeat) -> None:
        for k, g in self._gauges.items():
            g.labels(hb.device_id).set(getattr(hb, k))
        for k, g in self._plain.items():
            g.set(getattr(hb, k))

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
