"""Bytewax state keyed by buckets of devices: restore, lazy decode, versions in the store, other layouts, eviction.

The bucket logic runs here as Bytewax runs it (on_batch, snapshot, a new logic built from the snapshot after a
restart, on_notify), without a broker; the flow against the real broker is in tests/integration/test_sensor_flow.py.
"""

import dataclasses
import itertools
import logging
import os
from datetime import UTC, datetime, timedelta

import pytest
from pydantic import ValidationError

from connectors.config import explain
from connectors.kafka import KafkaSettings
from streams.engines import bytewax as bytewax_engine
from streams.engines.bytewax import StagedStates, _BucketLogic, _ProcessorLogic, build_dataflow
from streams.engines.output import FlowOutput
from streams.flows import flow_spec
from streams.processor import Event, Processor, run_local
from streams.producers.simulator import SensorSimulator
from streams.runtime import DECODED_BYTES, KEEP_DECODED_S, RuntimeSettings
from tests.fixtures.emits import plain
from streams.state import (
    BUCKET_MAGIC, Bucket, IdleStore, StateError, bucket_of, decode_bucket, encode_bucket, encode_processor,
    restore_or_fresh,
)

BUCKETS = 3
SPEC = flow_spec("anomaly")


def events(n: int, devices: int = 7) -> list[Event]:
    sim = SensorSimulator(devices=devices, readings_per_message=30, anomaly_rate=0.02, seed=11)
    return [Event("sensor.readings", r["device_id"], r) for r in itertools.islice(sim, n)]


class Worker:
    """One process's buckets, driven as Bytewax drives them; ``restart`` builds them again from their snapshots."""

    def __init__(self, tmp_path, idle_after: timedelta | None = None,
                 keep_decoded: timedelta = timedelta(seconds=KEEP_DECODED_S),
                 decoded_bytes: int = DECODED_BYTES) -> None:
        self.tmp_path = tmp_path
        self.idle_after = idle_after
        self.decoded = {"keep_decoded": keep_decoded, "decoded_bytes": decoded_bytes}
        self.output = FlowOutput(SPEC, KafkaSettings())
        self.checkpoint: dict[int, bytes] = {}
        self.restart()

    def restart(self) -> None:
        self.store = IdleStore(self.tmp_path / "idle-0.sqlite3")
        self.staged = StagedStates(self.store)
        self.staged.FLUSH_EVERY_S = 0.0
        self.logics = {i: self.build(blob) for i, blob in self.checkpoint.items()}

    def build(self, resume: bytes | None) -> _BucketLogic:
        return _BucketLogic(SPEC, self.output, resume, self.store, self.idle_after, BUCKETS, self.staged,
                            **self.decoded)

    def feed(self, batch: list[Event]) -> list:
        out = []
        by_bucket: dict[int, list[Event]] = {}
        for e in batch:
            by_bucket.setdefault(bucket_of(SPEC.key(e), BUCKETS), []).append(e)
        for i, values in by_bucket.items():
            if i not in self.logics:
                self.logics[i] = self.build(None)
            emits, _ = self.logics[i].on_batch(values)
            out.extend(e for group in emits for e in group)
        return out

    def epoch(self) -> None:
        self.checkpoint.update({i: logic.snapshot() for i, logic in self.logics.items()})


def by_device(emits: list) -> dict[str, list]:
    out: dict[str, list] = {}
    for e in plain(emits):
        out.setdefault(e.key, []).append(e)
    return out


def test_a_restart_from_bucket_snapshots_scores_exactly_as_one_run(tmp_path):
    evs = events(84)
    worker = Worker(tmp_path)
    got = worker.feed(evs[:20])
    worker.epoch()
    got += worker.feed(evs[20:40])
    worker.epoch()  # writes the first epoch's states to the store; this checkpoint refers to them by version
    got += worker.feed(evs[40:50])
    worker.epoch()
    worker.feed(evs[50:60])  # after the last checkpoint: its state is lost with the crash, its input read again
    worker.restart()
    assert by_device(got) == by_device(run_local(SPEC, evs[:50]))
    tail = run_local(SPEC, evs[50:], processors=_reference_after(evs[:50]))
    assert by_device(worker.feed(evs[50:])) == by_device(tail)


