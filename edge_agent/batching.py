"""Readings in, sealed batches out: one ``sensor.readings`` message per batch, many readings per message."""

from __future__ import annotations

import time
from typing import Any

from edge_agent.sources.base import Chunk
from schemas import SENSOR_BATCH, AvroSerde, derive_id


class Batcher:
    """Groups chunks by sensor until ``max_readings`` are held or the first is ``max_age_s`` old."""

    def __init__(self, max_readings: int, max_age_s: float) -> None:
        self.max_readings = max_readings
        self.max_age_s = max_age_s
        self._series: dict[str, Chunk] = {}
        self._count = 0
        self._opened: float | None = None

    def add(self, chunks: list[Chunk]) -> None:
        for c in chunks:
            if not c.values:
                continue
            s = self._series.get(c.sensor)
            if s is None:
                self._series[c.sensor] = Chunk(c.sensor, c.unit, list(c.timestamps), list(c.values))
            else:
                s.timestamps.extend(c.timestamps)
                s.values.extend(c.values)
            self._count += len(c.values)
            if self._opened is None:
                self._opened = time.monotonic()

    def __len__(self) -> int:
        return self._count

    def deadline(self) -> float | None:
        """The monotonic time by which the open batch must be sealed; None when empty."""
        return None if self._opened is None else self._opened + self.max_age_s

    def due(self, now: float) -> bool:
        return self._count >= self.max_readings or (self._opened is not None and now >= self._opened + self.max_age_s)

    def seal(self) -> list[Chunk]:
        series = list(self._series.values())
        self._series, self._count, self._opened = {}, 0, None
        return series


class BatchEncoder:
    """Encodes a batch as Avro in the Confluent wire format; the event id derives from device and seq."""

    def __init__(self, device_id: str, producer: str, topic: str, serde: AvroSerde | None = None) -> None:
        self.device_id = device_id
        self.producer = producer
        self.topic = topic
        self.serde = serde or AvroSerde()

    def record(self, seq: int, series: list[Chunk], local_model: str | None = None) -> dict[str, Any]:
        """The ``sensor_batch`` record; ``local_model`` names the model that set the chunks' flags, if any."""
        return {
            "event_id": derive_id(self.device_id, seq),
            "event_time": max(s.timestamps[-1] for s in series),
            "producer": self.producer,
            "device_id": self.device_id,
            "seq": seq,
            "series": [
                {"sensor": s.sensor, "unit": s.unit, "timestamps": s.timestamps, "values": s.values,
                 "local_flags": s.flags}
                for s in series
            ],
            "local_model": local_model,
        }

    def encode(self, seq: int, series: list[Chunk], local_model: str | None = None) -> bytes:
        """Raises ``schemas.ValidationError`` for readings the schema rules reject (e.g. NaN)."""
        return self.serde.encode(SENSOR_BATCH, self.record(seq, series, local_model), topic=self.topic)
