"""Time series out to InfluxDB v2 (or anything speaking its write API) through influxdb-client's batching writer.

The batching writer sends in the background, so a failed batch would otherwise only reach a log line.
Here every batch is accounted for: points queued, written, spooled, lost. ``flush()`` and ``close()`` wait for
the batches in flight (``max_close_wait`` at most, so an outage cannot hold the caller for every queued batch's
retries) and raise ``InfluxWriteError`` when any point since the last check was lost. During an outage at
most ``max_pending_points`` wait in memory.

The guarantee: the flow never waits on InfluxDB, and a point it hands over is written, or spooled, or counted as
lost. With a spool folder (``MetricsSink.from_settings`` gives each sink one), a batch that fails after its
retries, and a point beyond ``max_pending_points``, is appended to the spool (``LineSpool``, line protocol text)
instead of being lost; a background thread writes the spool back, oldest first, once the server answers again,
and a sink started on the same folder replays what an earlier run left there. Lost are only: what exceeds
``spool_max_bytes`` (the oldest spooled points, counted in ``points_spool_dropped``), a torn last line after a
crash, lines the server refuses for good (400, 413, 422), and the batches still queued in memory when ``close()``
stops waiting or the process dies: once a write has failed, new points go straight to the spool until a write or a
replay succeeds (the batching writer cannot hand its queued batches back), so these are at most the points queued
before the outage was noticed. Spooled lines reach the page cache at once, so a crash of the process keeps
them; a crash of the machine may tear the last ones. A point may be written twice (replay after a crash);
that is harmless, as below.

Tag keys and values come from records, so they are made fit for line protocol (``clean_tag``, counted)
rather than refused: the client does not escape a backslash and writes a newline as ``\\n``, which mangles
the series or loses the point while it counts as written, and it drops an empty tag, which merges series.

Writes are idempotent: a point with the same measurement, tags and time overwrites the earlier one, so a
replay after a crash rewrites the same points instead of adding new ones.
"""

from __future__ import annotations

import fcntl
import itertools
import logging
import math
import os
import re
import threading
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, BinaryIO, ClassVar, NamedTuple

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
    "LineSpool",
    "MalformedPointError",
    "check_point",
    "clean_tag",
]

log = logging.getLogger(__name__)

