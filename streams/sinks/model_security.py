"""What operators see of the model-security flow in Prometheus: quarantines and releases, by kind and rule.

Labels are bounded (two kinds of source, a handful of rules, two actions): the sources themselves are in the
quarantine list (``eddyline security list``) and in the alerts, never in a label. Alerts raised by the flow are
counted and written as every flow's are (``streams.sinks.alerts``).
"""

from __future__ import annotations

from connectors.prometheus import metric
from streams.flows.names import QUARANTINE_TOPIC
from streams.processor import Emit
from streams.sinks.base import MetricsSink, Point


class ModelSecurityMetricsSink(MetricsSink):
    """Counts the flow's quarantine-list records in ``eddyline_quarantine_changes_total{kind,rule,action}``.

    Parameters
    ----------
    influx
        Where alert points go; None keeps Prometheus only.
    """

    def __init__(self, influx: object | None = None) -> None:
        from prometheus_client import Counter

        super().__init__(influx)
        self.changes = metric(Counter, "eddyline_quarantine_changes",
                              "Sources quarantined from (or released to) online learning, by kind, rule and action.",
                              ["kind", "rule", "action"])

    def points(self, emit: Emit) -> list[Point]:
        if emit.topic == QUARANTINE_TOPIC:
            rec = emit.record
            self.changes.labels(rec["source"].partition(":")[0], rec["rule"], rec["action"]).inc()
        return []


model_security_metrics_sink = ModelSecurityMetricsSink.from_settings
