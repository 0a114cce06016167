"""Encoding and decoding events: Avro bodies in the Confluent wire format, checked against the rules."""

from __future__ import annotations

import io
import json
from typing import Any

import fastavro
from fastavro.validation import validate

from schemas import catalog, validation, wire
from schemas.avro_compiled import compile_reader, compile_writer
from schemas.errors import DecodeError, SchemaError, ValidationError
from schemas.registry import LocalRegistry, Registry


class AvroSerde:
    """Turns event records into framed Avro bytes and back.

    Decoding resolves the writer's schema (by the id in the frame) against the latest reader schema of
    the expected event type, so old producers keep working after a backward-compatible change. Encoding
    writes the latest version and checks the event's rules (``schemas.validation``) unless told not to.

    Parameters
    ----------
    registry
        Where schema ids come from: ``LocalRegistry()`` (ids from the schemas' content, nothing running)
        by default, or a ``ConfluentRegistry``.
    compiled
        Read and write bodies with readers and writers compiled per schema (``schemas.avro_compiled``:
        the same records and bytes, several times cheaper on arrays of readings; needs numpy and numba, so
        flows turn it on and the edge agent does not). fastavro handles whatever they leave.

    Examples
    --------
    >>> from schemas import FEEDBACK, AvroSerde, DecodeError, ValidationError
    >>> serde = AvroSerde()
    >>> record = {"event_id": "f-1", "event_time": 1_767_225_600_000, "producer": "docs",
    ...           "model_name": "clicks", "prediction_id": "p-1", "label": 1.0}
    >>> data = serde.encode(FEEDBACK, record)
    >>> data[0], serde.decode(data, FEEDBACK) == record  # magic byte 0: the Confluent wire format
    (0, True)
    >>> serde.encode(FEEDBACK, {**record, "prediction_id": ""})
    Traceback (most recent call last):
    ...
    schemas.errors.ValidationError: feedback.prediction_id: must not be empty
    >>> try:
    ...     serde.decode(b"not avro", FEEDBACK)
    ... except DecodeError as exc:
    ...     print(exc.reason)
    undecodable
    """

    def __init__(self, registry: Registry | None = None, *, compiled: bool = False) -> None:
        self.registry = registry or LocalRegistry()
        self.compiled = compiled
        self._resolution: dict[tuple[int, str], tuple[Any, Any]] = {}
        self._writers: dict[str, Any] = {}
        self._readers: dict[tuple[int, bool], Any] = {}

    def encode(self, event_type: str, record: dict[str, Any], *, topic: str = "", check: bool = True) -> bytes:
        """Encode a record with the latest schema of its event type, framed with the schema's id.

        A record that does not fit the schema, or breaks a rule, raises ``ValidationError`` naming the field.

        Parameters
        ----------
        event_type
            The schemas event type (``schemas.SENSOR_BATCH``, ...).
        record
            The event.
        topic
            The full topic it is for; a Confluent registry registers the schema under ``<topic>-value``.
        check
            Also check the event type's rules (``schemas.validation``), not only its Avro types.
        """
        version = catalog.latest(event_type)
        body = self._compiled(event_type, version, record)
        if body is None:
            buf = io.BytesIO()
            try:
                fastavro.schemaless_writer(buf, version.parsed, record)
            except Exception as exc:  # the writer is the type check; ask the validator for a precise message
                raise ValidationError(f"{event_type}: {self._type_errors(version.parsed, record, exc)}",
                                      event_type=event_type) from None
            body = buf.getvalue()
        if check:
            validation.check(event_type, record)
        return wire.frame(self.registry.id_for(topic, version), body)

    def _compiled(self, event_type: str, version: catalog.SchemaVersion, record: dict[str, Any]) -> bytes | None:
        """The body from the schema's compiled writer (``schemas.avro_compiled``); None leaves it to fastavro."""
        try:
            write = self._writers[event_type]
        except KeyError:
            write = self._writers[event_type] = compile_writer(version.parsed) if self.compiled else None
        if write is None:
            return None
        try:
            return write(record)
        except Exception:  # Unsupported, or a value it cannot pack: fastavro writes it or says what is wrong
            return None

    @staticmethod
    def _type_errors(parsed: Any, record: Any, exc: Exception) -> str:
        try:
            validate(record, parsed, raise_errors=True)
        except fastavro.validation.ValidationError as err:
            return _avro_reason(err)
        except Exception as err:
            return f"{type(err).__name__}: {err}"
        return f"{type(exc).__name__}: {exc}"

    def decode(self, data: bytes, event_type: str, *, check: bool = True, arrays: bool = False) -> dict[str, Any]:
        """Decode one message; raises a ``SchemaError`` subclass whose ``reason`` suits a DLQ header.

        Parameters
        ----------
        data
            The message value, Confluent-framed.
        event_type
            The event type the topic carries; the writer's schema is resolved against its latest version.
        check
            Also check the event type's rules.
        arrays
            With ``compiled``, give arrays of ``long`` and ``double`` as numpy arrays (the same values) where
            the compiled reader reads the message; a message left to fastavro (schema resolution, an unusual
            body) still gives lists, so callers accept both.
        """
        try:
            schema_id, body = wire.unframe(data)
            writer, reader = self._schemas(schema_id, event_type)
        except SchemaError as exc:
            raise type(exc)(f"{event_type}: {exc}", event_type=event_type) from None
        record = self._read_compiled(schema_id, writer, reader, body, arrays)
        if record is not None:
            if check:
                validation.check(event_type, record)
            return record
        stream = io.BytesIO(body)
        try:
            record = fastavro.schemaless_reader(stream, writer, reader)
        except SchemaError:
            raise
        except Exception as exc:  # fastavro raises many types for corrupt bodies
            raise DecodeError(
                f"{event_type}: Avro body does not decode with schema id {schema_id}: {type(exc).__name__}: {exc}",
                event_type=event_type,
            ) from None
        if stream.tell() != len(body):
            raise DecodeError(
                f"{event_type}: {len(body) - stream.tell()} bytes left over after the Avro record "
                f"(schema id {schema_id}); the message is not one record of that schema",
                event_type=event_type,
            )
        if check:
            validation.check(event_type, record)
        return record

    def _read_compiled(self, schema_id: int, writer: Any, reader: Any, body: bytes,
                       arrays: bool) -> dict[str, Any] | None:
        """The record from the writer schema's compiled reader (``schemas.avro_compiled``) when no schema
        resolution is needed and the body reads cleanly to its end; None leaves it to fastavro."""
        if reader is not None:
            return None
        try:
            read = self._readers[schema_id, arrays]
        except KeyError:
            read = self._readers[schema_id, arrays] = compile_reader(writer, arrays) if self.compiled else None
        if read is None:
            return None
        try:
            record, end = read(body)
        except Exception:  # Unsupported, or a corrupt body: fastavro reads it or says what is wrong
            return None
        return record if end == len(body) else None

    def _schemas(self, schema_id: int, event_type: str) -> tuple[Any, Any]:
        """Writer and reader schema; the reader is None when they are the same (no resolution needed)."""
        key = (schema_id, event_type)
        pair = self._resolution.get(key)
        if pair is None:
            canonical = self.registry.schema_for(schema_id)
            latest = catalog.latest(event_type)
            if canonical == latest.canonical:
                pair = (latest.parsed, None)
            else:
                writer, form = _avro_schema(canonical, schema_id)
                pair = (latest.parsed, None) if form == latest.canonical else (writer, latest.parsed)
            self._resolution[key] = pair
        return pair


