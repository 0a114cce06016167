"""The Confluent wire format: magic byte 0, a big-endian 4-byte schema id, then the Avro body."""

from __future__ import annotations

import struct

from schemas.errors import DecodeError

MAGIC = 0
_HEADER = struct.Struct(">bI")
HEADER_SIZE = _HEADER.size


def frame(schema_id: int, body: bytes) -> bytes:
    """Prefix an Avro body with the magic byte and the schema id.

    Parameters
    ----------
    schema_id
        The registry's id of the writer's schema (unsigned, 32 bits).
    body
        The schemaless Avro encoding of one record.

    Examples
    --------
    >>> from schemas.wire import frame, unframe
    >>> data = frame(42, b"body")
    >>> data
    b'\\x00\\x00\\x00\\x00*body'
    >>> schema_id, body = unframe(data)
    >>> schema_id, bytes(body)
    (42, b'body')
    """
    return _HEADER.pack(MAGIC, schema_id) + body


def unframe(data: bytes) -> tuple[int, memoryview]:
    """Split a message into schema id and Avro body; ``DecodeError`` when it is not Confluent-framed.

    Parameters
    ----------
    data
        One Kafka message value.
    """
    if data is None or len(data) < HEADER_SIZE:
        raise DecodeError(f"message of {0 if data is None else len(data)} bytes is too short for the Confluent wire format")
    magic, schema_id = _HEADER.unpack_from(data)
    if magic != MAGIC:
        raise DecodeError(f"magic byte is {magic}, expected {MAGIC}: not a Confluent-framed Avro message")
    return schema_id, memoryview(data)[HEADER_SIZE:]
