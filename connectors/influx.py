"""Time series out to InfluxDB v2 (or anything speaking its write API) through influxdb-client's batching writer.

The batching writer sends in the background, so a failed batch would otherwise only reach a log line.
Here every batch is accounted for: points queued, written, lost. ``flush()`` and ``close()`` wait for the
batches in flight (``max_close_wait`` at most, so an outage cannot hold the caller for every queued batch's
retries) and raise ``InfluxWriteError`` when any point since the last check was lost. During an outage at
most ``max_pending_points`` wait in memory; more are dropped and counted as lost.

Tag keys and values come from records, so they are made fit for line protocol (``clean_tag``, counted)
rather than refused: the client does not escape a backslash and writes a newline as ``\\n``, which mangles
the series or loses the point while it counts as written, and it drops an empty tag, which merges series.

Writes are idempotent: a point with the same measurement, tags and time overwrites the earlier one, so a
replay after a crash rewrites the same points instead of adding new ones.
"""

from __future__ import annotations

import logging
import math
import re
import threading
import time
from collections.abc import Iterable, Mapping
from typing import Any, ClassVar, NamedTuple

from pydantic import Field, SecretStr
from pydantic_settings import SettingsConfigDict

from connectors.config import Section

__all__ = [
    "EMPTY_TAG",
    "FieldValue",
    "InfluxPoint",
    "InfluxSettings",
    "InfluxSink",
    "InfluxWriteError",
    "MalformedPointError",
    "check_point",
    "clean_tag",
]

log = logging.getLogger(__name__)

FieldValue = float | int | str | bool
EMPTY_TAG = "none"  # what an empty tag value is written as
LOG_EVERY_S = 60.0  # repeats of a warning (normalised tags, dropped or refused points) are held back this long
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def log_due(logged: dict[str, float], event: str) -> bool:
    """Whether a warning about ``event`` may be logged now (at most once per ``LOG_EVERY_S``; ``logged`` keeps
    when each was last): an outage or a bad source would repeat it per batch."""
    now = time.monotonic()
    if now - logged.get(event, -math.inf) < LOG_EVERY_S:
        return False
    logged[event] = now
    return True


class InfluxSettings(Section):
    """``[influx]`` / ``EDDYLINE_INFLUX_*``; without a URL the sink is off.

    Parameters
    ----------
    url
        The InfluxDB (or VictoriaMetrics) base URL, e.g. ``http://influxdb:8086``.
    token
        API token with write access to the bucket; prefer ``EDDYLINE_INFLUX_TOKEN``.
    org, bucket
        Where points are written.
    batch_size
        Points per write request.
    flush_interval_ms
        Longest a point waits in the batch before it is sent.
    max_retries
        Retries of a failed batch before its points count as lost.
    max_retry_delay_ms
        Cap on the delay between two retries.
    max_pending_points
        Points waiting to be sent, at most; more are dropped and counted as lost.
    """

    toml_table: ClassVar[str] = "influx"
    model_config = SettingsConfigDict(env_prefix="EDDYLINE_INFLUX_", extra="forbid")

    url: str | None = None
    token: SecretStr = SecretStr("")
    org: str = "eddyline"
    bucket: str = "eddyline"
    batch_size: int = Field(1000, ge=1)
    flush_interval_ms: int = Field(1000, ge=1)
    max_retries: int = Field(5, ge=0)
    retry_interval_ms: int = Field(1000, ge=1, description="Delay before the first retry; grows exponentially.")
    max_retry_delay_ms: int = Field(30_000, ge=1)
    max_retry_time_ms: int = Field(120_000, ge=1, description="Give a batch up after this long in retries.")
    timeout_ms: int = Field(10_000, ge=1, description="Per HTTP request.")
    max_pending_points: int = Field(
        100_000,
        ge=1,
        description="Points waiting to be sent, at most (they pile up while InfluxDB is down); more are dropped and "
        "counted as lost.",
    )

    @property
    def enabled(self) -> bool:
        return bool(self.url)


