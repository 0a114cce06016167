"""Processor state as versioned plain bytes: round trips, and refusal of what is not such a state."""

import itertools
import pickle

import numpy as np
import pytest

from streams.flows import flow_spec
from streams.flows.sensor_anomaly import SensorAnomalyProcessor
from streams.processor import Event
from streams.producers.simulator import SensorSimulator
from tests.fixtures.emits import plain
from streams.state import (
    FORMAT_VERSION, IdleStore, StateError, decode, decode_processor, encode, encode_processor, restore_or_fresh,
)


def sensor_events(n: int, seed: int = 3) -> list[Event]:
    sim = SensorSimulator(devices=1, readings_per_message=40, anomaly_rate=0.01, seed=seed)
    return [Event("sensor.readings", r["device_id"], r) for r in itertools.islice(sim, n)]


def test_plain_values_round_trip_with_their_types():
    value = {
        "none": None, "flags": [True, False], "small": -3, "big": 2**80, "float": 0.1, "text": "ünï",
        "raw": b"\x00\xff", "tuple": (1, "a"), ("tuple", 2): "key",
        "f32": np.linspace(0, 1, 7, dtype=np.float32), "i64": np.arange(6, dtype=np.int64).reshape(2, 3),
        "empty": np.zeros(0), "bools": np.array([True, False]), "scalar": np.float64(2.5), "count": np.int32(4),
    }
    back = decode(encode(value))
    for k, v in value.items():
        if isinstance(v, np.ndarray):
            assert back[k].dtype == v.dtype and back[k].shape == v.shape and np.array_equal(back[k], v)
            assert back[k].flags.writeable
        else:
            assert back[k] == v and type(back[k]) is type(v.item() if isinstance(v, np.generic) else v)


def test_the_bytes_of_each_tag_are_those_of_format_1():
    """Written byte for byte as format 1 lays them out (the writer takes shortcuts for common values and names)."""
    u32, i64, f64 = (lambda n: n.to_bytes(4, "little")), (lambda n: n.to_bytes(8, "little", signed=True)), (
        lambda x: np.float64(x).tobytes())
    value = {"name": [1.5, -2, None, True, b"\x01", "é", np.float64(0.5), np.int32(-7), 2**70, (False,)]}
    expected = (b"EDST\x01" + b"d" + u32(1) + b"s" + u32(4) + b"name" + b"l" + u32(10) + b"f" + f64(1.5)
                + b"i" + i64(-2) + b"N" + b"T" + b"b" + u32(1) + b"\x01" + b"s" + u32(2) + "é".encode()
                + b"f" + f64(0.5) + b"i" + i64(-7) + b"I" + u32(22) + str(2**70).encode() + b"t" + u32(1) + b"F")
    assert encode(value) == expected
    assert encode(value) == expected  # again, with the names' bytes kept


@pytest.mark.parametrize("value", [object(), {1, 2}, np.array(["a"], dtype=object), lambda: 0])
def test_what_is_not_plain_data_cannot_be_written(value):
    with pytest.raises(TypeError):
        encode({"x": value})