def test_a_device_that_spoke_once_is_encoded_before_the_snapshot_and_a_restart_resumes_it_exactly(tmp_path,
                                                                                                    monkeypatch):
    monkeypatch.setattr(bytewax_engine, "ENCODE_EARLY", timedelta(0))
    encoded: list[str] = []
    real = bytewax_engine.encode_processor
    monkeypatch.setattr(bytewax_engine, "encode_processor", lambda p, key: encoded.append(key) or real(p, key))
    evs = events(40)
    worker = Worker(tmp_path)
    got = worker.feed(evs[:30])
    worker.epoch()
    once, twice = evs[30], evs[37]  # the same device speaks twice: 7 devices in turn
    assert SPEC.key(once) == SPEC.key(twice)
    other = evs[31]
    got += worker.feed([once, other])
    got += worker.feed([twice])  # a second batch of the same device
    encoded.clear()
    for logic in worker.logics.values():
        if logic.notify_at() is not None and logic.notify_at() <= datetime.now(UTC):
            logic.on_notify()
    assert encoded == [SPEC.key(other)]  # spoke once: encoded now; the other spoke twice: left for the snapshot
    encoded.clear()
    worker.epoch()
    assert encoded == [SPEC.key(once)]
    worker.restart()
    assert by_device(got) == by_device(run_local(SPEC, [*evs[:30], once, other, twice]))
    rest = [e for e in evs[31:] if e is not other and e is not twice]
    head = [*evs[:30], once, other, twice]
    assert by_device(worker.feed(rest)) == by_device(run_local(SPEC, rest, processors=_reference_after(head)))


def _reference_after(head: list[Event]) -> dict:
    processors: dict = {}
    run_local(SPEC, head, processors=processors)
    return processors


def test_checkpoints_carry_versions_not_states_once_written_and_old_versions_go(tmp_path):
    evs = events(40)
    worker = Worker(tmp_path)
    worker.feed(evs[:20])
    worker.epoch()
    first = {i: decode_bucket(b) for i, b in worker.checkpoint.items()}
    assert all(b.states and not b.refs for b in first.values())  # this epoch's states travel as bytes
    worker.staged.GRACE_S = 0.0
    worker.feed(evs[20:])
    worker.epoch()
    worker.epoch()  # nothing changed: every state is in the store now
    last = {i: decode_bucket(b) for i, b in worker.checkpoint.items()}
    assert all(not b.states and b.refs for b in last.values())
    devices = {e.record["device_id"] for e in evs}
    assert set().union(*(b.refs for b in last.values())) == devices
    assert len(encode_bucket(next(iter(last.values())))) < 300  # a number per device, not 10 KB
    worker.staged.flush(force=True)
    rows = worker.store._db.execute("SELECT key, COUNT(*) FROM versions GROUP BY key").fetchall()
    assert {k: n for k, n in rows} == dict.fromkeys(devices, 1)  # the replaced versions were deleted


def test_a_resumed_device_stays_bytes_until_it_speaks_and_leaves_memory_once_silent_long_enough(tmp_path):
    evs = events(28)
    worker = Worker(tmp_path, keep_decoded=timedelta(hours=1))
    worker.feed(evs)
    worker.epoch()
    worker.restart()
    assert all(not logic.live for logic in worker.logics.values())
    one = evs[0].record["device_id"]
    worker.feed([e for e in events(35)[28:] if e.record["device_id"] == one])
    assert [k for logic in worker.logics.values() for k in logic.live] == [one]
    worker.epoch()
    worker.epoch()  # a whole epoch without events: still decoded, so speaking again costs no restore
    assert [k for logic in worker.logics.values() for k in logic.live] == [one]
    age(worker, timedelta(minutes=59))
    worker.epoch()  # silent a while, within keep_decoded
    assert [k for logic in worker.logics.values() for k in logic.live] == [one]
    age(worker, timedelta(minutes=2))
    worker.epoch()  # silent longer than keep_decoded: its processor goes, its bytes stay
    assert all(not logic.live for logic in worker.logics.values())


def age(worker: Worker, by: timedelta) -> None:
    """As if the decoded keys had last spoken ``by`` earlier (``spoke`` is on the monotonic clock)."""
    for logic in worker.logics.values():
        logic.spoke = {k: t - by.total_seconds() for k, t in logic.spoke.items()}


