"""PagerDuty Events API v2 through the ``pagerduty`` package: alerts become incidents, ``alert_key`` is the dedup key
(hashed when longer than the 255 characters the API takes).

The package's client does the retrying (429 and 5xx by status, network errors by attempt, sleeping
``sleep_timer * sleep_timer_base**n``); we set its knobs from our settings so that ``max_retries`` bounds
every kind of retry, including 429, which it would otherwise retry forever, and the first wait is
``backoff``, doubling after. It ignores Retry-After between its own retries; the last answer's Retry-After
goes out on the ``DeliveryError``, so a caller that retries later (the notify flow) waits at least that long.
It only speaks https: ``ca_file`` is how a private receiver (the loopback one in tests and the demo) is trusted.
"""

from __future__ import annotations

import hashlib
import json
import math
import ssl
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any, ClassVar

import pagerduty
from pydantic import Field, SecretStr, field_validator
from pydantic_settings import SettingsConfigDict

from connectors.alert_explanation import explanation_text
from connectors.delivery import DeliveryError, retry_after_s, validate_alert
from connectors.config import Section, channel_on

__all__ = ["DEFAULT_EVENTS_URL", "PagerDutySettings", "PagerDutySink", "dedup_key", "pagerduty_event"]

DEFAULT_EVENTS_URL = "https://events.pagerduty.com"
SUMMARY_LIMIT = 1024
DEDUP_KEY_LIMIT = 255  # characters; the Events API refuses a longer dedup_key (400)
DETAIL_LIMIT = 4096  # characters of one custom detail, and of the source: an event over 512 KB is refused (413)
# Bytes of JSON all custom details may take: with the summary, source and group at their limits and each character
# escaped at its longest (12 bytes), the event stays under the 512 KB PagerDuty takes.
DETAILS_BYTES_LIMIT = 256 * 1024
KEPT_DETAILS = frozenset({"value", "alert_status", "why", "event_id", "alert_key"})  # at most 5 values: ~250 KB
MAX_TIMESTAMP_MS = 253_402_300_799_999  # 9999-12-31T23:59:59.999Z, the last instant datetime holds


class PagerDutySettings(Section):
    """``[pagerduty]`` / ``EDDYLINE_PAGERDUTY_*``; without a routing key (or with ``off``) the sink is off.

    Parameters
    ----------
    routing_key
        The integration key of a PagerDuty service (Events API v2). A secret: prefer the environment.
    """

    toml_table: ClassVar[str] = "pagerduty"
    model_config = SettingsConfigDict(env_prefix="EDDYLINE_PAGERDUTY_", extra="forbid")

    routing_key: SecretStr | None = None
    url: str = Field(DEFAULT_EVENTS_URL, description="Events API base URL (https); /v2/enqueue is appended.")
    ca_file: str | None = Field(None, description="PEM certificate(s) to trust instead of the system's.")
    timeout: float = Field(10.0, gt=0, description="Seconds per HTTP attempt.")
    max_retries: int = Field(3, ge=0, description="Retries after the first attempt, of any kind (429, 5xx, network).")
    backoff: float = Field(1.0, ge=0, description="Seconds before the first retry; doubles each time.")

    @field_validator("url")
    @classmethod
    def _https_only(cls, url: str) -> str:
        if not url.startswith("https://"):
            raise ValueError(f"pagerduty.url must be https:// (the Events API client refuses anything else): {url!r}")
        return url.rstrip("/")

    @property
    def enabled(self) -> bool:
        return channel_on(self.routing_key)


def _timestamp(event_time_ms: Any) -> str | None:
    """The event's time for ``payload.timestamp``, or None when it cannot be one (an optional field: a device that
    reports microseconds must not cost the page)."""
    if not isinstance(event_time_ms, int) or isinstance(event_time_ms, bool):
        return None
    if not 0 <= event_time_ms <= MAX_TIMESTAMP_MS:
        return None
    return datetime.fromtimestamp(event_time_ms / 1000, tz=UTC).isoformat(timespec="milliseconds")


