"""Alert channels by name: the configured subscribers (PagerDuty, Slack), and delivery to all of them at once.

The notify flow (``streams.flows.notify``) delivers through these channels, one destination at a time, with
its own retries; scoring flows never call them. Delivery is at least once: a replayed alert reaches a channel
again, and the channels make that harmless (PagerDuty folds triggers with one dedup key into one incident;
a Slack message says the same thing twice). In ``dispatch`` a channel that fails is logged, counted and handed
to ``on_failure``; the others go on.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from connectors.delivery import AlertSink, DeliveryError
from connectors.pagerduty import PagerDutySettings, PagerDutySink
from connectors.prometheus import ALERT_DELIVERIES
from connectors.slack import SlackSettings, SlackSink

__all__ = ["AlertDispatcher", "FailureHandler"]

log = logging.getLogger(__name__)

FailureHandler = Callable[[str, Mapping[str, Any], Exception], None]


class AlertDispatcher:
    """The alert channels, by name; ``dispatch`` delivers one alert to each, containing failures per channel.

    Each delivery's outcome is counted in ``eddyline_alert_deliveries_total{sink,outcome}``; a failing channel is
    logged and never stops the others.

    Parameters
    ----------
    sinks
        The channels (``PagerDutySink``, ``SlackSink``, ...); their ``name`` is the destination name in retries,
        dead letters and metrics. ``from_settings`` picks the configured ones.
    on_failure
        Called as ``on_failure(sink_name, alert, error)`` when ``dispatch`` fails on a channel; an exception it
        raises is logged, not propagated.
    """

    def __init__(self, sinks: Sequence[AlertSink], *, on_failure: FailureHandler | None = None) -> None:
        self.sinks = list(sinks)
        self.by_name = {sink.name: sink for sink in self.sinks}
        self.on_failure = on_failure

    @classmethod
    def from_settings(
        cls, *, on_failure: FailureHandler | None = None, max_retries: int | None = None
    ) -> AlertDispatcher:
        """The channels that are configured (a PagerDuty routing key, a Slack webhook URL); none is fine.

        Parameters
        ----------
        on_failure
            As for the constructor.
        max_retries
            Overrides each channel's own retries: the notify flow passes 0, since it retries through its retry
            topic rather than by sleeping inside a request.
        """
        override = {} if max_retries is None else {"max_retries": max_retries}
        sinks: list[AlertSink] = []
        pagerduty = PagerDutySettings()
        if pagerduty.enabled:
            sinks.append(PagerDutySink(pagerduty.model_copy(update=override)))
        slack = SlackSettings()
        if slack.enabled:
            sinks.append(SlackSink(slack.model_copy(update=override)))
        return cls(sinks, on_failure=on_failure)

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
