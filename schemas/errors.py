"""Errors raised for events that cannot be encoded or decoded.

Each carries a short machine-readable ``reason`` (used as the dead-letter header) and a message for people.
"""


class SchemaError(Exception):
    """An event does not fit its schema, or bytes are not an event we can read."""

    reason = "schema_error"

    def __init__(self, message: str, *, event_type: str | None = None) -> None:
        super().__init__(message)
        self.event_type = event_type


class DecodeError(SchemaError):
    """Bytes that are not a Confluent-framed Avro record of a known schema."""

    reason = "undecodable"


class ValidationError(SchemaError):
    """A decoded or outgoing record whose content breaks the event's rules."""

    reason = "invalid"


class UnknownSchemaError(SchemaError):
    """A schema id or event type that no registry knows."""

    reason = "unknown_schema"


class RegistryUnavailableError(SchemaError):
    """The schema registry could not answer (unreachable, overloaded, refusing our credentials).

    Not a fault of the event: a consumer must retry it later and never dead-letter it, a producer must
    report "try again" (HTTP 503), not "invalid event".
    """

    reason = "registry_unavailable"