class InfluxPoint(NamedTuple):
    """One point: a measurement, its tags (the series) and fields at a time.

    A point with the same measurement, tags and time overwrites the earlier one, which is what makes a
    replay idempotent.

    Parameters
    ----------
    measurement
        The measurement (``sensor``, ``alerts``, ``drift``, ...).
    tags
        Series labels (device id, sensor); strings.
    fields
        The values: numbers, strings or booleans.
    time_ms
        Event time, ms since the epoch, UTC.
    """

    measurement: str
    tags: Mapping[str, str]
    fields: Mapping[str, FieldValue]
    time_ms: int


class _Writer:
    """One batching writer and its own accounting, so that draining it tells exactly what it lost."""

    api: Any
    scheduler: Any

    def __init__(self) -> None:
        self.queued = 0
        self.done = 0
        self.given_up = False  # its unfinished points were counted as lost: late callbacks must not count them again


class InfluxWriteError(RuntimeError):
    """Points were lost: their batch failed after its retries (or never finished before close)."""


class MalformedPointError(ValueError):
    """A point that line protocol cannot carry; ``reason`` names the rule it breaks, for counting.

    Parameters
    ----------
    reason
        ``measurement``, ``no_fields``, ``tag``, ``field_name``, ``field_type``, ``field_not_finite`` or ``time``.
    message
        What is wrong, with the offending name or value.
    """

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def _batch_points(data: Any) -> int:
    if isinstance(data, str):
        data = data.encode()
    return data.count(b"\n") + 1 if data else 0