def test_the_decoded_limits_reach_each_bucket_from_the_runtime_settings(monkeypatch):
    """``EDDYLINE_RUNTIME_KEEP_DECODED_S`` / ``_DECODED_BYTES`` travel as the CLI passes them into the buckets
    the dataflow builds: a bucket's budget is its share of the process's bytes."""
    monkeypatch.setenv("EDDYLINE_RUNTIME_KEEP_DECODED_S", "45")
    monkeypatch.setenv("EDDYLINE_RUNTIME_DECODED_BYTES", "3000000")
    monkeypatch.setenv("EDDYLINE_RUNTIME_STATE_BUCKETS", "4")
    options = RuntimeSettings().bytewax_options()  # what `eddyline run` and a cluster process pass
    wanted = ("buckets", "keep_decoded", "decoded_bytes")
    flow = build_dataflow(SPEC, KafkaSettings(), **{k: options[k] for k in wanted})
    process = next(step for step in flow.substeps if step.step_id.endswith(".process"))
    logic = process.builder(None)
    assert isinstance(logic, _BucketLogic)
    assert (logic.keep_decoded_s, logic.budget) == (45.0, 750_000)
    monkeypatch.delenv("EDDYLINE_RUNTIME_KEEP_DECODED_S")
    monkeypatch.delenv("EDDYLINE_RUNTIME_DECODED_BYTES")
    assert (RuntimeSettings().keep_decoded_s, RuntimeSettings().decoded_bytes) == (300.0, 2 << 30)


@pytest.mark.parametrize(("name", "value", "words"), [
    ("DECODED_BYTES", "0", "greater than 0"),
    ("DECODED_BYTES", "-1", "greater than 0"),
    ("DECODED_BYTES", "2GB", "valid integer"),
    ("KEEP_DECODED_S", "-1", "greater than or equal to 0"),
])
def test_a_bad_decoded_limit_is_refused_naming_the_setting(monkeypatch, name, value, words):
    monkeypatch.setenv(f"EDDYLINE_RUNTIME_{name}", value)
    with pytest.raises(ValidationError) as caught:
        RuntimeSettings()
    message = explain(caught.value)
    assert f"[runtime] {name.lower()} or EDDYLINE_RUNTIME_{name}: " in message and words in message, message


def test_a_bucket_keeps_its_share_of_decoded_processors_the_most_recently_spoken(tmp_path, monkeypatch):
    monkeypatch.setattr(bytewax_engine, "DECODED_OVERHEAD", 1_000_000)  # each device's ~7 KB of state: noise
    evs = events(70, devices=20)
    worker = Worker(tmp_path, decoded_bytes=BUCKETS * 2_500_000)  # two devices' worth per bucket
    head = worker.feed(evs[:60])
    worker.epoch()
    last: dict[int, list[str]] = {}  # per bucket, its devices by their last event
    for e in evs[:60]:
        order = last.setdefault(bucket_of(SPEC.key(e), BUCKETS), [])
        order[:] = [k for k in order if k != SPEC.key(e)] + [SPEC.key(e)]
    for i, logic in worker.logics.items():
        assert set(logic.live) == set(logic.spoke) == set(last[i][-2:])  # the two that spoke last
    tail = worker.feed(evs[60:])  # dropped ones are decoded again from their bytes
    assert by_device(head + tail) == by_device(run_local(SPEC, evs))


def test_the_share_is_by_memory_a_bucket_keeps_fewer_large_states(tmp_path, monkeypatch):
    """The decoded processors a bucket keeps are counted by their encoded size: with a share that fits about
    two default states, a device whose state is taken to be twice as large pushes out the other, and the
    bookkeeping follows every key that comes and goes."""
    size = len(encode_processor(run_local_processor(events(1)[0]), events(1)[0].record["device_id"]))
    monkeypatch.setattr(bytewax_engine, "DECODED_OVERHEAD", 0)
    evs = events(40, devices=12)
    worker = Worker(tmp_path, idle_after=timedelta(hours=1), decoded_bytes=BUCKETS * int(2.5 * size))
    worker.feed(evs)
    worker.epoch()
    for logic in worker.logics.values():
        assert set(logic.held) == set(logic.live) == set(logic.spoke) and len(logic.live) == 2
        assert logic.held_bytes == sum(logic.held.values()) <= logic.budget
    logic = next(iter(worker.logics.values()))
    big = list(logic.spoke)[-1]  # the most recently spoken
    logic._hold(big, 2 * size)  # as if its series had grown seasonal tables
    worker.epoch()
    assert list(logic.live) == [big]  # over the share: the least recently spoken went
    assert logic.held_bytes == sum(logic.held.values())
    logic.due = dict.fromkeys(logic.due, datetime.now(UTC))  # everything silent past idle_after: evicted
    logic.on_notify()
    assert not logic.live and not logic.held and logic.held_bytes == 0