def _avro_schema(text: str, schema_id: int) -> tuple[Any, str]:
    """A registry's text of a schema (the whole schema, as registered), parsed and in Parsing Canonical Form: the
    same schema as ours then reads without resolution, through the compiled reader. ``DecodeError`` when it is no
    Avro schema: a producer with another serializer (Protobuf, JSON Schema) frames its messages the same way."""
    try:
        parsed, form = catalog._parse(text), fastavro.schema.to_parsing_canonical_form(json.loads(text))
    except Exception as exc:  # fastavro raises many types for what is not a schema
        raise DecodeError(f"schema id {schema_id} is not an Avro schema ({type(exc).__name__}: {str(exc)[:200]}); "
                          "a producer with another serializer writes to this topic") from None
    empty: list[str] = []
    _takes_no_bytes(parsed, {}, empty)
    if empty:
        raise DecodeError(f"schema id {schema_id} has arrays of items that take no bytes ({', '.join(empty)}): "
                          "a count of 2^60 in a few bytes would keep the reader busy for ever")
    return parsed, form


def _takes_no_bytes(t: Any, named: dict[str, bool], empty: list[str]) -> bool:
    """Whether a value of the parsed schema ``t`` can be written in no bytes (null, a record of nulls); the arrays
    of such items go into ``empty``. ``named`` says it for the named types seen so far."""
    if isinstance(t, str):
        return t == "null" or named.get(t, False)
    if isinstance(t, list):  # a union: its branch index takes a byte
        for branch in t:
            _takes_no_bytes(branch, named, empty)
        return False
    kind = t["type"]
    if kind == "array":
        if _takes_no_bytes(t["items"], named, empty):
            empty.append(f"array of {t['items'] if isinstance(t['items'], str) else t['items']['type']}")
        return False
    if kind == "map":  # each entry has a key: a byte at least
        _takes_no_bytes(t["values"], named, empty)
        return False
    if kind in ("record", "error"):
        named[t["name"]] = False  # a record that holds itself directly has no finite value
        named[t["name"]] = all([_takes_no_bytes(f["type"], named, empty) for f in t["fields"]])
        return named[t["name"]]
    if kind in ("fixed", "enum"):
        named[t["name"]] = kind == "fixed" and t["size"] == 0
        return named[t["name"]]
    return kind == "null"


def _avro_reason(exc: Exception) -> str:
    errors = getattr(exc, "errors", None) or [str(exc)]
    return "; ".join(str(e) for e in errors)[:500]