def _detail(value: Any) -> Any:
    """A value as the Events API takes it, so that one odd field cannot cost the page: JSON has no NaN or infinity
    (the client will not send them), and a free-text field of any length (a user id) is cut to ``DETAIL_LIMIT``."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, str) and len(value) > DETAIL_LIMIT:
        return value[: DETAIL_LIMIT - 1] + "…"
    if isinstance(value, Mapping):
        return {str(k): _detail(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_detail(v) for v in value]
    return value


def _bounded(details: dict[str, Any]) -> dict[str, Any]:
    """``details`` without its largest entries (but ours, ``KEPT_DETAILS``) until its JSON fits
    ``DETAILS_BYTES_LIMIT``: each value is cut already, yet an alert with many of them, or a long list, would make an
    event PagerDuty refuses, and the page would be lost for the sake of its least useful parts. What was left out
    is said."""
    sizes = {k: len(json.dumps({k: v}, default=str)) for k, v in details.items()}  # as sent: ASCII-escaped
    over = sum(sizes.values()) - DETAILS_BYTES_LIMIT
    left_out = set()
    for k in sorted(details.keys() - KEPT_DETAILS, key=lambda k: (sizes[k], k), reverse=True):
        if over <= 0:
            break
        left_out.add(k)
        over -= sizes[k]
    if not left_out:
        return details
    kept = {k: v for k, v in details.items() if k not in left_out}
    kept["details_left_out"] = f"{len(left_out)} details, the largest, over PagerDuty's size limit"
    return kept


def dedup_key(alert_key: str) -> str:
    """The alert key as a dedup key the Events API takes: itself, or when longer than 255 characters, its start
    and a hash of all of it (the same key always gives the same dedup key, so its resolve finds the incident).

    Parameters
    ----------
    alert_key
        The alert's key.

    Examples
    --------
    >>> from connectors.pagerduty import dedup_key
    >>> dedup_key("inc-1")
    'inc-1'
    >>> long = dedup_key("model-security/user:" + "u" * 300)
    >>> len(long), long[:24], long == dedup_key("model-security/user:" + "u" * 300)
    (255, 'model-security/user:uuuu', True)
    """
    if len(alert_key) <= DEDUP_KEY_LIMIT:
        return alert_key
    digest = hashlib.sha256(alert_key.encode("utf-8", "surrogatepass")).hexdigest()
    return f"{alert_key[:DEDUP_KEY_LIMIT - len(digest) - 1]}#{digest}"


def pagerduty_event(alert: Mapping[str, Any], routing_key: str) -> dict[str, Any]:
    """The Events API v2 body for one alert: OPENED/UPDATED trigger, RESOLVED resolves, same dedup key
    (``dedup_key``: the alert key, hashed when too long; the alert key is then in ``custom_details``).

    Parameters
    ----------
    alert
        An ``alert`` record (see ``connectors.delivery.validate_alert`` for what it needs).
    routing_key
        The service's integration key.

    Examples
    --------
    >>> from connectors.pagerduty import pagerduty_event
    >>> alert = {"alert_key": "inc-1", "status": "OPENED", "severity": "ERROR", "summary": "Anomaly on d/t",
    ...          "entity": "d/t", "source": "sensor-anomaly", "event_time": 1_767_225_600_000}
    >>> event = pagerduty_event(alert, "KEY")
    >>> event["event_action"], event["dedup_key"], event["payload"]["severity"], event["payload"]["timestamp"]
    ('trigger', 'inc-1', 'error', '2026-01-01T00:00:00.000+00:00')
    >>> pagerduty_event({**alert, "status": "RESOLVED"}, "KEY")
    {'routing_key': 'KEY', 'dedup_key': 'inc-1', 'event_action': 'resolve'}
    """
    validate_alert(alert)
    key = dedup_key(str(alert["alert_key"]))
    event: dict[str, Any] = {"routing_key": routing_key, "dedup_key": key}
    if alert["status"] == "RESOLVED":
        event["event_action"] = "resolve"
        return event
    details: dict[str, Any] = dict(alert.get("details") or {})
    if alert.get("value") is not None:
        details["value"] = alert["value"]
    details.setdefault("alert_status", alert["status"])
    if alert.get("explanation"):
        details["why"] = explanation_text(alert["explanation"])
        details["explanation"] = dict(alert["explanation"])
    if alert.get("event_id"):
        details.setdefault("event_id", alert["event_id"])
    if key != alert["alert_key"]:
        details.setdefault("alert_key", alert["alert_key"])
    payload: dict[str, Any] = {
        "summary": str(alert["summary"])[:SUMMARY_LIMIT],
        "source": _detail(str(alert["entity"])),
        "severity": str(alert["severity"]).lower(),
        "group": _detail(str(alert["source"])),
        "custom_details": _bounded(_detail(details)),
    }
    timestamp = _timestamp(alert.get("event_time"))
    if timestamp:
        payload["timestamp"] = timestamp
    event.update(event_action="trigger", payload=payload, client="eddyline")
    return event


RETRIED_STATUSES = (429, *range(500, 600))
SLEEP_FACTOR = 2


def events_client(settings: PagerDutySettings) -> pagerduty.EventsApiV2Client:
    """An Events API client whose retries follow our settings (see the module docstring)."""
    if settings.routing_key is None:
        raise ValueError("PagerDuty is not configured: set pagerduty.routing_key (EDDYLINE_PAGERDUTY_ROUTING_KEY)")
    verify: ssl.SSLContext | bool = True
    if settings.ca_file:
        try:
            verify = ssl.create_default_context(cafile=settings.ca_file)
        except (OSError, ssl.SSLError) as e:
            raise ValueError(f"pagerduty.ca_file {settings.ca_file!r} is not a readable PEM certificate: {e}") from e
    client = pagerduty.EventsApiV2Client(
        settings.routing_key.get_secret_value(), base_url=settings.url, verify=verify, timeout=settings.timeout
    )
    client.timeout = settings.timeout  # the client passes its own timeout on every request
    # A status's retry count must be positive to bound it (0 means the default: 429 forever); the total
    # across statuses is cut when it exceeds max_http_attempts, so max_retries - 1 allows max_retries.
    client.retry = dict.fromkeys(RETRIED_STATUSES, max(settings.max_retries, 1))
    client.max_http_attempts = settings.max_retries - 1
    client.max_network_attempts = settings.max_retries
    client.sleep_timer_base = SLEEP_FACTOR
    client.sleep_timer = settings.backoff / SLEEP_FACTOR  # multiplied by the base before each wait
    client.stagger_cooldown = 0
    return client


class PagerDutySink:
    """Sends each alert as a PagerDuty event; safe to repeat, since the dedup key names the incident.

    Parameters
    ----------
    settings
        PagerDuty settings with a routing key (``ValueError`` saying what to set otherwise).
    """

    name = "pagerduty"

    def __init__(self, settings: PagerDutySettings) -> None:
        if not settings.enabled:
            raise ValueError("PagerDuty is not configured: set pagerduty.routing_key (EDDYLINE_PAGERDUTY_ROUTING_KEY)")
        assert settings.routing_key is not None
        self._routing_key = settings.routing_key.get_secret_value()
        self.attempts = settings.max_retries + 1
        self.client = events_client(settings)

    def deliver(self, alert: Mapping[str, Any]) -> None:
        """OPENED and UPDATED trigger (PagerDuty folds them into one incident), RESOLVED resolves.

        Parameters
        ----------
        alert
            An ``alert`` record; its ``alert_key`` is the dedup key.
        """
        event = pagerduty_event(alert, self._routing_key)
        key = event["dedup_key"]
        if event["event_action"] == "resolve":
            self._send(lambda: self.client.resolve(key))
            return
        payload, client = event["payload"], event["client"]
        self._send(lambda: self.client.send_event("trigger", dedup_key=key, payload=payload, client=client))

    def acknowledge(self, alert_key: str) -> None:
        """Acknowledge the incident of ``alert_key``; alerts carry no acknowledged status, so this is explicit.

        Parameters
        ----------
        alert_key
            The incident's dedup key.
        """
        if not alert_key:
            raise ValueError("acknowledge needs an alert_key")
        key = dedup_key(alert_key)
        self._send(lambda: self.client.acknowledge(key))

    def _send(self, call: Callable[[], str]) -> None:
        try:
            call()
        except pagerduty.HttpError as e:
            status, body = e.response.status_code, e.response.text[:2000]
            answer = f"HTTP {status}: {body[:200]}"
            if status == 429 or status >= 500:
                message = f"PagerDuty Events API: gave up after {self.attempts} attempts; last: {answer}"
            elif status < 300:
                message = f"PagerDuty Events API answered without a dedup_key: {answer}"
            else:
                message = f"PagerDuty Events API refused the event: {answer}"
            retry_after = retry_after_s(e.response.headers)
            raise DeliveryError(message, status=status, body=body, retry_after=retry_after) from e
        except pagerduty.Error as e:  # no response: network errors after the client's retries
            cause = e.__cause__ or e
            raise DeliveryError(
                f"PagerDuty Events API: gave up after {self.attempts} attempts; last: network error: {cause}"
            ) from e

    def close(self) -> None:
        self.client.close()