def run_local_processor(event: Event):
    processor = SPEC.make_processor(event.record["device_id"])
    processor.process([event])
    return processor


def test_a_bucket_of_another_layout_version_is_refused_with_what_it_was(tmp_path, caplog):
    good = encode_bucket(Bucket(BUCKETS, 0, {}))
    newer = BUCKET_MAGIC + bytes((good[4] + 1,)) + good[5:]
    with pytest.raises(StateError, match="bucket layout version 2; this eddyline reads version 1"):
        decode_bucket(newer)
    with pytest.raises(StateError, match="not a bucket"):
        decode_bucket(encode_processor(SPEC.make_processor("d"), "d"))
    caplog.set_level(logging.ERROR)
    worker = Worker(tmp_path)
    logic = worker.build(newer)
    assert not logic.inline and not logic.refs
    assert "bucket layout version 2" in caplog.text and "starts fresh" in caplog.text


def test_a_version_missing_from_the_store_is_refused_and_the_device_starts_fresh(tmp_path, caplog):
    evs = events(14, devices=1)
    worker = Worker(tmp_path)
    worker.feed(evs[:7])
    worker.epoch()
    worker.epoch()
    worker.store._db.execute("DELETE FROM versions")
    worker.restart()
    caplog.set_level(logging.ERROR)
    assert by_device(worker.feed(evs[7:])) == by_device(run_local(SPEC, evs[7:]))
    assert "is in no state store" in caplog.text


def test_a_checkpoint_of_one_key_per_device_moves_into_buckets_and_scores_on(tmp_path):
    evs = events(42)
    head, tail = evs[:21], evs[21:]
    per_device = _reference_after(head)
    worker = Worker(tmp_path)
    # Bytewax resumes each old key under its device id and builds them all before it notifies any
    logics = [worker.build(encode_processor(processor, key)) for key, processor in per_device.items()]
    assert set(worker.store.keys()) == set(per_device)  # written at once (synced when the first leaves)
    assert all(logic.notify_at() is not None for logic in logics)
    assert logics[0].on_notify()[1] is _BucketLogic.DISCARD
    assert not worker.store._unsynced
    assert all(logic.on_notify()[1] is _BucketLogic.DISCARD for logic in logics[1:])
    assert by_device(worker.feed(tail)) == by_device(run_local(SPEC, tail, processors=_reference_after(head)))


def test_buckets_move_back_to_one_key_per_device(tmp_path):
    evs = events(42)
    worker = Worker(tmp_path)
    worker.feed(evs[:21])
    worker.epoch()
    worker.epoch()  # some states by version in the store, some as bytes
    for blob in worker.checkpoint.values():
        logic = _ProcessorLogic(SPEC, worker.output, blob, worker.store, None)
        assert logic.on_notify()[1] is _ProcessorLogic.DISCARD
    got = []
    for device, group in itertools.groupby(sorted(evs[21:], key=SPEC.key), key=SPEC.key):
        logic = _ProcessorLogic(SPEC, worker.output, None, worker.store, None)
        got += [e for emits in logic.on_batch(list(group))[0] for e in emits]
    assert by_device(got) == by_device(run_local(SPEC, evs[21:], processors=_reference_after(evs[:21])))


def test_an_idle_device_leaves_its_bucket_and_comes_back_exactly(tmp_path):
    evs = events(42)
    worker = Worker(tmp_path, idle_after=timedelta(0))
    worker.feed(evs[:21])
    worker.epoch()
    worker.epoch()
    for logic in list(worker.logics.values()):
        assert logic.on_notify()[1] is _BucketLogic.DISCARD  # every device idle: the bucket leaves Bytewax
    worker.logics.clear()
    worker.staged.GRACE_S = 0.0
    assert {k for k in worker.store.keys()} == {e.record["device_id"] for e in evs[:21]}
    tail = run_local(SPEC, evs[21:], processors=_reference_after(evs[:21]))
    assert by_device(worker.feed(evs[21:])) == by_device(tail)


