"""What every alert channel shares: the alert's required shape, HTTP retries with backoff, the error a
channel raises when it gives up, and what a deliverer needs around channels that fail: jittered backoff and a
circuit breaker. PagerDuty and Slack build on it; ``connectors.alerting`` fans out to them.
"""

from __future__ import annotations

import http.client
import json
import logging
import random
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from typing import Any, Protocol

__all__ = [
    "ALERT_STATUSES",
    "ALERT_SEVERITIES",
    "AlertSink",
    "Backoff",
    "CircuitBreaker",
    "DeliveryError",
    "HttpRetryPolicy",
    "post_json",
    "retry_after_s",
    "validate_alert",
]

log = logging.getLogger(__name__)

ALERT_STATUSES = ("OPENED", "UPDATED", "RESOLVED")
ALERT_SEVERITIES = ("CRITICAL", "ERROR", "WARNING", "INFO")
MAX_RETRY_AFTER_S = 60.0
MAX_EXPONENT = 1023  # 2.0 ** 1024 overflows a float


class DeliveryError(Exception):
    """An alert could not be delivered: retries exhausted, or the receiver refused it for good (4xx).

    ``retry_after`` is the receiver's Retry-After in seconds, when its last answer had one: a caller that
    retries later must not come back sooner.
    """

    def __init__(self, message: str, *, status: int | None = None, body: str = "",
                 retry_after: float | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.body = body
        self.retry_after = retry_after

    @property
    def permanent(self) -> bool:
        """The receiver refused this request for good (4xx other than 408 and 429): trying again cannot help."""
        return self.status is not None and 400 <= self.status < 500 and self.status not in (408, 429)


class AlertSink(Protocol):
    """A subscriber channel. ``deliver`` retries on its own and raises ``DeliveryError`` when it gives up."""

    name: str

    def deliver(self, alert: Mapping[str, Any]) -> None:
        """Deliver one alert change, retrying as the channel allows; ``DeliveryError`` when giving up.

        Parameters
        ----------
        alert
            An ``alert`` record; one no channel could render raises ``ValueError`` (``validate_alert``).
        """
        ...

    def close(self) -> None: ...


def validate_alert(alert: Mapping[str, Any]) -> None:
    """Reject an alert that no sink could render, with the reason, rather than sending garbage on.

    Parameters
    ----------
    alert
        An ``alert`` record: ``alert_key``, ``status`` (OPENED, UPDATED, RESOLVED), ``severity``
        (CRITICAL, ERROR, WARNING, INFO), ``summary``, ``entity`` and ``source`` are required.

    Examples
    --------
    >>> from connectors.delivery import validate_alert
    >>> validate_alert({"alert_key": "k", "status": "OPENED", "severity": "LOUD", "summary": "s",
    ...                 "entity": "e", "source": "docs"})
    Traceback (most recent call last):
    ...
    ValueError: alert severity 'LOUD' is not one of ('CRITICAL', 'ERROR', 'WARNING', 'INFO')
    """
    missing = [f for f in ("alert_key", "status", "severity", "summary", "entity", "source") if not alert.get(f)]
    if missing:
        raise ValueError(f"alert lacks {', '.join(missing)}: {dict(alert)!r}")
    if alert["status"] not in ALERT_STATUSES:
        raise ValueError(f"alert status {alert['status']!r} is not one of {ALERT_STATUSES}")
    if alert["severity"] not in ALERT_SEVERITIES:
        raise ValueError(f"alert severity {alert['severity']!r} is not one of {ALERT_SEVERITIES}")


@dataclass
class HttpRetryPolicy:
    """Exponential backoff: waits ``backoff * 2**n`` before retry n+1; a 429's Retry-After wins when longer.

    Parameters
    ----------
    max_retries
        Retries after the first attempt.
    backoff
        Seconds before the first retry.
    timeout
        Seconds per HTTP attempt.
    sleep
        How to wait (tests pass a recorder instead of ``time.sleep``).

    Examples
    --------
    >>> from connectors.delivery import HttpRetryPolicy
    >>> policy = HttpRetryPolicy(backoff=0.5)
    >>> [policy.delay(n) for n in range(3)], policy.delay(0, retry_after=5.0)
    ([0.5, 1.0, 2.0], 5.0)
    """

    max_retries: int = 3
    backoff: float = 1.0
    timeout: float = 10.0
    sleep: Callable[[float], None] = time.sleep

    def delay(self, attempt: int, retry_after: float | None = None) -> float:
        """Seconds to wait before retry ``attempt + 1``.

        Parameters
        ----------
        attempt
            Retries made so far (0 before the first).
        retry_after
            The receiver's Retry-After, in seconds, if it sent one (capped at a minute).
        """
        wait = self.backoff * 2.0 ** min(max(0, attempt), MAX_EXPONENT)
        if retry_after is not None:
            wait = max(wait, min(retry_after, MAX_RETRY_AFTER_S))
        return wait


@dataclass
class Backoff:
    """Jittered exponential backoff: after failed attempt ``n`` (from 1), wait a random time in ``[d/2, d]``
    with ``d = min(cap, base * 2**(n-1))``. The jitter spreads alerts that failed together, so a receiver
    that comes back is not hit by all of them at once.

    Parameters
    ----------
    base
        Seconds of the first wait (before jitter).
    cap
        The longest wait, in seconds.
    rng
        Source of the jitter.
    """

    base: float = 1.0
    cap: float = 300.0
    rng: random.Random = field(default_factory=random.Random)

    def delay(self, attempt: int) -> float:
        """Seconds to wait after failed attempt ``attempt``.

        Parameters
        ----------
        attempt
            The attempt that failed, from 1.
        """
        full = min(self.cap, self.base * 2.0 ** min(max(0, attempt - 1), MAX_EXPONENT))
        return full * (0.5 + 0.5 * self.rng.random())


class CircuitBreaker:
    """Stops calling a destination that keeps failing, and tries it again now and then.

    Closed: calls go through; ``failures`` failures in a row open it. Open: no calls for ``reset_s`` seconds,
    then half-open: one trial call at a time; its success closes the breaker, its failure opens it again.
    Thread-safe: deliveries to one destination run in several threads.

    Parameters
    ----------
    failures
        Consecutive failures that open the breaker.
    reset_s
        Seconds it stays open before a trial call.
    clock
        Monotonic seconds (tests pass their own).
    """

    CLOSED, HALF_OPEN, OPEN = "closed", "half_open", "open"
    LEVELS = {CLOSED: 0, HALF_OPEN: 1, OPEN: 2}  # for a gauge

    def __init__(self, failures: int = 5, reset_s: float = 30.0, clock: Callable[[], float] = time.monotonic) -> None:
        if failures < 1 or reset_s < 0:
            raise ValueError("a circuit breaker needs failures >= 1 and reset_s >= 0")
        self.failures = failures
        self.reset_s = reset_s
        self.clock = clock
        self._lock = threading.Lock()
        self._state = self.CLOSED
        self._failed = 0
        self._opened_at = 0.0
        self._trial = False

    @property
    def state(self) -> str:
        with self._lock:
            self._tick()
            return self._state

    def _tick(self) -> None:
        if self._state == self.OPEN and self.clock() >= self._opened_at + self.reset_s:
            self._state, self._trial = self.HALF_OPEN, False

    def admit(self) -> str | None:
        """Whether a call may go out now: ``closed`` (go), ``half_open`` (go, as the one trial call) or None."""
        with self._lock:
            self._tick()
            if self._state == self.CLOSED:
                return self.CLOSED
            if self._state == self.HALF_OPEN and not self._trial:
                self._trial = True
                return self.HALF_OPEN
            return None

    def wait_s(self) -> float:
        """Seconds until a call may be tried again (0 when closed)."""
        with self._lock:
            self._tick()
            if self._state == self.OPEN:
                return max(0.0, self._opened_at + self.reset_s - self.clock())
            return 0.0 if self._state == self.CLOSED else min(self.reset_s, 1.0)  # a trial is out: ask again soon

    def success(self) -> None:
        with self._lock:
            self._state, self._failed, self._trial = self.CLOSED, 0, False

    def failure(self) -> None:
        with self._lock:
            self._failed += 1
            if self._state == self.HALF_OPEN or self._failed >= self.failures:
                self._state, self._opened_at, self._trial = self.OPEN, self.clock(), False


def retry_after_s(headers: Any, now: Callable[[], float] = time.time) -> float | None:
    """A response's Retry-After in seconds from now (it may be seconds or an HTTP date); None without one.

    Parameters
    ----------
    headers
        The response's headers (anything with a case-insensitive ``get``), or None.
    now
        Unix seconds, to turn a date into a wait.

    Examples
    --------
    >>> from connectors.delivery import retry_after_s
    >>> retry_after_s({"Retry-After": "30"}), retry_after_s({"Retry-After": "soon"}), retry_after_s(None)
    (30.0, None, None)
    >>> retry_after_s({"Retry-After": "Thu, 01 Jan 2026 00:01:00 GMT"}, now=lambda: 1_767_225_600.0)
    60.0
    """
    value = headers.get("Retry-After") if headers is not None else None
    if value is None:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            seconds = parsedate_to_datetime(str(value)).timestamp() - now()
        except (TypeError, ValueError, IndexError, OverflowError):
            return None
    return max(0.0, seconds) if seconds == seconds else None  # NaN is no answer


def post_json(url: str, body: Mapping[str, Any], policy: HttpRetryPolicy, *, what: str) -> tuple[int, str]:
    """POST JSON; retry network errors, 429 and 5xx with backoff; raise ``DeliveryError`` when giving up.

    A 4xx other than 429 is not retried: the receiver refused the body for good.

    Parameters
    ----------
    url
        Where to post.
    body
        The JSON body.
    policy
        Retries, backoff and timeout.
    what
        Names the receiver in errors and logs without revealing the URL (webhook URLs are secrets).

    Returns
    -------
    The HTTP status and the response body as text.
    """
    data = json.dumps(body).encode()
    last_error = ""
    last_status: int | None = None
    last_body = ""
    retry_after: float | None = None
    for attempt in range(policy.max_retries + 1):
        retry_after = None
        request = urllib.request.Request(url, data=data, method="POST", headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=policy.timeout) as response:  # noqa: S310 (URL is configured)
                return response.status, response.read().decode("utf-8", "replace")
        except urllib.error.HTTPError as e:
            last_status, last_body = e.code, e.read().decode("utf-8", "replace")[:2000]
            last_error = f"HTTP {e.code}: {last_body[:200]}"
            if e.code != 429 and e.code < 500:
                raise DeliveryError(f"{what} refused the request: {last_error}", status=e.code, body=last_body) from e
            retry_after = retry_after_s(e.headers)
        except (urllib.error.URLError, OSError, http.client.HTTPException) as e:  # refused, reset, timeout
            last_status, last_body = None, ""
            last_error = f"network error: {getattr(e, 'reason', e)}"
        if attempt < policy.max_retries:
            wait = policy.delay(attempt, retry_after)
            log.warning("%s: %s; retry %d/%d in %.3gs", what, last_error, attempt + 1, policy.max_retries, wait)
            policy.sleep(wait)
    raise DeliveryError(
        f"{what}: gave up after {policy.max_retries + 1} attempts; last: {last_error}",
        status=last_status,
        body=last_body,
        retry_after=retry_after,
    )
