"""PagerDuty Events API v2: alerts become incidents, folded by ``alert_key`` as the dedup key.

We speak the Events API directly (one POST) rather than through the ``pagerduty`` package: its client
refuses any base URL that is not https, which rules out a receiver on loopback, and its retry loop
sleeps where we cannot observe it. The wire format is the documented one.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, ClassVar

from pydantic import Field, SecretStr
from pydantic_settings import SettingsConfigDict

from connectors.alerting import DeliveryError, HttpRetryPolicy, post_json, validate_alert
from connectors.config import Section

__all__ = ["DEFAULT_EVENTS_URL", "PagerDutySettings", "PagerDutySink", "pagerduty_event"]

DEFAULT_EVENTS_URL = "https://events.pagerduty.com"
SUMMARY_LIMIT = 1024


class PagerDutySettings(Section):
    """``[pagerduty]`` / ``EDDYLINE_PAGERDUTY_*``; without a routing key the sink is off."""

    toml_table: ClassVar[str] = "pagerduty"
    model_config = SettingsConfigDict(env_prefix="EDDYLINE_PAGERDUTY_", extra="ignore")

    routing_key: SecretStr | None = None
    url: str = Field(DEFAULT_EVENTS_URL, description="Events API base URL; /v2/enqueue is appended.")
    timeout: float = Field(10.0, gt=0, description="Seconds per HTTP attempt.")
    max_retries: int = Field(3, ge=0)
    backoff: float = Field(1.0, ge=0, description="Seconds before the first retry; doubles each time.")

    @property
    def enabled(self) -> bool:
        return self.routing_key is not None and bool(self.routing_key.get_secret_value())


def _timestamp(event_time_ms: Any) -> str | None:
    if not isinstance(event_time_ms, int):
        return None
    return datetime.fromtimestamp(event_time_ms / 1000, tz=UTC).isoformat(timespec="milliseconds")


def pagerduty_event(alert: Mapping[str, Any], routing_key: str) -> dict[str, Any]:
    """The Events API v2 body for one alert: OPENED/UPDATED trigger, RESOLVED resolves, same dedup key."""
    validate_alert(alert)
    event: dict[str, Any] = {"routing_key": routing_key, "dedup_key": alert["alert_key"]}
    if alert["status"] == "RESOLVED":
        event["event_action"] = "resolve"
        return event
    details: dict[str, Any] = dict(alert.get("details") or {})
    if alert.get("value") is not None:
        details["value"] = alert["value"]
    details.setdefault("alert_status", alert["status"])
    if alert.get("event_id"):
        details.setdefault("event_id", alert["event_id"])
    payload: dict[str, Any] = {
        "summary": str(alert["summary"])[:SUMMARY_LIMIT],
        "source": alert["entity"],
        "severity": str(alert["severity"]).lower(),
        "group": alert["source"],
        "custom_details": details,
    }
    timestamp = _timestamp(alert.get("event_time"))
    if timestamp:
        payload["timestamp"] = timestamp
    event.update(event_action="trigger", payload=payload, client="eddyline")
    return event


class PagerDutySink:
    """Sends each alert as a PagerDuty event; safe to repeat, since the dedup key names the incident."""

    name = "pagerduty"

    def __init__(self, settings: PagerDutySettings) -> None:
        if not settings.enabled:
            raise ValueError("PagerDuty is not configured: set pagerduty.routing_key (EDDYLINE_PAGERDUTY_ROUTING_KEY)")
        assert settings.routing_key is not None
        self._routing_key = settings.routing_key.get_secret_value()
        self.endpoint = settings.url.rstrip("/") + "/v2/enqueue"
        self.policy = HttpRetryPolicy(
            max_retries=settings.max_retries, backoff=settings.backoff, timeout=settings.timeout
        )

    def deliver(self, alert: Mapping[str, Any]) -> None:
        event = pagerduty_event(alert, self._routing_key)
        status, text = post_json(self.endpoint, event, self.policy, what="PagerDuty Events API")
        if not 200 <= status < 300:
            raise DeliveryError(f"PagerDuty Events API answered {status}: {text[:200]}", status=status, body=text)

    def close(self) -> None:
        return None