def test_a_bucket_checkpointed_empty_leaves_at_once(tmp_path):
    logic = Worker(tmp_path).build(encode_bucket(Bucket(BUCKETS, -1, {})))
    assert logic.notify_at() is not None
    assert logic.on_notify()[1] is _BucketLogic.DISCARD


def gapped() -> list[Event]:
    """One device's batches with one lost: the three after it wait in its reorder window for a flush."""
    sim = SensorSimulator(devices=1, readings_per_message=30, seed=11)
    evs = [Event("sensor.readings", r["device_id"], r) for r in itertools.islice(sim, 6)]
    del evs[2]
    return evs


def leave_now(logic) -> list:
    """Notify ``logic`` as if its keys were silent past ``idle_after``; what it hands on."""
    if isinstance(logic, _BucketLogic):
        logic.due = dict.fromkeys(logic.due, datetime.now(UTC))
    return [e for out in logic.on_notify()[0] for e in out]


@pytest.mark.parametrize("how", ["resumed", "dropped-after-keep-decoded", "one-key-per-device"])
def test_a_device_that_leaves_as_bytes_hands_on_what_it_held(tmp_path, how):
    """A key that leaves memory while it is bytes (resumed and silent since; its processor dropped after
    ``keep_decoded``, 300 s by default against 600 s of ``idle_evict_s``) is flushed as a decoded one is."""
    evs = gapped()
    key = evs[0].record["device_id"]
    reference = _reference_after(evs)[key]
    worker = Worker(tmp_path, idle_after=timedelta(hours=1), keep_decoded=timedelta(0))
    if how == "one-key-per-device":
        logics = [_ProcessorLogic(SPEC, worker.output, encode_processor(_reference_after(evs)[key], key),
                                  worker.store, timedelta(0))]
    else:
        worker.feed(evs)
        worker.epoch()  # keep_decoded 0: the processor goes back to its bytes
        if how == "resumed":
            worker.restart()
        logics = list(worker.logics.values())
    assert all(getattr(logic, "processor", None) is None and not getattr(logic, "live", {}) for logic in logics)
    held = [e for logic in logics for e in leave_now(logic)]
    assert plain(held) == plain(reference.flush()) != []
    stored = restore_or_fresh(SPEC, key, worker.store.get(key))[0]
    assert stored.flush() == [] and stored.snapshot() == reference.snapshot()  # stored as the flush left it


def test_a_device_that_holds_nothing_leaves_as_the_bytes_it_had(tmp_path, monkeypatch):
    """Most idle keys hold nothing back: their bytes are stored as they were, not encoded again, and a flow whose
    processors never hold anything back (no ``flush`` of their own) does not decode them either."""
    evs = [e for e in events(14) if e.record["device_id"] == events(1)[0].record["device_id"]]
    key = evs[0].record["device_id"]
    worker = Worker(tmp_path, idle_after=timedelta(hours=1), keep_decoded=timedelta(0))
    worker.feed(evs)
    worker.epoch()
    logic = next(iter(worker.logics.values()))
    saved = logic._saved(key)
    assert leave_now(logic) == [] and worker.store.get(key) == saved

    class Quiet(type(SPEC.make_processor(key))):
        flush = Processor.flush

    decoded: list[str] = []
    monkeypatch.setattr(bytewax_engine, "restore_or_fresh", lambda spec, k, blob: decoded.append(k))
    quiet = dataclasses.replace(SPEC, make_processor=lambda k: Quiet(k))
    logic = _ProcessorLogic(quiet, FlowOutput(quiet, KafkaSettings()), saved, worker.store, timedelta(0))
    assert leave_now(logic) == [] and decoded == [] and worker.store.get(key) == saved


@pytest.mark.parametrize("before", ["one-key-per-device", "another-bucket-count", "buckets-before-one-per-device"])
def test_a_device_resumed_in_another_layout_hands_on_what_it_held(tmp_path, before):
    """A checkpoint of another state layout moves its keys to the idle store: they leave memory as evicted keys do,
    flushed, or what they held back (batches behind a lost one) stays there until retention deletes it."""
    evs = gapped()
    key = evs[0].record["device_id"]
    reference = _reference_after(evs)[key]
    state = encode_processor(reference, key)
    store = IdleStore(tmp_path / "idle-0.sqlite3")
    output = FlowOutput(SPEC, KafkaSettings())
    limits = {"keep_decoded": timedelta(seconds=KEEP_DECODED_S), "decoded_bytes": DECODED_BYTES}
    if before == "buckets-before-one-per-device":
        logic = _ProcessorLogic(SPEC, output, encode_bucket(Bucket(BUCKETS, 0, {key: state})), store, None)
    else:
        resume = state if before == "one-key-per-device" else encode_bucket(Bucket(BUCKETS + 1, 0, {key: state}))
        logic = _BucketLogic(SPEC, output, resume, store, None, BUCKETS, StagedStates(store), **limits)
    emits, leaves = logic.on_notify()
    assert leaves is _BucketLogic.DISCARD
    assert plain([e for out in emits for e in out]) == plain(reference.flush()) != []
    stored = restore_or_fresh(SPEC, key, store.get(key))[0]
    assert stored.flush() == [] and stored.snapshot() == reference.snapshot()  # stored as the flush left it


