"""What dashboard viewers see of the fleet flow: each device's health in InfluxDB, fleet counts in Prometheus.

Per-device values go to the time-series store only (measurement ``device_health``, tagged by device, class,
versions and state; one point per heartbeat, timed at its broker timestamp, so a replay overwrites it).
Prometheus gets the fleet's device counts by state, device class, agent and model version: bounded label
sets, never a device id.
"""

from __future__ import annotations

from typing import Any

from connectors.influx import EMPTY_TAG
from connectors.prometheus import metric
from streams.flows.fleet import STATE_FIELDS, STATE_TOPIC, SUMMARY_TOPIC
from streams.processor import Emit
from streams.sinks.base import MetricsSink, Point

MEASUREMENT = "device_health"
TAGS = ("device_id", "device_class", "agent_version", "model_version", "state")
FIELDS = (*(f for f in STATE_FIELDS if f != "interval_s"), "interval_s", "delay_ms")
SUMMARY_LABELS = ("shard", "state", "device_class", "agent_version", "model_version")


class FleetMetricsSink(MetricsSink):
    """The fleet flow's dashboards: ``device_health`` points per device, ``eddyline_fleet_devices`` counts.

    Parameters
    ----------
    influx
        Where points go; None keeps Prometheus only.
    """

    def __init__(self, influx: Any | None = None) -> None:
        from prometheus_client import Gauge

        super().__init__(influx)
        self.devices = metric(Gauge, "eddyline_fleet_devices",
                              "Devices by state, class, agent and model version (fleet flow).", list(SUMMARY_LABELS))
        self._shown: dict[str, set[tuple[str, ...]]] = {}  # shard -> label sets set last time

    def points(self, e: Emit) -> list[Point]:
        if e.topic == SUMMARY_TOPIC:
            self._counts(e.record)
            return []
        if e.topic != STATE_TOPIC:
            return []
        r = e.record
        tags = {t: str(r.get(t) or EMPTY_TAG) for t in TAGS}
        fields = {f: float(r[f]) for f in FIELDS if r.get(f) is not None}
        return [(MEASUREMENT, tags, fields, int(r["time_ms"]))]

    def _counts(self, r: dict[str, Any]) -> None:
        shard = r["shard"]
        now = set()
        for row in r["counts"]:
            labels = (shard, row["state"], row["device_class"], row["agent_version"], row["model_version"])
            self.devices.labels(*labels).set(row["devices"])
            now.add(labels)
        for gone in self._shown.get(shard, set()) - now:
            self.devices.remove(*gone)
        self._shown[shard] = now


fleet_metrics_sink = FleetMetricsSink.from_settings
