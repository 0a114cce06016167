"""Alert delivery: fan the ``alerts`` topic out to subscribers (PagerDuty, Slack) without letting one stop the flow.

Delivery is at least once: a replayed alert reaches the sinks again, and the sinks make that harmless
(PagerDuty folds triggers with one dedup key into one incident; a Slack message says the same thing twice).
A sink that still fails after its retries is logged, counted and handed to ``on_failure``; the others and
the flow go on.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from connectors.delivery import (
    ALERT_SEVERITIES,
    ALERT_STATUSES,
    AlertSink,
    DeliveryError,
    HttpRetryPolicy,
    post_json,
    validate_alert,
)
from connectors.pagerduty import PagerDutySettings, PagerDutySink
from connectors.prometheus import ALERT_DELIVERIES
from connectors.slack import SlackSettings, SlackSink

__all__ = [
    "ALERT_SEVERITIES",
    "ALERT_STATUSES",
    "AlertDispatcher",
    "AlertSink",
    "DeliveryError",
    "HttpRetryPolicy",
    "post_json",
    "validate_alert",
]

log = logging.getLogger(__name__)

FailureHandler = Callable[[str, Mapping[str, Any], Exception], None]


class AlertDispatcher:
    """Delivers every emit on the alerts topic to every sink; failures are contained per sink.

    It is a flow side sink (``streams.processor.Sink`` by shape: ``write(emits)`` and ``close()``) without
    importing streams, so that connectors depend on schemas alone. Each delivery's outcome is counted in
    ``eddyline_alert_deliveries_total{sink,outcome}``; a failing sink is logged and never stops the others.

    Parameters
    ----------
    sinks
        The channels (``PagerDutySink``, ``SlackSink``, ...); ``from_settings`` picks the configured ones.
    on_failure
        Called as ``on_failure(sink_name, alert, error)`` when a sink gives up on an alert (to park it on a
        retry topic, say); an exception it raises is logged, not propagated.
    topic
        The logical topic whose emits are alerts.
    """

    def __init__(
        self, sinks: Sequence[AlertSink], *, on_failure: FailureHandler | None = None, topic: str = "alerts"
    ) -> None:
        self.sinks = list(sinks)
        self.on_failure = on_failure
        self.topic = topic

    @classmethod
    def from_settings(cls, *, on_failure: FailureHandler | None = None) -> AlertDispatcher:
        """The sinks that are configured (a PagerDuty routing key, a Slack webhook URL); none is fine.

        Parameters
        ----------
        on_failure
            As for the constructor.
        """
        sinks: list[AlertSink] = []
        pagerduty = PagerDutySettings()
        if pagerduty.enabled:
            sinks.append(PagerDutySink(pagerduty))
        slack = SlackSettings()
        if slack.enabled:
            sinks.append(SlackSink(slack))
        return cls(sinks, on_failure=on_failure)

    def write(self, emits: Sequence[Any]) -> None:
        """Dispatch every emit on the alerts topic; other emits are not alerts and are left alone.

        Parameters
        ----------
        emits
            A flow's emits, as a side sink receives them.
        """
        for emit in emits:
            if emit.topic == self.topic:
                self.dispatch(emit.record)

    def dispatch(self, alert: Mapping[str, Any]) -> dict[str, str]:
        """Deliver one alert to every sink; returns each sink's outcome (delivered, failed, invalid, error).

        Parameters
        ----------
        alert
            An ``alert`` record.
        """
        outcomes: dict[str, str] = {}
        for sink in self.sinks:
            try:
                sink.deliver(alert)
                outcome = "delivered"
            except DeliveryError as e:
                outcome = "failed"
                self._failed(sink.name, alert, e, outcome, status=e.status)
            except ValueError as e:
                outcome = "invalid"
                self._failed(sink.name, alert, e, outcome)
            except Exception as e:  # a bug in one sink must not stop the flow or the other sinks
                outcome = "error"
                self._failed(sink.name, alert, e, outcome, exc_info=True)
            ALERT_DELIVERIES.labels(sink=sink.name, outcome=outcome).inc()
            outcomes[sink.name] = outcome
        return outcomes

    def _failed(
        self,
        sink: str,
        alert: Mapping[str, Any],
        error: Exception,
        outcome: str,
        *,
        status: int | None = None,
        exc_info: bool = False,
    ) -> None:
        log.error(
            "alert delivery %s: sink=%s alert_key=%s status=%s: %s",
            outcome,
            sink,
            alert.get("alert_key"),
            alert.get("status"),
            error,
            exc_info=exc_info,
            extra={
                "event": "alert_delivery_failed",
                "sink": sink,
                "outcome": outcome,
                "alert_key": alert.get("alert_key"),
                "alert_status": alert.get("status"),
                "event_id": alert.get("event_id"),
                "http_status": status,
                "error": str(error),
            },
        )
        if self.on_failure is not None:
            try:
                self.on_failure(sink, alert, error)
            except Exception:
                log.exception("on_failure handler raised for sink=%s alert_key=%s", sink, alert.get("alert_key"))

    def close(self) -> None:
        for sink in self.sinks:
            sink.close()