@pytest.mark.parametrize(("blob", "says"), [
    (pickle.dumps({"processor": 1}), "a pickle"),
    (b"EDST" + bytes((FORMAT_VERSION + 1,)) + b"N", "format version"),
    (b"EDST", "format version"),
    (encode([1, 2, 3])[:-3], "truncated"),
    (encode("x") + b"N", "unexpected bytes"),
    (b"EDST" + bytes((FORMAT_VERSION,)) + b"Z", "unknown tag"),
    (b"EDST" + bytes((FORMAT_VERSION,)) + b"a\x03|O8\x01\x01\x00\x00\x00\x08\x00\x00\x00" + b"\x00" * 8, "non-numeric"),
    (b"EDST" + bytes((FORMAT_VERSION,)) + b"a\x03<f8\x01\x02\x00\x00\x00\x08\x00\x00\x00" + b"\x00" * 8, "bytes for shape"),
    (b"EDST" + bytes((FORMAT_VERSION,)) + b"d\x01\x00\x00\x00l\x00\x00\x00\x00N", "unhashable"),
    (b"EDST" + bytes((FORMAT_VERSION,)) + b"l\x00\x00\x00\xff", "truncated"),
    (encode("name")[:-2], "truncated at byte 10 \\(needs 4 more\\)"),  # a string's bytes
    (encode("name")[:7], "truncated at byte 6 \\(needs 4 more\\)"),  # its length
    (encode(0.5)[:-1], "truncated at byte 6 \\(needs 8 more\\)"),
    (b"EDST" + bytes((FORMAT_VERSION,)), "truncated at byte 5 \\(needs 1 more\\)"),
    (b"EDST" + bytes((FORMAT_VERSION,)) + b"s\x02\x00\x00\x00\xff\xfe", "not UTF-8"),
    # a shape whose product wraps to 0 in int64, with 0 data bytes
    (b"EDST" + bytes((FORMAT_VERSION,)) + b"a\x03<f8\x04" + b"\x00\x00\x01\x00" * 4 + b"\x00" * 4, "bytes for shape"),
    (b"EDST" + bytes((FORMAT_VERSION,)) + b"a\x03<f8\x41" + b"\x01\x00\x00\x00" * 65 + b"\x08\x00\x00\x00"
     + b"\x00" * 8, "cannot be built"),  # more dimensions than numpy takes
])
def test_malformed_or_foreign_bytes_are_refused_with_what_they_were(blob, says):
    with pytest.raises(StateError, match=says):
        decode(blob)


def test_a_random_corruption_never_escapes_as_another_error():
    blob = bytearray(encode_processor(SensorAnomalyProcessor("d"), "d"))
    rng = np.random.default_rng(0)
    for _ in range(300):
        broken = bytearray(blob)
        for i in rng.integers(0, len(broken), 3):
            broken[i] = int(rng.integers(0, 256))
        try:
            decode(bytes(broken))
        except StateError:
            pass


def test_sensor_processor_resumes_from_its_bytes_with_identical_outputs():
    evs = sensor_events(60)
    device = evs[0].record["device_id"]
    expected = SensorAnomalyProcessor(device).process(evs)
    before = SensorAnomalyProcessor(device)
    head = before.process(evs[:23])
    blob = encode_processor(before, device)
    assert b"\x80\x05" not in blob[:8]
    resumed = decode_processor(blob, SensorAnomalyProcessor(device))
    assert plain(head + resumed.process(evs[23:])) == plain(expected)


def test_state_of_another_class_or_version_or_key_is_refused_and_the_key_starts_fresh(caplog):
    spec = flow_spec("anomaly")
    proc = spec.make_processor("d1")
    proc.process(sensor_events(5))
    blob = encode_processor(proc, "d1")

    class Newer(SensorAnomalyProcessor):
        state_version = SensorAnomalyProcessor.state_version + 1

    with pytest.raises(StateError, match="belongs to"):
        decode_processor(blob, Newer("d1"))
    previous = encode({"key": "d1", "processor": "streams.flows.sensor_anomaly.SensorAnomalyProcessor", "version": 1,
                       "params": proc.params(), "state": {"recent": ["a"], "duplicates": 0}, "offsets": {}})
    with pytest.raises(StateError, match="state version 1; this eddyline restores version 2"):
        decode_processor(previous, SensorAnomalyProcessor("d1"))

    restored, _ = restore_or_fresh(spec, "d1", blob)
    assert restored.snapshot()["sequence"] == proc.snapshot()["sequence"]
    for bad, says in [(blob, "key 'd1'"), (pickle.dumps(proc), "pickle"), (encode({"x": 1}), "not a processor")]:
        caplog.clear()
        fresh, offsets = restore_or_fresh(spec, "d2", bad)
        assert offsets == {} and fresh.snapshot() == spec.make_processor("d2").snapshot()
        assert says in caplog.text and "starts fresh" in caplog.text


def test_a_state_that_restore_rejects_is_refused():
    blob = encode({"key": "d", "processor": "streams.flows.sensor_anomaly.SensorAnomalyProcessor",
                   "version": SensorAnomalyProcessor.state_version, "params": {"device_id": "d"},
                   "state": {"detectors": 3}, "offsets": {}})
    with pytest.raises(StateError, match="refused the state"):
        decode_processor(blob, SensorAnomalyProcessor("d"))


