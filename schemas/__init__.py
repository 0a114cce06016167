"""eddyline's event types: Avro schemas, the Confluent wire format, registries and validation."""

from schemas.catalog import (
    ALERT,
    ANOMALY_SCORE,
    AUDIO_CHUNK,
    CLICK,
    DRIFT,
    FEEDBACK,
    PREDICTION,
    QUARANTINE,
    ROUTING_RECOMMENDATION,
    SENSOR_BATCH,
    SENTIMENT_SCORE,
    TRANSCRIPT,
    event_types,
    latest,
    versions,
)
from schemas.errors import DecodeError, RegistryUnavailableError, SchemaError, UnknownSchemaError, ValidationError
from schemas.ids import derive_id, new_id
from schemas.registry import ConfluentRegistry, LocalRegistry
from schemas.serde import AvroSerde

__all__ = [
    "ALERT",
    "ANOMALY_SCORE",
    "AUDIO_CHUNK",
    "CLICK",
    "DRIFT",
    "FEEDBACK",
    "PREDICTION",
    "QUARANTINE",
    "ROUTING_RECOMMENDATION",
    "SENSOR_BATCH",
    "SENTIMENT_SCORE",
    "TRANSCRIPT",
    "AvroSerde",
    "ConfluentRegistry",
    "DecodeError",
    "LocalRegistry",
    "RegistryUnavailableError",
    "SchemaError",
    "UnknownSchemaError",
    "ValidationError",
    "derive_id",
    "event_types",
    "latest",
    "new_id",
    "versions",
]
