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


def _as_arrays(value: Any, schema: Any, named: dict[str, Any]) -> Any:
    """``value`` (of ``schema``) with its arrays of longs and doubles as numpy int64 and float64 arrays."""
    if isinstance(schema, list):
        return None if value is None else _as_arrays(value, next(b for b in schema if b != "null"), named)
    if isinstance(schema, str):
        return _as_arrays(value, named[schema], named) if schema in named else value
    if schema["type"] == "record":
        named[schema["name"]] = schema
        return {f["name"]: _as_arrays(value[f["name"]], f["type"], named) for f in schema["fields"]}
    if schema["type"] == "array" and schema["items"] in ("long", "double"):
        return np.asarray(value, dtype=np.int64 if schema["items"] == "long" else np.float64)
    if schema["type"] == "array":
        return [_as_arrays(v, schema["items"], named) for v in value]
    return value


def _same(a: Any, b: Any) -> bool:
    """Equal values, arrays compared item by item (NaN equal to NaN) and only with arrays of the same dtype."""
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        return isinstance(a, np.ndarray) and isinstance(b, np.ndarray) and a.dtype == b.dtype \
            and np.array_equal(a, b, equal_nan=a.dtype.kind == "f")
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    return a == b


EDGE_LONGS = [0, -1, 1, 63, -64, 64, 2**31, 2**63 - 1, -(2**63), 1_767_225_600_000]
EDGE_DOUBLES = [0.0, -0.0, 1e-310, -1e300, 1.7976931348623157e308, float("inf"), float("-inf"), float("nan"), 0.1]


@pytest.mark.parametrize("event_type", [SENSOR_BATCH, ANOMALY_SCORE])
def test_numpy_arrays_read_and_write_as_fastavro_lists_do(event_type: str) -> None:
    """The flow's array path: the reader's arrays hold fastavro's values, and arrays written give fastavro's bytes
    for the same values as lists, edge values (64-bit extremes, -0.0, subnormals, infinities, NaN) included."""
    parsed = catalog.latest(event_type).parsed
    write, read = compile_writer(parsed), compile_reader(parsed, arrays=True)
    assert write is not None and read is not None
    rng = random.Random(f"arrays-{event_type}")
    records = [_random(parsed, {}, rng) for _ in range(60)]
    for record in records[:20]:  # edge values in every array of numbers
        for s in record["series"]:
            for key in ("timestamps", "values", "scores"):
                if key in s:
                    s[key] = list(EDGE_LONGS if key == "timestamps" else EDGE_DOUBLES)
    for record in records:
        body = _fastavro_bytes(parsed, record)
        arrays = _as_arrays(record, parsed, {})
        assert write(arrays) == body
        got, end = read(body)
        assert end == len(body)
        assert _same(got, _as_arrays(fastavro.schemaless_reader(io.BytesIO(body), parsed, None), parsed, {}))


def test_arrays_in_several_blocks_and_empty_arrays_read_as_numpy_arrays() -> None:
    """fastavro writes one block per array, but Avro allows several; empty arrays are empty numpy arrays."""
    parsed = catalog.latest(SENSOR_BATCH).parsed
    read = compile_reader(parsed, arrays=True)
    series = {"sensor": "t", "unit": None, "timestamps": [5, 6, 7], "values": [0.5, 1.5, 2.5], "local_flags": None}
    record = {"event_id": "b-1", "event_time": 1, "producer": "p", "device_id": "d", "seq": 1,
              "series": [series, {**series, "timestamps": [], "values": []}], "local_model": None}
    body = _fastavro_bytes(parsed, record)
    got, _ = read(body)
    assert got["series"][1]["values"].dtype == np.float64 and got["series"][1]["values"].shape == (0,)
    assert got["series"][1]["timestamps"].dtype == np.int64 and got["series"][1]["timestamps"].shape == (0,)
    # the first series' timestamps again as two blocks (2 items, then 1): b"\x06\x0a\x0c\x0e\x00" -> ...
    one_block = bytes([6, 10, 12, 14, 0])
    two_blocks = bytes([4, 10, 12, 2, 14, 0])
    split = body.replace(one_block, two_blocks, 1)
    got, end = read(split)
    assert end == len(split) and got["series"][0]["timestamps"].tolist() == [5, 6, 7]
    assert got["series"][0]["timestamps"].dtype == np.int64


def test_the_serde_gives_arrays_when_asked_and_lists_where_fastavro_reads() -> None:
    plain, compiled, data = _sensor_body()
    lists = plain.decode(data, SENSOR_BATCH)
    arrays = compiled.decode(data, SENSOR_BATCH, arrays=True)
    s, a = lists["series"][0], arrays["series"][0]
    assert isinstance(a["values"], np.ndarray) and a["values"].tolist() == s["values"]
    assert isinstance(a["timestamps"], np.ndarray) and a["timestamps"].tolist() == s["timestamps"]
    assert compiled.decode(data, SENSOR_BATCH) == lists  # lists unless asked
    bad = {**lists, "series": [{**s, "values": [float("nan")] * len(s["values"])}]}
    body = plain.encode(SENSOR_BATCH, lists)
    with pytest.raises(ValidationError, match="holds NaN or infinity"):
        compiled.decode(body.replace(body, _fastavro_framed(plain, bad)), SENSOR_BATCH, arrays=True)
    big = {**lists, "series": [{**s, "values": [1.7e308] * len(s["values"])}]}  # finite, though their sum is not
    assert compiled.decode(_fastavro_framed(plain, big), SENSOR_BATCH, arrays=True)["series"][0]["values"][0] == 1.7e308


def _fastavro_framed(serde: AvroSerde, record: dict[str, Any]) -> bytes:
    """``record`` framed as ``serde`` frames a ``sensor_batch``, without its rules (to carry what they refuse)."""
    from schemas import wire

    version = catalog.latest(SENSOR_BATCH)
    return wire.frame(serde.registry.id_for("", version), _fastavro_bytes(version.parsed, record))
