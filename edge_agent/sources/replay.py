"""Replays recorded readings from a CSV file, a few rows per interval, for testing a site's data end to end."""

from __future__ import annotations

import csv
import logging
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING

from connectors.kafka_log import LogLimit
from edge_agent.sources.base import Chunk, SourceError, now_ms

if TYPE_CHECKING:
    from edge_agent.settings import CsvSource


log = logging.getLogger(__name__)
_REQUIRED = ("timestamp", "sensor", "value")


def parse_timestamp(text: str) -> int:
    """Milliseconds since the epoch from an integer (ms) or an ISO 8601 time (naive means UTC)."""
    text = text.strip()
    if text.lstrip("-").isdigit():
        return int(text)
    dt = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=timezone.utc)
    return int(dt.timestamp() * 1000)


class CsvReplay:
    def __init__(self, cfg: CsvSource) -> None:
        self.name = cfg.name
        self.interval_s = cfg.interval_s
        self.errors = 0
        self._cfg = cfg
        self._path = Path(cfg.path)
        self._done = False
        self._bad_log = LogLimit()
        self._open()

    def _open(self) -> None:
        try:
            # bytes that are not UTF-8 become U+FFFD: that row then fails like any bad row, never the agent
            self._file = self._path.open(newline="", errors="replace")
        except OSError as exc:
            raise SourceError(f"source {self.name!r}: cannot open {self._path}: {exc.strerror}; fix path=") from None
        self._reader = csv.DictReader(self._file)
        missing = [c for c in _REQUIRED if c not in (self._reader.fieldnames or [])]
        if missing:
            self._file.close()
            raise SourceError(
                f"source {self.name!r}: {self._path} lacks column(s) {', '.join(missing)}; "
                "the header must be timestamp,sensor,value[,unit]"
            )

    def read(self) -> list[Chunk]:
        if self._done:
            return []
        chunks: dict[str, Chunk] = {}
        stamp = now_ms() if self._cfg.retime else None
        rows = 0
        while rows < self._cfg.rows_per_read:
            row = next(self._reader, None)
            if row is None:
                if not self._cfg.loop:
                    self._done = True
                    log.info("source %s: replay of %s finished", self.name, self._path)
                    break
                self._file.close()
                self._open()
                continue
            rows += 1
            try:
                ts = stamp if stamp is not None else parse_timestamp(row["timestamp"])
                value = float(row["value"])
                sensor = row["sensor"].strip()
                if not sensor or value != value or value in (float("inf"), float("-inf")):
                    raise ValueError("empty sensor or non-finite value")
            except (ValueError, TypeError, AttributeError) as exc:
                self.errors += 1
                if self._bad_log.due(self.name):
                    log.warning("source %s: %s line %d rejected (%s): %r (%d rows so far; repeats are logged once a "
                                "minute)", self.name, self._path, self._reader.line_num, exc, row, self.errors)
                continue
            unit = (row.get("unit") or "").strip() or None
            chunk = chunks.get(sensor)
            if chunk is None:
                chunk = chunks[sensor] = Chunk(sensor, unit)
            chunk.timestamps.append(ts)
            chunk.values.append(value)
        return list(chunks.values())

    def close(self) -> None:
        self._file.close()
