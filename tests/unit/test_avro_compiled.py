"""The compiled Avro readers and writers give fastavro's bytes and records, on every schema, or step aside."""

from __future__ import annotations

import io
import random
from typing import Any

import fastavro
import numpy as np
import pytest

from schemas import ANOMALY_SCORE, SENSOR_BATCH, AvroSerde, DecodeError, SchemaError, ValidationError, catalog
from schemas.avro_compiled import compile_reader, compile_writer
from streams.producers.simulator import SensorSimulator


def _random(schema: Any, named: dict[str, Any], rng: random.Random) -> Any:
    """A random valid datum of a parsed schema, with the awkward values: negatives, 64-bit extremes,
    non-ASCII text, empty and long arrays."""
    if isinstance(schema, list):
        branch = rng.choice(schema)
        return None if branch == "null" else _random(branch, named, rng)
    if isinstance(schema, str):
        if schema in named:
            return _random(named[schema], named, rng)
        kind = schema
    else:
        kind = schema["type"]
    if kind == "null":
        return None
    if kind == "boolean":
        return rng.random() < 0.5
    if kind == "int":
        return rng.choice([0, -1, 1, 63, -64, 64, 2**31 - 1, -(2**31), rng.randint(-(2**31), 2**31 - 1)])
    if kind == "long":
        return rng.choice([0, -1, 1, 1_767_225_600_000 + rng.randint(0, 10**6), 2**63 - 1, -(2**63),
                           rng.randint(-(2**63), 2**63 - 1), rng.randint(-1000, 1000)])
    if kind in ("float", "double"):
        return rng.choice([0.0, -0.0, 1.5, -2.25, rng.uniform(-1e6, 1e6), 1e300 if kind == "double" else 1e30])
    if kind == "string":
        return rng.choice(["", "a", "dev-0001", "température/ñ", "🌡️ sensor", "x" * rng.randint(0, 300)])
    if kind == "bytes":
        return bytes(rng.randrange(256) for _ in range(rng.randint(0, 40)))
    if kind == "enum":
        named[schema["name"]] = schema
        return rng.choice(schema["symbols"])
    if kind == "array":
        n = rng.choice([0, 1, 3, 60])
        return [_random(schema["items"], named, rng) for _ in range(n)]
    if kind == "map":
        return {f"k{i}-é": _random(schema["values"], named, rng) for i in range(rng.choice([0, 1, 4]))}
    if kind == "record":
        named[schema["name"]] = schema
        return {f["name"]: _random(f["type"], named, rng) for f in schema["fields"]}
    raise AssertionError(f"no generator for {schema!r}")


def _fastavro_bytes(parsed: Any, record: Any) -> bytes:
    out = io.BytesIO()
    fastavro.schemaless_writer(out, parsed, record)
    return out.getvalue()


@pytest.mark.parametrize("event_type", catalog.event_types())
def test_every_schema_reads_and_writes_as_fastavro_does(event_type: str) -> None:
    parsed = catalog.latest(event_type).parsed
    write, read = compile_writer(parsed), compile_reader(parsed)
    assert write is not None and read is not None, "every shipped schema compiles"
    rng = random.Random(event_type)
    for _ in range(40):
        record = _random(parsed, {}, rng)
        body = _fastavro_bytes(parsed, record)
        assert write(record) == body
        assert read(body) == (fastavro.schemaless_reader(io.BytesIO(body), parsed, None), len(body))


def _sensor_body() -> tuple[AvroSerde, AvroSerde, bytes]:
    record = next(iter(SensorSimulator(devices=1, readings_per_message=50)))
    return AvroSerde(), AvroSerde(compiled=True), AvroSerde().encode(SENSOR_BATCH, record)


def _outcome(serde: AvroSerde, data: bytes) -> Any:
    try:
        return serde.decode(data, SENSOR_BATCH)
    except SchemaError as exc:
        return type(exc), exc.reason, str(exc)


def test_a_corrupt_message_decodes_or_fails_exactly_as_with_fastavro() -> None:
    plain, compiled, data = _sensor_body()
    rng = random.Random(7)
    cases = [data[:n] for n in range(5, len(data), 37)] + [data + b"\x00"]
    for _ in range(300):
        damaged = bytearray(data)
        for _ in range(rng.randint(1, 3)):
            damaged[rng.randrange(5, len(damaged))] = rng.randrange(256)
        cases.append(bytes(damaged))
    outcomes = [(_outcome(plain, c), _outcome(compiled, c)) for c in cases]
    assert all(a == b for a, b in outcomes)
    assert any(isinstance(a, tuple) and a[0] is DecodeError for a, _ in outcomes), "some cases must fail"


def test_records_the_writer_leaves_to_fastavro_get_fastavro_bytes_or_its_error() -> None:
    plain, compiled = AvroSerde(), AvroSerde(compiled=True)
    series = {"sensor": "t", "timestamps": [1, 2], "scores": [0.5, 0.25], "packed_timestamps": None,
              "packed_scores": None}
    record = {"event_id": "s-1", "event_time": 1, "producer": "p", "source_event_id": "b-1", "device_id": "d",
              "model": "gauss", "threshold": 0.99, "series": [series]}
    missing = {k: v for k, v in record.items() if k != "model"}
    variants = [
        record,
        {**record, "threshold": 1},  # an int where a double goes
        {**record, "event_time": True},
        {**record, "series": [{**series, "scores": np.array([0.5, 0.25], dtype=np.float32)}]},
        {**record, "series": [{**series, "timestamps": np.array([1, 2])}]},
        {**record, "series": [{k: v for k, v in series.items() if k != "packed_scores"}]},  # one with a default
        {**record, "event_time": "1"},
        {**record, "series": [None]},
        missing,
    ]
    outcomes = [(_encoded(plain, rec), _encoded(compiled, rec)) for rec in variants]
    assert all(a == b for a, b in outcomes)
    assert [isinstance(a, bytes) for a, _ in outcomes] == [True] * 6 + [False] * 3


def _encoded(serde: AvroSerde, record: dict[str, Any]) -> Any:
    try:
        return serde.encode(ANOMALY_SCORE, record)
    except ValidationError as exc:
        return str(exc)
