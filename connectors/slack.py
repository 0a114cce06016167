"""Slack incoming webhooks: one message per alert change, coloured by what it means for the reader."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from pydantic import Field, SecretStr
from pydantic_settings import SettingsConfigDict

from connectors.alert_explanation import explanation_text
from connectors.delivery import DeliveryError, HttpRetryPolicy, post_json, validate_alert
from connectors.config import Section, channel_on

__all__ = ["SlackSettings", "SlackSink", "slack_message"]

COLOURS = {"CRITICAL": "#a30200", "ERROR": "#e01e5a", "WARNING": "#daa038", "INFO": "#439fe0"}
EMOJI = {
    "CRITICAL": ":rotating_light:",
    "ERROR": ":red_circle:",
    "WARNING": ":warning:",
    "INFO": ":information_source:",
}
RESOLVED_COLOUR = "#2eb886"
RESOLVED_EMOJI = ":white_check_mark:"
VERBS = {"OPENED": "opened", "UPDATED": "updated", "RESOLVED": "resolved"}
TEXT_LIMIT = 3000  # Slack's limit for a text object: a section's text, a context element
FIELD_LIMIT = 2000  # Slack's limit for a section field's text
TITLE_LIMIT = 100  # of a field's title (a detail's key), so that its value keeps the room
# Slack refuses a message whose block texts total more than about 12-13k characters (``msg_blocks_too_long``,
# undocumented; refusals from 11.3k are reported), far below what the per-text limits allow (about 19k here).
BLOCKS_TEXT_LIMIT = 10_000
ELLIPSIS = "…"


class SlackSettings(Section):
    """``[slack]`` / ``EDDYLINE_SLACK_*``; without a webhook URL (or with ``off``) the sink is off. The URL is a secret.

    Parameters
    ----------
    webhook_url
        The channel's incoming-webhook URL.
    max_retries
        Retries after the first attempt (network errors, 429, 5xx).
    """

    toml_table: ClassVar[str] = "slack"
    model_config = SettingsConfigDict(env_prefix="EDDYLINE_SLACK_", extra="forbid")

    webhook_url: SecretStr | None = None
    timeout: float = Field(10.0, gt=0, description="Seconds per HTTP attempt.")
    max_retries: int = Field(3, ge=0)
    backoff: float = Field(1.0, ge=0, description="Seconds before the first retry; doubles each time.")

    @property
    def enabled(self) -> bool:
        return channel_on(self.webhook_url)


def _escape(text: Any) -> str:
    """Slack mrkdwn treats &, < and > as control characters."""
    return str(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _fit(text: Any, limit: int) -> str:
    """``text`` escaped, and cut with an ellipsis to ``limit`` characters: Slack refuses a whole message with one text
    over its limit (400 ``invalid_blocks``), and a device id or alert key can be any length. Never cut inside an
    escape, which would show as a stray ``&``."""
    escaped = _escape(text)
    if len(escaped) <= limit:
        return escaped
    cut = escaped[: limit - len(ELLIPSIS)]
    amp = cut.rfind("&", len(cut) - len("&amp;") + 1)
    if amp >= 0 and ";" not in cut[amp:]:
        cut = cut[:amp]
    return cut + ELLIPSIS


class _Room:
    """The block text a message has left: parts are taken most important first, so that what Slack's total would
    refuse is cut from the least important (details, then the explanation), never from the headline."""

    def __init__(self, chars: int) -> None:
        self.left = chars

    def text(self, prefix: str, value: Any, limit: int, suffix: str = "") -> str | None:
        """``value`` cut to fit with its ``prefix`` and ``suffix`` in ``limit`` and in the room left; None when
        not even a character of it fits."""
        limit = min(limit, self.left) - len(prefix) - len(suffix)
        if limit <= len(ELLIPSIS):
            return None
        text = prefix + _fit(value, limit) + suffix
        self.left -= len(text)
        return text

    def field(self, title: Any, value: Any) -> dict[str, str] | None:
        text = self.text(f"*{_fit(title, TITLE_LIMIT)}*\n", value, FIELD_LIMIT)
        return None if text is None else {"type": "mrkdwn", "text": text}


def slack_message(alert: Mapping[str, Any]) -> dict[str, Any]:
    """Text for notifications and old clients, blocks for the channel, a coloured bar for the severity.

    Parameters
    ----------
    alert
        An ``alert`` record (see ``connectors.delivery.validate_alert`` for what it needs).

    Examples
    --------
    >>> from connectors.slack import slack_message
    >>> alert = {"alert_key": "inc-1", "status": "RESOLVED", "severity": "ERROR", "summary": "d/t back to <normal>",
    ...          "entity": "d/t", "source": "sensor-anomaly"}
    >>> message = slack_message(alert)
    >>> message["text"]
    ':white_check_mark: ERROR resolved: d/t back to &lt;normal&gt;'
    >>> message["attachments"][0]["color"]
    '#2eb886'
    """
    validate_alert(alert)
    status, severity = alert["status"], alert["severity"]
    resolved = status == "RESOLVED"
    emoji = RESOLVED_EMOJI if resolved else EMOJI[severity]
    colour = RESOLVED_COLOUR if resolved else COLOURS[severity]
    room = _Room(BLOCKS_TEXT_LIMIT)
    headline = room.text(f"{emoji} {severity} {VERBS[status]}: ", alert["summary"], TEXT_LIMIT)
    assert headline is not None  # the first part, and TEXT_LIMIT is below BLOCKS_TEXT_LIMIT
    shown = {"Status": status, "Severity": severity, "Entity": alert["entity"], "Source": alert["source"]}
    if alert.get("value") is not None:
        shown["Value"] = f"{alert['value']:.6g}"
    fields = [room.field(title, value) for title, value in shown.items()]
    when = ""
    if isinstance(alert.get("event_time"), int):
        seconds = alert["event_time"] // 1000
        when = f" at <!date^{seconds}^{{date_short_pretty}} {{time_secs}}|{seconds}>"
    context = room.text("alert `", alert["alert_key"], FIELD_LIMIT, suffix="`" + when)
    explained = explanation_text(alert.get("explanation"))
    why = room.text("*Why*: ", explained, TEXT_LIMIT) if explained else None
    details = alert.get("details") or {}
    fields += [room.field(key, details[key]) for key in sorted(details)[: 10 - len(fields)]]  # 10 fields at most
    blocks = [{"type": "section", "text": {"type": "mrkdwn", "text": headline}}]
    if why:
        blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": why}})
    if context:
        blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": context}]})
    return {
        "text": headline,
        "blocks": blocks,
        "attachments": [{"color": colour, "blocks": [{"type": "section", "fields": [f for f in fields if f]}]}],
    }


class SlackSink:
    """Posts each alert change to an incoming webhook; anything but an ``ok`` answer is a ``DeliveryError``.

    Parameters
    ----------
    settings
        Slack settings with a webhook URL (``ValueError`` saying what to set otherwise).
    """

    name = "slack"

    def __init__(self, settings: SlackSettings) -> None:
        if not settings.enabled:
            raise ValueError("Slack is not configured: set slack.webhook_url (EDDYLINE_SLACK_WEBHOOK_URL)")
        assert settings.webhook_url is not None
        self._url = settings.webhook_url.get_secret_value()
        self.policy = HttpRetryPolicy(
            max_retries=settings.max_retries, backoff=settings.backoff, timeout=settings.timeout
        )

    def deliver(self, alert: Mapping[str, Any]) -> None:
        """Post one alert change (``slack_message``); an answer other than ``ok`` is a ``DeliveryError``.

        Parameters
        ----------
        alert
            An ``alert`` record.
        """
        status, text = post_json(self._url, slack_message(alert), self.policy, what="Slack webhook")
        if text.strip() != "ok":
            raise DeliveryError(
                f"Slack webhook answered {status} {text[:200]!r}, expected 'ok'", status=status, body=text
            )

    def close(self) -> None:
        return None
