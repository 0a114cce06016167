"""The event types shipped with eddyline: every version of every Avro schema in ``schemas/avro``.

Layout: ``avro/<event_type>/v<N>.avsc``. The highest version is the one producers write; older
versions stay so that the compatibility test and readers of old data can use them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache, cached_property
from pathlib import Path
from typing import Any

import fastavro

from schemas.errors import UnknownSchemaError

AVRO_DIR = Path(__file__).parent / "avro"

SENSOR_BATCH = "sensor_batch"
AUDIO_CHUNK = "audio_chunk"
TRANSCRIPT = "transcript"
CLICK = "click"
PREDICTION = "prediction"
FEEDBACK = "feedback"
ANOMALY_SCORE = "anomaly_score"
SENTIMENT_SCORE = "sentiment_score"
DRIFT = "drift"
ALERT = "alert"
DEVICE_HEALTH = "device_health"
ROUTING_RECOMMENDATION = "routing_recommendation"
QUARANTINE = "quarantine"
EDGE_MODEL = "edge_model"
EDGE_ROLLOUT = "edge_rollout"

MAX_BATCH_READINGS = 50_000
"""Readings one ``sensor_batch`` may carry, for every producer (edge agent, Python producer, MQTT bridge): at about
15 bytes each they fit one Kafka message (librdkafka's ``message.max.bytes``, 1 MB by default)."""


@dataclass(frozen=True)
class SchemaVersion:
    """One version of an event type's Avro schema, as shipped in ``schemas/avro/<event_type>/v<N>.avsc``.

    Parameters
    ----------
    event_type
        The event type (the folder name).
    version
        N of ``vN.avsc``; the highest is what producers write.
    schema
        The schema as JSON data, defaults included.
    canonical
        Its Parsing Canonical Form: what ids are computed from and registries compare.
    """

    event_type: str
    version: int
    schema: dict[str, Any]
    canonical: str

    @cached_property
    def parsed(self) -> Any:
        """The full schema, parsed: defaults included, which the canonical form strips but readers need."""
        return _parse(json.dumps(self.schema, sort_keys=True))


@cache
def _parse(schema_json: str) -> Any:
    return fastavro.parse_schema(json.loads(schema_json), _write_hint=False)


@cache
def versions(event_type: str) -> tuple[SchemaVersion, ...]:
    """All versions of an event type's schema, oldest first."""
    folder = AVRO_DIR / event_type
    files = sorted(folder.glob("v*.avsc"), key=lambda p: int(p.stem[1:])) if folder.is_dir() else []
    if not files:
        raise UnknownSchemaError(
            f"no schema for event type {event_type!r}; known types: {', '.join(event_types())}",
            event_type=event_type,
        )
    out = []
    for path in files:
        schema = json.loads(path.read_text())
        canonical = fastavro.schema.to_parsing_canonical_form(schema)
        out.append(SchemaVersion(event_type, int(path.stem[1:]), schema, canonical))
    return tuple(out)


def latest(event_type: str) -> SchemaVersion:
    """The newest version of an event type's schema: what producers write and readers resolve to.

    Parameters
    ----------
    event_type
        An event type from ``event_types()``; an unknown one raises ``UnknownSchemaError`` listing them.

    Examples
    --------
    >>> from schemas import latest
    >>> version = latest("sensor_batch")
    >>> version.event_type, version.version >= 1
    ('sensor_batch', True)
    """
    return versions(event_type)[-1]


def event_types() -> list[str]:
    """Every event type that ships with a schema, sorted.

    Examples
    --------
    >>> from schemas import event_types
    >>> "alert" in event_types() and "sensor_batch" in event_types()
    True
    """
    return sorted(p.name for p in AVRO_DIR.iterdir() if p.is_dir() and any(p.glob("v*.avsc")))