def test_states_moved_by_one_process_reach_a_device_that_speaks_on_another_before_the_move_commits(tmp_path):
    # a cluster restarted with another layout: process 1 resumes a device's old state, process 0 has its new bucket
    evs = events(42, devices=1)
    head, tail = evs[:21], evs[21:]
    per_device = _reference_after(head)
    folder = tmp_path / "idle"
    one = IdleStore(folder / "idle-1.sqlite3", peers="idle*.sqlite3")
    zero = IdleStore(folder / "idle-0.sqlite3", peers="idle*.sqlite3")
    output = FlowOutput(SPEC, KafkaSettings())
    limits = {"keep_decoded": timedelta(seconds=KEEP_DECODED_S), "decoded_bytes": DECODED_BYTES}
    moved = [_BucketLogic(SPEC, output, encode_processor(p, k), one, None, BUCKETS, StagedStates(one), **limits)
             for k, p in per_device.items()]
    fresh = _BucketLogic(SPEC, output, None, zero, None, BUCKETS, StagedStates(zero), **limits)
    got = [e for emits in fresh.on_batch(tail)[0] for e in emits]  # before process 1 notifies its moved logics
    assert by_device(got) == by_device(run_local(SPEC, tail, processors=_reference_after(head)))
    assert all(logic.on_notify()[1] is _BucketLogic.DISCARD for logic in moved)


def test_a_device_that_speaks_every_epoch_keeps_a_bounded_number_of_versions_in_the_store(tmp_path):
    # a version that no checkpoint refers to alone (its key was re-encoded in the same snapshot) waits for no grace
    evs = events(60, devices=1)
    worker = Worker(tmp_path)
    worker.feed(evs[:2])
    worker.epoch()
    worker.epoch()  # the device's state by version: what a checkpoint of a quiet device refers to
    for i in range(2, 60, 2):
        worker.feed(evs[i:i + 2])
        worker.epoch()
    worker.staged.flush(force=True)
    rows = worker.store._db.execute("SELECT COUNT(*) FROM versions").fetchone()[0]
    assert rows <= 2, f"{rows} versions of one device after 30 epochs within the grace"
    assert len(worker.staged._forget) <= 1
    worker.restart()
    tail = events(70, devices=1)[60:]
    assert by_device(worker.feed(tail)) == by_device(run_local(SPEC, tail, processors=_reference_after(evs)))