class InfluxSink:
    """Queue points; they are sent in batches of ``batch_size`` or every ``flush_interval_ms``.

    Every point is accounted for (``points_queued``, ``points_written``, ``points_lost``; ``points_dropped`` of
    the lost ones never queued, ``max_pending_points`` being reached); ``flush()`` and ``close()`` raise
    ``InfluxWriteError`` when points were lost since the last check. ``tags_normalised`` counts the tag keys and
    values ``clean_tag`` changed, by reason.

    Parameters
    ----------
    settings
        Influx settings with a URL (``ValueError`` saying what to set otherwise).
    """

    def __init__(self, settings: InfluxSettings) -> None:
        from influxdb_client import InfluxDBClient

        if not settings.enabled:
            raise ValueError("InfluxDB is not configured: set influx.url (EDDYLINE_INFLUX_URL)")
        self.settings = settings
        self.bucket = settings.bucket
        self._client = InfluxDBClient(
            url=settings.url, token=settings.token.get_secret_value(), org=settings.org, timeout=settings.timeout_ms
        )
        self._lock = threading.RLock()
        self.points_queued = 0
        self.points_written = 0
        self.points_lost = 0
        self.points_dropped = 0
        self.tags_normalised: dict[str, int] = {}
        self.errors = 0  # batches that failed after their retries
        self.retries = 0
        self.last_error: Exception | None = None
        self._logged: dict[str, float] = {}
        self._reported_lost = 0
        self._closed = False
        self._writer = self._open_writer()

    def _open_writer(self) -> _Writer:
        from influxdb_client.client.write_api import WriteOptions, WriteType
        from reactivex.scheduler import ThreadPoolScheduler

        s = self.settings
        w = _Writer()
        w.scheduler = ThreadPoolScheduler(max_workers=1)  # the library's default is shared by every writer
        options = WriteOptions(
            write_type=WriteType.batching,
            batch_size=s.batch_size,
            flush_interval=s.flush_interval_ms,
            retry_interval=s.retry_interval_ms,
            max_retries=s.max_retries,
            max_retry_delay=s.max_retry_delay_ms,
            max_retry_time=s.max_retry_time_ms,
            max_close_wait=s.max_retry_time_ms + 2 * s.timeout_ms + s.flush_interval_ms,
            write_scheduler=w.scheduler,
        )
        w.api = self._client.write_api(
            write_options=options,
            success_callback=lambda key, data: self._on_success(w, data),
            error_callback=lambda key, data, error: self._on_error(w, key, data, error),
            retry_callback=lambda key, data, error: self._on_retry(w),
        )
        return w

    # --- callbacks, from the writer's threads ----------------------------------------------------

    def _on_success(self, w: _Writer, data: Any) -> None:
        n = _batch_points(data)
        with self._lock:
            if w.given_up:
                return
            w.done += n
            self.points_written += n

    def _on_error(self, w: _Writer, key: tuple[str, str, str], data: Any, error: Exception) -> None:
        n = _batch_points(data)
        with self._lock:
            if w.given_up:
                return
            w.done += n
            self.errors += 1
            self.points_lost += n
            self.last_error = error
        log.error(
            "InfluxDB write failed, %d points lost (bucket=%s): %s",
            n,
            key[0],
            error,
            extra={"event": "influx_write_failed", "bucket": key[0], "points": n, "error": str(error)},
        )

    def _on_retry(self, w: _Writer) -> None:
        with self._lock:
            if not w.given_up:
                self.retries += 1

    # --- writing ---------------------------------------------------------------------------------

    def write(self, measurement: str, tags: Mapping[str, str], fields: Mapping[str, FieldValue], time_ms: int) -> None:
        """Queue one point.

        Parameters
        ----------
        measurement, tags, fields, time_ms
            As for ``InfluxPoint``.
        """
        self.write_points([InfluxPoint(measurement, tags, fields, time_ms)])

    def write_points(
        self, points: Iterable[InfluxPoint | tuple[str, Mapping[str, str], Mapping[str, FieldValue], int]]
    ) -> None:
        """Queue points; a malformed one raises ``MalformedPointError`` before any of the batch is queued.

        Tag keys and values are passed through ``clean_tag``; points beyond ``max_pending_points`` are dropped
        and counted as lost.

        Parameters
        ----------
        points
            ``InfluxPoint``s or (measurement, tags, fields, time_ms) tuples.
        """
        from influxdb_client import Point, WritePrecision

        built = []
        changed: dict[str, int] = {}
        for p in points:
            measurement, tags, fields, time_ms = p
            check_point(measurement, tags, fields, time_ms)
            point = Point(measurement).time(time_ms, WritePrecision.MS)
            for k, v in tags.items():
                point.tag(_clean_counted(k, changed), _clean_counted(v, changed))
            for k, v in fields.items():
                point.field(k, v)
            built.append(point)
        if not built:
            return
        with self._lock:
            if self._closed:
                raise RuntimeError("InfluxSink is closed")
            for reason, n in changed.items():
                self.tags_normalised[reason] = self.tags_normalised.get(reason, 0) + n
            room = self.settings.max_pending_points - (self._writer.queued - self._writer.done)
            dropped = len(built) - max(room, 0)
            if dropped > 0:
                built = built[: len(built) - dropped]
                self.points_queued += dropped
                self.points_lost += dropped
                self.points_dropped += dropped
                self.last_error = BufferError(
                    f"{dropped} points dropped: {self.settings.max_pending_points} were waiting to be sent already"
                )
            if built:
                self.points_queued += len(built)
                self._writer.queued += len(built)
                # under the lock, so that flush() cannot close this writer in between; this only enqueues
                self._writer.api.write(
                    bucket=self.bucket, org=self.settings.org, record=built, write_precision=WritePrecision.MS
                )
            log_changed = bool(changed) and log_due(self._logged, "influx_tags_normalised")
            log_dropped = dropped > 0 and log_due(self._logged, "influx_points_dropped")
            totals, dropped_total = dict(self.tags_normalised), self.points_dropped
        if log_changed:
            log.warning(
                "InfluxDB tag keys or values changed to fit line protocol (empty: %r, backslash: '/', control "
                "characters: ' '), so far by reason: %s; repeats are logged once a minute",
                EMPTY_TAG, totals, extra={"event": "influx_tags_normalised", "reasons": totals},
            )
        if log_dropped:
            log.error(
                "InfluxDB writes are behind: %d points dropped so far (bucket=%s, max_pending_points=%d); repeats "
                "are logged once a minute",
                dropped_total, self.bucket, self.settings.max_pending_points,
                extra={"event": "influx_points_dropped", "bucket": self.bucket, "points": dropped_total},
            )


    def flush(self) -> None:
        """Send everything queued, wait for it, and raise if any point since the last check was lost.

        influxdb-client's batching writer has no working flush, so the writer is closed (which drains it, as
        long as ``close()`` waits at most) and a fresh one takes its place.
        """
        with self._lock:
            if self._closed:
                return
            old, self._writer = self._writer, self._open_writer()
        self._drain(old)
        self._raise_if_lost()

    def close(self) -> None:
        """Send what is queued and raise if any point was lost; waits as long as one batch's retries may take
        (``max_retry_time_ms`` + 2 ``timeout_ms`` + ``flush_interval_ms``) at most, whatever is queued."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        self._drain(self._writer)
        self._client.close()
        self._raise_if_lost()

    def _drain(self, w: _Writer) -> None:
        w.api.close()  # waits for the queued batches, max_close_wait at most
        # batches still queued are not sent: waiting would run each through its retries (an outage's worth)
        w.scheduler.executor.shutdown(wait=False, cancel_futures=True)
        with self._lock:
            w.given_up = True
            unfinished = w.queued - w.done
            if unfinished > 0:  # the writer stopped waiting for them: as lost as a failed batch
                w.done = w.queued
                self.points_lost += unfinished
                self.last_error = TimeoutError(
                    f"{unfinished} points still unsent when the writer was closed (max_close_wait reached)"
                )

    @property
    def points_pending(self) -> int:
        with self._lock:
            return self.points_queued - self.points_written - self.points_lost

    def _raise_if_lost(self) -> None:
        with self._lock:
            lost = self.points_lost - self._reported_lost
            self._reported_lost = self.points_lost
            error = self.last_error
        if lost:
            raise InfluxWriteError(f"{lost} points were not written to InfluxDB; last error: {error}")

    def __enter__(self) -> InfluxSink:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def clean_tag(text: str) -> str:
    r"""``text`` as a tag key or value that line protocol carries unchanged: a backslash becomes ``/``, a control
    character a space, an empty value ``EMPTY_TAG``.

    The client does not escape a backslash, so a trailing one swallows the separator after it and one before a
    space or comma changes what is escaped; it writes a newline as ``\n``, stored as those two characters, and
    passes other control characters through; an empty tag it drops.

    Parameters
    ----------
    text
        A tag key or value.

    Examples
    --------
    >>> from connectors.influx import clean_tag
    >>> clean_tag("C:\\temp\\"), clean_tag("two\nlines"), clean_tag(""), clean_tag("a,b=c d")
    ('C:/temp/', 'two lines', 'none', 'a,b=c d')
    """
    return _clean_counted(text, None)


def _clean_counted(text: str, changed: dict[str, int] | None) -> str:
    if text and "\\" not in text and text.isprintable():
        return text
    if not text:
        reasons = ["empty"]
        text = EMPTY_TAG
    else:
        reasons = []
        if "\\" in text:
            reasons.append("backslash")
            text = text.replace("\\", "/")
        if _CONTROL.search(text):
            reasons.append("control")
            text = _CONTROL.sub(" ", text)
    if changed is not None:
        for r in reasons:
            changed[r] = changed.get(r, 0) + 1
    return text


def check_point(measurement: Any, tags: Mapping[str, Any], fields: Mapping[str, Any], time_ms: Any) -> None:
    """Raise ``MalformedPointError`` for a point line protocol cannot carry: the client would drop it, or its
    field, without a word. Tag keys and values that ``clean_tag`` can fix pass.

    Parameters
    ----------
    measurement, tags, fields, time_ms
        As for ``InfluxPoint``.
    """
    if not isinstance(measurement, str) or not measurement:
        raise MalformedPointError("measurement", f"measurement must be a non-empty string, got {measurement!r}")
    if not fields:
        raise MalformedPointError("no_fields", f"point {measurement!r} has no fields")
    for k, v in tags.items():
        if not isinstance(k, str) or not k or not isinstance(v, str):
            raise MalformedPointError(
                "tag", f"tag {k!r}={v!r} of {measurement!r}: tag keys are non-empty strings, values strings"
            )
    for k, v in fields.items():
        if not isinstance(k, str) or not k:
            raise MalformedPointError("field_name", f"field name {k!r} of {measurement!r} must be a non-empty string")
        if not isinstance(v, (bool, int, float, str)):
            raise MalformedPointError(
                "field_type", f"field {k!r} of {measurement!r} has unsupported type {type(v).__name__}"
            )
        if isinstance(v, float) and not math.isfinite(v):
            raise MalformedPointError(
                "field_not_finite", f"field {k!r} of {measurement!r} is {v}: InfluxDB cannot store NaN or infinity"
            )
    if isinstance(time_ms, bool) or not isinstance(time_ms, int):
        raise MalformedPointError(
            "time", f"time_ms of {measurement!r} must be an int (ms since the epoch), got {time_ms!r}"
        )