@pytest.mark.parametrize(("field", "value"), [
    ("offsets", 7), ("offsets", [("sensor.readings", 2)]), ("offsets", {("sensor.readings",): 4}),
    ("offsets", {("sensor.readings", "2"): 4}), ("offsets", {("sensor.readings", 2): 4.0}), ("key", 3),
    ("params", [1]),
])
def test_a_checkpoint_whose_envelope_decodes_but_is_malformed_is_refused_and_the_key_starts_fresh(field, value):
    spec = flow_spec("anomaly")
    saved = decode(encode_processor(spec.make_processor("d"), "d", {("sensor.readings", 2): 41}))
    blob = encode({**saved, field: value})
    with pytest.raises(StateError, match=field):
        decode_processor(blob, spec.make_processor("d"))
    fresh, offsets = restore_or_fresh(spec, "d", blob)
    assert offsets == {} and fresh.snapshot() == spec.make_processor("d").snapshot()


def test_offsets_travel_with_the_state():
    spec = flow_spec("anomaly")
    blob = encode_processor(spec.make_processor("d"), "d", {("sensor.readings", 2): 41})
    _, offsets = restore_or_fresh(spec, "d", blob)
    assert offsets == {("sensor.readings", 2): 41}


def test_idle_store_keeps_states_across_reopen(tmp_path):
    store = IdleStore(tmp_path / "idle.sqlite3")
    store.put("a", b"1")
    store.put("a", b"2")
    store.put("b", b"3")
    store.close()
    again = IdleStore(tmp_path / "idle.sqlite3")
    assert again.get("a") == b"2" and again.get("missing") is None
    assert sorted(again.keys()) == ["a", "b"] and again.size_bytes() == 2


def test_idle_stores_of_a_cluster_find_each_others_keys_and_the_newest_copy_wins(tmp_path):
    first = IdleStore(tmp_path / "idle-0.sqlite3", peers="idle*.sqlite3")
    second = IdleStore(tmp_path / "idle-1.sqlite3", peers="idle*.sqlite3")
    first.put("moved", b"evicted by process 0")
    assert second.get("moved") == b"evicted by process 0"  # the key moved when the process count changed
    second.put("moved", b"evicted later by process 1")
    assert first.get("moved") == b"evicted later by process 1"  # its own older copy loses
    assert sorted(second.keys()) == ["moved"] and first.get("never") is None
    alone = IdleStore(tmp_path / "idle-2.sqlite3")  # no peers: only its own file
    assert alone.get("moved") is None


def test_an_idle_file_of_the_previous_layout_is_read_and_kept(tmp_path):
    import sqlite3

    old = sqlite3.connect(tmp_path / "idle.sqlite3")
    old.execute("CREATE TABLE idle (key TEXT PRIMARY KEY, state BLOB NOT NULL)")
    old.execute("INSERT INTO idle VALUES ('a', x'01')")
    old.commit()
    old.close()
    assert IdleStore(tmp_path / "idle-0.sqlite3", peers="idle*.sqlite3").get("a") == b"\x01"
    upgraded = IdleStore(tmp_path / "idle.sqlite3")
    upgraded.put("b", b"\x02")
    assert upgraded.get("a") == b"\x01" and upgraded.get("b") == b"\x02"


def test_an_idle_store_of_an_older_eddyline_moves_out_of_the_recovery_folder(tmp_path):
    from streams.engines.bytewax import idle_path, idle_store, move_legacy_idle_store

    IdleStore(tmp_path / "idle.sqlite3").put("a", b"kept")
    move_legacy_idle_store(tmp_path)
    assert not (tmp_path / "idle.sqlite3").exists()  # Bytewax's recovery folder holds only its own files
    assert idle_store(tmp_path).get("a") == b"kept" and idle_path(tmp_path).exists()


def test_a_key_filter_finds_every_key_added_and_few_others():
    from streams.state import KeyFilter

    keys = [f"device-{i:06d}" for i in range(20_000)]
    found = KeyFilter()
    found.rebuild([])
    for key in keys:
        if found.add(key):  # full: rebuilt twice as large, as the idle store does
            found.rebuild(keys[: found.count])
    assert all(key in found for key in keys)
    others = sum(f"other-{i}" in found for i in range(20_000))
    assert found.capacity >= 20_000 and others < 100  # about 1 in 400 at capacity, fewer below it