def test_a_device_that_leaves_while_its_new_state_waits_to_be_written_leaves_its_bucket_whole(tmp_path):
    # stored by version, then changed (its new bytes staged), then idle before its bucket's next snapshot
    evs = events(42, devices=7)
    one, other = next((a, b) for a, b in itertools.combinations(sorted({SPEC.key(e) for e in evs}), 2)
                      if bucket_of(a, BUCKETS) == bucket_of(b, BUCKETS))
    evs = [e for e in evs if SPEC.key(e) in (one, other)]
    head, tail = evs[:len(evs) // 2], evs[len(evs) // 2:]
    worker = Worker(tmp_path, idle_after=timedelta(hours=1))
    worker.feed(head[:4])
    worker.epoch()
    worker.epoch()
    worker.feed(head[4:])
    worker.epoch()
    (logic,) = worker.logics.values()
    logic.due[one] = logic.next_due = datetime.now(UTC) - timedelta(seconds=1)
    assert logic.on_notify()[1] is _BucketLogic.RETAIN  # the other device stays
    worker.epoch()  # Bytewax snapshots a key it notified
    worker.restart()
    assert by_device(worker.feed(tail)) == by_device(run_local(SPEC, tail, processors=_reference_after(head)))


def test_the_runtime_settings_give_both_bytewax_entry_points_the_same_options(monkeypatch):
    """One translation of ``[runtime]`` for ``bytewax.run`` and ``run_cluster``: every option is a parameter of
    both, and 0 seconds of idle eviction means never."""
    import inspect

    from streams.engines.bytewax import run
    from streams.engines.bytewax_cluster import run_cluster

    monkeypatch.setenv("EDDYLINE_RUNTIME_IDLE_EVICT_S", "0")
    monkeypatch.setenv("EDDYLINE_RUNTIME_POLL_LINGER_MS", "7")
    options = RuntimeSettings().bytewax_options()
    assert options["idle_after"] is None and options["linger"] == timedelta(milliseconds=7)
    for entry in (run, run_cluster):
        assert set(options) <= set(inspect.signature(entry).parameters), entry.__name__
    monkeypatch.setenv("EDDYLINE_RUNTIME_IDLE_EVICT_S", "90")
    assert RuntimeSettings().bytewax_options()["idle_after"] == timedelta(seconds=90)


def test_a_flow_started_directly_gets_the_runtime_settings_defaults(monkeypatch, tmp_path, defaults_config):
    """``bytewax.run``, ``run_cluster`` and ``build_dataflow`` default to what ``eddyline run`` passes with nothing
    configured (1,024 state buckets, not one key per device), and a dataflow built without options is bucketed."""
    import inspect

    from streams.engines.bytewax import run
    from streams.engines.bytewax_cluster import run_cluster

    for name in [n for n in os.environ if n.startswith("EDDYLINE_RUNTIME_")]:
        monkeypatch.delenv(name)
    configured = RuntimeSettings().bytewax_options()
    assert configured["buckets"] == 1024
    for entry in (run, run_cluster, build_dataflow):
        params = inspect.signature(entry).parameters
        defaults = {k: params[k].default for k in configured if k in params}
        assert defaults == {k: configured[k] for k in defaults}, entry.__name__
    assert set(configured) <= set(inspect.signature(run).parameters)
    process = next(step for step in build_dataflow(SPEC, KafkaSettings()).substeps if step.step_id.endswith(".process"))
    assert isinstance(process.builder(None), _BucketLogic)


def test_a_bucket_snapshot_from_kept_entries_is_its_states_and_versions_encoded_whole(tmp_path):
    evs = events(60, devices=12)
    worker = Worker(tmp_path, idle_after=timedelta(hours=1))
    worker.staged.GRACE_S = 0.0
    for start in range(0, 60, 12):  # states staged, written, replaced and referred to by version
        worker.feed(evs[start:start + 12])
        worker.epoch()
        for logic in worker.logics.values():
            assert logic.snapshot() == encode_bucket(Bucket(BUCKETS, logic.index, logic.inline, logic.refs))
    logic = next(logic for logic in worker.logics.values() if logic.refs)
    gone = next(iter(logic.refs))
    logic.due[gone] = datetime.now(UTC) - timedelta(seconds=1)  # silent long enough: leaves for the idle store
    logic.on_notify()
    assert gone not in decode_bucket(logic.snapshot()).refs
    worker.epoch()
    worker.restart()  # resumed: the kept entries are rebuilt from the checkpoint
    for i, logic in worker.logics.items():
        assert logic.snapshot() == worker.checkpoint[i]


def test_a_device_evicted_from_its_bucket_is_freed_though_a_full_collection_froze_it(tmp_path):
    """In a flow, processors that survived a full collection are frozen (``streams.memory.flow_collector``); idle
    eviction must still free them, with no collection to help (memory follows active keys)."""
    import gc
    import weakref

    from streams.memory import flow_collector

    worker = Worker(tmp_path, idle_after=timedelta(hours=1))
    with flow_collector():
        worker.feed(events(21))
        worker.epoch()
        gc.collect()
        refs = [weakref.ref(p) for logic in worker.logics.values() for p in logic.live.values()]
        frozen = gc.get_freeze_count()
        assert len(refs) == 7
        gc.disable()
        try:
            for logic in worker.logics.values():
                logic.due = dict.fromkeys(logic.due, datetime.now(UTC))
                logic.on_notify()
            assert all(r() is None for r in refs)
            assert gc.get_freeze_count() < frozen - 7 * 8, "each processor left the frozen generation with its parts"
        finally:
            gc.enable()