FieldValue = float | int | str | bool
EMPTY_TAG = "none"  # what an empty tag value is written as
LOG_EVERY_S = 60.0  # repeats of a warning (normalised tags, dropped or refused points) are held back this long
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
SEGMENT_BYTES = 4 << 20  # a spool segment, at most: replay reads a whole one into memory
REFUSED_FOR_GOOD = frozenset({400, 413, 422})  # the server will not take these lines however often they are sent
_NS_LIMIT = 2**63 - 2  # line protocol times are int64 nanoseconds: InfluxDB's range, 1677 to 2262


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
        Points waiting to be sent, at most; more are spooled, or dropped and counted as lost without a spool.
    spool_dir
        Where each sink's spool folder goes; unset: ``influx-spool`` under ``[runtime] state_dir``.
    spool_max_bytes
        Spool per sink, at most; 0 turns the spool off.
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
        description="Points waiting to be sent, at most (they pile up while InfluxDB is down); more are spooled, or "
        "dropped and counted as lost without a spool.",
    )
    spool_dir: Path | None = Field(
        None,
        description="Points not written within the retry budget wait here on disk, one folder per sink, and are "
        "written once InfluxDB answers again (also after a restart); unset: influx-spool under [runtime] state_dir.",
    )
    spool_max_bytes: int = Field(
        256 << 20,
        ge=0,
        description="Spool per sink, at most; past it the oldest spooled points are dropped and counted. 0: no spool "
        "(points not written within the retry budget are lost, counted).",
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


class _Segment:
    """A spool segment claimed for replay: its lock (the open file), its lines and how many were sent."""

    def __init__(self, path: Path, file: BinaryIO, lines: list[bytes], torn: int) -> None:
        self.path = path
        self.file = file
        self.lines = lines
        self.torn = torn
        self.sent = 0


_SEGMENT_IDS = itertools.count()


def _write_all(file: BinaryIO, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[file.write(view) :]


class LineSpool:
    """Line protocol lines that could not be written, kept on disk until they can: plain text segment files in
    one folder, replayed oldest first, ``max_bytes`` of them at most (past it the oldest segments go, counted).

    Each writer appends to a segment of its own, locked (``flock``) while open, and a replayer takes only segments
    nobody holds, so the workers of a flow, and its next run, can share a folder: a segment a crashed run left is
    replayed by whichever sink starts next. A crash mid-append tears the last line of that writer's segment only;
    replay skips it (counted) and keeps the lines before it. Replay sends a whole segment before deleting it,
    so a crash in between sends some lines twice, which overwrites the same points.

    Parameters
    ----------
    folder
        The spool folder, made at the first append.
    max_bytes
        Bytes of segments in the folder, at most; a segment is an eighth of it (``SEGMENT_BYTES`` at most), so
        dropping one keeps most, and the oldest go first (but the one being replayed).
    """

    SUFFIX = ".lp"

    def __init__(self, folder: Path, max_bytes: int) -> None:
        self.folder = Path(folder)
        self.max_bytes = max_bytes
        self.segment_bytes = max(min(max_bytes // 8, SEGMENT_BYTES), 1)
        self._lock = threading.Lock()
        self._current: BinaryIO | None = None
        self._current_path: Path | None = None
        self._current_size = 0

    def append(self, data: bytes) -> int:
        """Append newline-separated lines; returns how many of the oldest spooled lines were dropped to stay
        within ``max_bytes``.

        Parameters
        ----------
        data
            Line protocol lines, as a write request's body.
        """
        data = data.rstrip(b"\n") + b"\n"
        with self._lock:
            file = self._current or self._open_segment()
            try:
                _write_all(file, data)  # unbuffered: in the page cache at once, a crash of the process keeps it
            except OSError:  # a full disk after a short write: no part of a line may stay to join the next one
                self._cut_back()
                raise
            self._current_size += len(data)
            if self._current_size >= self.segment_bytes:
                self._seal()
            return self._trim()

    def claim(self) -> _Segment | None:
        """The oldest segment nobody holds, locked for the caller, or None; this spool's own open segment is
        sealed for it when there is no other."""
        segment = self._claim_oldest()
        if segment is None:
            with self._lock:
                path = self._current_path if self._current_size else None
                self._seal()
            if path is not None:
                segment = self._lock_segment(path)
        return segment

    def finish(self, segment: _Segment) -> None:
        """Delete a segment whose lines were all sent (or dropped), and unlock it.

        Parameters
        ----------
        segment
            From ``claim``.
        """
        segment.path.unlink(missing_ok=True)
        segment.file.close()

    def release(self, segment: _Segment) -> None:
        """Unlock a segment not replayed to its end: it is replayed in full later, by this sink or the next.

        Parameters
        ----------
        segment
            From ``claim``.
        """
        segment.file.close()

    def close(self) -> None:
        """Close this spool's open segment; what it holds stays for the next run."""
        with self._lock:
            self._seal()

    def _open_segment(self) -> BinaryIO:
        self.folder.mkdir(parents=True, exist_ok=True)
        stem = f"{time.time_ns():020d}-{os.getpid()}-{next(_SEGMENT_IDS)}"
        draft = self.folder / f"{stem}.tmp"  # locked before it is named a segment, so no replayer takes it empty
        file = draft.open("xb", buffering=0)
        fcntl.flock(file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        self._current_path = draft.rename(self.folder / f"{stem}{self.SUFFIX}")
        self._current, self._current_size = file, 0
        return file

    def _seal(self) -> None:
        file, self._current, self._current_path, self._current_size = self._current, None, None, 0
        if file is not None:
            file.close()

    def _cut_back(self) -> None:
        """Truncate the open segment to its last whole line; sealed instead where that fails too, so that replay
        takes the part line for a torn one."""
        try:
            self._current.truncate(self._current_size)
            self._current.seek(self._current_size)
        except OSError:
            self._seal()

    def _segments(self) -> list[tuple[Path, int]]:
        try:
            entries = list(os.scandir(self.folder))
        except FileNotFoundError:
            return []
        found = []
        for e in entries:
            if e.name.endswith(self.SUFFIX):
                try:
                    found.append((Path(e.path), e.stat().st_size))
                except FileNotFoundError:  # replayed and deleted meanwhile
                    pass
        return sorted(found)

    def _claim_oldest(self) -> _Segment | None:
        for path, _ in self._segments():
            segment = self._lock_segment(path)
            if segment is not None:
                return segment
        return None

    def _lock_segment(self, path: Path) -> _Segment | None:
        try:
            file = path.open("rb")
        except FileNotFoundError:
            return None
        try:
            fcntl.flock(file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:  # a writer's open segment, or another replayer's
            file.close()
            return None
        if os.fstat(file.fileno()).st_nlink == 0:  # replayed and deleted between open and lock
            file.close()
            return None
        lines = file.read().split(b"\n")
        torn = 1 if lines[-1] else 0  # no newline at the end: the append a crash cut short
        return _Segment(path, file, [line for line in lines[:-1] if line], torn)

    def _trim(self) -> int:
        segments = self._segments()
        excess = sum(size for _, size in segments) - self.max_bytes
        dropped = 0
        for path, size in segments:
            if excess <= 0:
                break
            segment = self._lock_segment(path)
            if segment is None:  # being written or replayed
                continue
            dropped += len(segment.lines) + segment.torn
            excess -= size
            self.finish(segment)
        return dropped


class InfluxWriteError(RuntimeError):
    """Points were lost: their batch failed after its retries without a spool to take it (or never finished
    before close), or the spool dropped them."""


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

    Every point is accounted for (``points_queued``, ``points_written``, ``points_spooled``, ``points_lost``;
    ``points_dropped`` of the lost ones never queued, ``max_pending_points`` being reached without a spool).
    Spooled points leave by ``points_replayed`` or ``points_spool_dropped`` (the spool's bound, a torn line, a
    refusal); ``flush()`` and ``close()`` raise ``InfluxWriteError`` when points were lost or dropped from the
    spool since the last check. ``tags_normalised`` counts the tag keys and values ``clean_tag`` changed, by reason.

    Parameters
    ----------
    settings
        Influx settings with a URL (``ValueError`` saying what to set otherwise).
    spool
        This sink's spool folder (None: no spool, or ``spool_max_bytes`` 0); a folder an earlier run left points
        in is replayed from the start.
    """

    def __init__(self, settings: InfluxSettings, spool: Path | None = None) -> None:
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
        self.points_spooled = 0
        self.points_replayed = 0
        self.points_spool_dropped = 0
        self._spool = LineSpool(spool, settings.spool_max_bytes) if spool and settings.spool_max_bytes else None
        self._wake = threading.Event()  # a point was spooled
        self._outage: str | None = None  # why writes fail, while they do: new points then go straight to the spool
        self._stop = threading.Event()
        self._writer = self._open_writer()
        self._replayer: threading.Thread | None = None
        if self._spool is not None:
            self._replayer = threading.Thread(target=self._replay, args=(self._spool,), name="influx-spool-replay",
                                              daemon=True)
            self._replayer.start()

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
            self._set_outage(None)
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
            self.last_error = error
            if getattr(error, "status", None) not in REFUSED_FOR_GOOD and self._spooled(data, n, str(error)):
                self._set_outage(str(error))
                return
            self.points_lost += n
        log.error(
            "InfluxDB write failed, %d points lost (bucket=%s): %s",
            n,
            key[0],
            error,
            extra={"event": "influx_write_failed", "bucket": key[0], "points": n, "error": str(error)},
        )

    def _set_outage(self, why: str | None) -> None:
        """Enter (``why`` the error) or leave outage mode, under ``_lock``. In it new points go to the spool, not to
        the batching writer: what that writer holds when ``close()`` stops waiting, or the process dies, is lost
        (it cannot hand its queued batches back), so only what was queued before the outage was noticed may be."""
        if (why is None) == (self._outage is None):
            return
        self._outage = why
        if why is not None:
            log.warning(
                "InfluxDB is not taking writes (%s): new points go straight to the spool %s until a write or a replay "
                "succeeds", why, self._spool.folder if self._spool else None,
                extra={"event": "influx_outage", "bucket": self.bucket, "error": why},
            )
        else:
            log.warning("InfluxDB takes writes again: new points are sent, not spooled (bucket=%s)", self.bucket,
                        extra={"event": "influx_outage_over", "bucket": self.bucket})

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

        Tag keys and values are passed through ``clean_tag``; points beyond ``max_pending_points`` are spooled,
        or without a spool dropped and counted as lost.

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
            if self._outage is not None and self._spooled(
                "\n".join(p.to_line_protocol() for p in built), len(built), self._outage
            ):
                self.points_queued += len(built)
                built = []
            room = self.settings.max_pending_points - (self._writer.queued - self._writer.done)
            dropped = len(built) - max(room, 0)
            if dropped > 0:
                built, over = built[: len(built) - dropped], built[len(built) - dropped :]
                self.points_queued += dropped
                behind = f"{self.settings.max_pending_points} points were waiting to be sent already"
                if self._spooled("\n".join(p.to_line_protocol() for p in over), dropped, behind):
                    dropped = 0
                else:
                    self.points_lost += dropped
                    self.points_dropped += dropped
                    self.last_error = BufferError(f"{dropped} points dropped: {behind}")
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

    def _spooled(self, data: bytes | str, n: int, why: str) -> bool:
        """Append points to the spool, under ``_lock``; False when there is none or it cannot be written. ``why``
        they were not written goes in the log: a refused token or a missing bucket is not an outage."""
        if self._spool is None:
            return False
        try:
            dropped = self._spool.append(data.encode() if isinstance(data, str) else data)
        except OSError as exc:
            self.last_error = exc
            if log_due(self._logged, "influx_spool_failed"):
                log.error("cannot spool InfluxDB points to %s: %s; points that cannot wait in memory are lost "
                          "(counted); repeats are logged once a minute",
                          self._spool.folder, exc, extra={"event": "influx_spool_failed", "error": str(exc)})
            return False
        self.points_spooled += n
        self._wake.set()
        if log_due(self._logged, "influx_points_spooled"):
            log.warning(
                "%d InfluxDB points spooled to %s for replay (%d so far): %s; repeats are logged once a minute",
                n, self._spool.folder, self.points_spooled, why,
                extra={"event": "influx_points_spooled", "points": n, "spooled": self.points_spooled, "error": why},
            )
        self._spool_dropped(dropped, f"the spool reached spool_max_bytes={self._spool.max_bytes}")
        return True

    def _spool_dropped(self, n: int, why: str) -> None:
        if n <= 0:
            return
        with self._lock:
            self.points_spool_dropped += n
            self.last_error = BufferError(f"{n} spooled points dropped: {why}")
            due, total = log_due(self._logged, "influx_spool_dropped"), self.points_spool_dropped
        if due:
            log.error(
                "%d spooled InfluxDB points dropped (%s), %d so far; repeats are logged once a minute",
                n, why, total, extra={"event": "influx_spool_dropped", "points": n, "dropped": total},
            )

    def _replay(self, spool: LineSpool) -> None:
        """Write the spool back, oldest first, ``batch_size`` lines a request, backing off while the server does
        not answer; in a thread of its own, so that neither the flow nor the batching writer waits for it."""
        from influxdb_client import WritePrecision
        from influxdb_client.client.write_api import SYNCHRONOUS

        s = self.settings
        api = self._client.write_api(write_options=SYNCHRONOUS)  # one attempt per call: the backoff is here
        segment: _Segment | None = None
        backoff = 0.0
        try:
            while not self._stop.is_set():
                try:
                    if segment is None:
                        self._wake.clear()
                        segment = spool.claim()
                        if segment is None:  # woken by the next spooled point, or looks for one another run left
                            self._wake.wait(s.max_retry_delay_ms / 1000)
                            continue
                        self._spool_dropped(segment.torn, f"a torn last line in {segment.path}")
                    chunk = segment.lines[segment.sent : segment.sent + s.batch_size]
                    if chunk:
                        try:
                            api.write(bucket=self.bucket, org=s.org, record=b"\n".join(chunk),
                                      write_precision=WritePrecision.MS)
                        except Exception as exc:
                            if getattr(exc, "status", None) not in REFUSED_FOR_GOOD:
                                backoff = self._replay_backoff(backoff, "influx_replay_failed", exc)
                                continue
                            self._spool_dropped(len(chunk), f"refused by the server: {exc}")
                            with self._lock:  # it answered: it takes writes, only not these lines
                                self._set_outage(None)
                        else:
                            with self._lock:
                                self.points_replayed += len(chunk)
                                self._set_outage(None)
                    backoff = 0.0
                    segment.sent += len(chunk)
                    if segment.sent >= len(segment.lines):
                        spool.finish(segment)
                        segment = None
                except Exception as exc:  # a dead thread would leave the spool undrained for good, and say nothing
                    backoff = self._replay_backoff(backoff, "influx_replay_error", exc)
        finally:
            if segment is not None:
                spool.release(segment)

    def _replay_backoff(self, backoff: float, event: str, exc: Exception) -> float:
        """Log why replay stopped (once a minute) and wait the next backoff, which it returns; the segment in hand
        is kept, so replay goes on where it stopped."""
        s = self.settings
        backoff = min(max(2 * backoff, s.retry_interval_ms / 1000), s.max_retry_delay_ms / 1000)
        if log_due(self._logged, event):
            failed = event == "influx_replay_failed"  # else not the server: a bug, or the spool's disk
            log.log(logging.WARNING if failed else logging.ERROR,
                    "replaying spooled InfluxDB points %s, retrying in %g s: %s; repeats are logged once a minute",
                    "failed" if failed else "hit an error", round(backoff, 3), exc,
                    extra={"event": event, "error": str(exc)}, exc_info=not failed)
        self._stop.wait(backoff)
        return backoff

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
        (``max_retry_time_ms`` + 2 ``timeout_ms`` + ``flush_interval_ms``) at most, whatever is queued. What the
        spool still holds stays there for the next run."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        self._drain(self._writer)
        self._stop.set()
        self._wake.set()
        if self._replayer is not None:
            self._replayer.join(timeout=2 * self.settings.timeout_ms / 1000)  # a replay request may be in flight
        if self._spool is not None:
            self._spool.close()
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
            return self.points_queued - self.points_written - self.points_lost - self.points_spooled

    def _raise_if_lost(self) -> None:
        with self._lock:
            lost = self.points_lost + self.points_spool_dropped - self._reported_lost
            self._reported_lost += lost
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
    field, without a word, and a time out of its range (microseconds or nanoseconds taken for milliseconds) InfluxDB
    refuses with the whole batch and VictoriaMetrics drops while it counts as written. Tag keys and values that
    ``clean_tag`` can fix pass.

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
    if abs(time_ms) * 1_000_000 > _NS_LIMIT:
        raise MalformedPointError(
            "time", f"time_ms of {measurement!r} is {time_ms}, outside the years 1677 to 2262 that InfluxDB stores: "
            "ms since the epoch are wanted (is it in microseconds or nanoseconds?)"
        )
