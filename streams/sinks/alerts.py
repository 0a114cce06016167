"""Alert state changes as metrics, the same for every flow that raises alerts.

Each ``alerts`` record becomes one InfluxDB point in the ``alerts`` measurement (timed at the alert's
event time, so a replay overwrites it) and one increment of ``eddyline_alerts_total{source,status}``.
"""

from __future__ import annotations

from typing import Any

ALERTS_MEASUREMENT = "alerts"
ALERT_TAGS = ("source", "status", "severity", "entity")
ALERT_FIELDS = ("value", "count")


def alert_point(record: dict[str, Any]) -> tuple[str, dict[str, str], dict[str, float | int], int]:
    """The InfluxDB point for one alert record; ``value`` is 0 when the alert carries none.

    Parameters
    ----------
    record
        An ``alert`` record.

    Examples
    --------
    >>> from streams.sinks.alerts import alert_point
    >>> measurement, tags, fields, time_ms = alert_point({"source": "sensor-anomaly", "status": "OPENED",
    ...     "severity": "ERROR", "entity": "d/t", "value": 42.0, "event_time": 1000})
    >>> measurement, tags["status"], fields, time_ms
    ('alerts', 'OPENED', {'value': 42.0, 'count': 1}, 1000)
    """
    tags = {k: str(record[k]) for k in ALERT_TAGS}
    value = record.get("value")
    fields: dict[str, float | int] = {"value": float(value if value is not None else 0.0), "count": 1}
    return ALERTS_MEASUREMENT, tags, fields, int(record["event_time"])


def count_alert(record: dict[str, Any]) -> None:
    """Count one alert state change in ``eddyline_alerts_total{source,status}``.

    Parameters
    ----------
    record
        An ``alert`` record.
    """
    from connectors.prometheus import ALERTS

    ALERTS.labels(record["source"], record["status"]).inc()