def test_an_idle_store_asks_its_file_only_for_keys_it_may_hold(tmp_path):
    store = IdleStore(tmp_path / "idle.sqlite3")
    queries: list[str] = []
    store._db.set_trace_callback(queries.append)
    assert [store.get(f"new-{i}") for i in range(500)] == [None] * 500
    assert not [q for q in queries if "FROM idle" in q]  # a fleet's new devices cost no query each
    states = {f"dev-{i}": bytes([i % 256]) for i in range(5_000)}  # past the filter's first size: it grows
    items = list(states.items())
    for i in range(0, len(items), 1_000):
        store.put_many(dict(items[i:i + 1_000]))
    assert all(store.get(key) == state for key, state in states.items())
    store.close()
    again = IdleStore(tmp_path / "idle.sqlite3")  # built from the file when it opens
    assert all(again.get(key) == state for key, state in states.items()) and again.get("new-1") is None


def test_a_bucket_from_its_entries_is_the_bucket_encoded_whole():
    from streams.state import BUCKET_MAGIC, BUCKET_VERSION, Bucket, bucket_entry, decode_bucket, encode_bucket

    bucket = Bucket(1024, 17, {"a": b"\x00" * 9, "ü" * 70: b""}, {"b": 5, "c" * 80: 2**62, "d": 0})
    whole = BUCKET_MAGIC + bytes((BUCKET_VERSION,)) + encode(
        {"buckets": 1024, "index": 17, "states": bucket.states, "refs": bucket.refs})
    assert encode_bucket(bucket) == whole and decode_bucket(whole) == bucket
    with pytest.raises(TypeError, match="bucket entry"):
        bucket_entry("k", 2.5)


def test_a_new_key_is_looked_up_without_waiting_for_a_write_in_progress(tmp_path):
    import threading

    store = IdleStore(tmp_path / "idle-0.sqlite3", peers="idle*.sqlite3")
    store.put("old", b"\x01")
    answers: list = []
    with store._lock:  # as the writer thread holds it through a write of versions and its sync
        worker = threading.Thread(target=lambda: answers.append(store.get("new")))
        worker.start()
        worker.join(5)
        assert answers == [None]  # answered while the write still holds the file
    assert store.get("old") == b"\x01"


def test_evicted_states_older_than_the_retention_are_deleted_unless_read_back_lately(tmp_path, monkeypatch) -> None:
    """A flow keyed by conversations evicts one key per call: without a retention its idle store grows for ever."""
    import streams.state as state_module

    clock = [1_000 * 10**9]
    monkeypatch.setattr(state_module.time, "time_ns", lambda: clock[0])
    store = IdleStore(tmp_path / "idle.sqlite3", retention_s=3600)
    store.put_many({"call-1": b"one", "call-2": b"two"})
    assert store.get("call-2") == b"two"  # its key spoke again: live, its next checkpoint maybe not written yet
    clock[0] += 2 * 3600 * 10**9
    store.put("call-3", b"three")  # not due: expiry runs at most once an hour (of the process's own clock)
    assert store.expired == 0
    assert store.expire() == 1
    assert [store.get(k) for k in ("call-1", "call-2", "call-3")] == [None, b"two", b"three"]
    assert "call-1" not in store._stored
    store._read_back.clear()  # two expiry periods later
    store._expiry_due = 0.0
    clock[0] += 2 * 3600 * 10**9
    store.put("call-4", b"four")  # due now: this write expires what was saved more than an hour ago
    assert [store.get(k) for k in ("call-2", "call-3", "call-4")] == [None, None, b"four"]
    assert store.expired == 3
    forever = IdleStore(tmp_path / "kept.sqlite3")
    forever.put("old", b"x")
    clock[0] += 10**6 * 10**9
    assert forever.expire() == 0 and forever.get("old") == b"x"


def test_the_runtime_setting_reaches_the_idle_store(monkeypatch) -> None:
    from streams.runtime import RuntimeSettings

    assert RuntimeSettings().bytewax_options()["idle_retention_s"] == 30 * 86400
    monkeypatch.setenv("EDDYLINE_RUNTIME_IDLE_RETENTION_S", "0")
    assert RuntimeSettings().bytewax_options()["idle_retention_s"] is None
