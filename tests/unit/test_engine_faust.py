"""The Faust adapter's delivery rules, without a broker: what a state applies, and when Faust may seek."""

from __future__ import annotations

import asyncio

from connectors.kafka import KafkaSettings
from streams.engines.faust import build_app, unabsorbed
from streams.processor import Event
from streams.flows.sensor_anomaly import sensor_anomaly_flow


def ev(partition: int, offset: int, topic: str = "sensor.readings") -> Event:
    return Event(topic, "device-000", {"offset": offset}, partition, offset)


def where(events: list[Event]) -> list[tuple[int, int]]:
    return [(e.partition, e.offset) for e in events]


def test_a_partitions_later_offset_arriving_first_does_not_hide_the_earlier_one():
    # a seek back to the committed offset can bring 500 after 504 in one batch; applied as they came,
    # 504 would be recorded as absorbed first and 500 would count as already applied
    batch = [ev(2, 504), ev(1, 10), ev(2, 500), ev(1, 11)]
    assert where(unabsorbed(batch, {("sensor.readings", 2): 496})) == [(2, 500), (1, 10), (2, 504), (1, 11)]


def test_a_redelivered_event_is_applied_once():
    batch = [ev(2, 500), ev(2, 501), ev(2, 500), ev(2, 501), ev(2, 502)]
    assert where(unabsorbed(batch, {})) == [(2, 500), (2, 501), (2, 502)]


def test_absorbed_offsets_are_compared_within_their_own_partition_and_topic():
    batch = [ev(1, 10), ev(2, 10), ev(2, 11), ev(2, 3, topic="other")]
    absorbed = {("sensor.readings", 2): 10, ("sensor.readings", 1): 9}
    assert where(unabsorbed(batch, absorbed)) == [(1, 10), (2, 11), (2, 3)]
    assert unabsorbed([ev(2, 10), ev(2, 7)], {("sensor.readings", 2): 10}) == []


def test_after_a_table_restore_the_input_partitions_are_sought_with_the_flow_stopped(tmp_path):
    """Faust resumes the input partitions and seeks them right after restoring the table, its fetcher
    still running (it was reading the changelog); records fetched during that seek were lost (a restarted
    worker never scored two readings). The adapter stops the flow first; Faust resumes it after the seek."""
    from faust.types import TP

    settings = KafkaSettings(bootstrap_servers="127.0.0.1:1")
    flowing_during_seek: list[bool] = []

    async def restore_completes() -> bool:
        app = build_app(sensor_anomaly_flow(), settings, state_dir=tmp_path)  # in the loop Faust will use
        consumer = app.consumer

        async def perform_seek() -> None:
            flowing_during_seek.append(consumer.flow_active)

        consumer.perform_seek = perform_seek
        consumer.assignment = lambda: {TP(settings.topic("sensor.readings"), 0)}
        consumer.resume_partitions = lambda tps: None
        consumer.resume_flow()  # as Faust leaves it after reading the changelog
        await app.tables.recovery.on_recovery_completed(generation_id=app.consumer_generation_id)
        return consumer.flow_active

    flowing_after = asyncio.run(restore_completes())
    assert flowing_during_seek == [False]
    assert flowing_after  # Faust resumed it once the partitions were in place


class _Table(dict):
    @property
    def data(self) -> dict:
        return self


def test_a_changelog_state_is_plain_bytes_a_pickled_one_is_refused_and_idle_processors_leave_memory():
    import pickle
    import time

    from streams.engines.faust import _FlowRunner
    from streams.state import encode_processor

    spec = sensor_anomaly_flow()
    table = _Table()
    runner = _FlowRunner(spec, KafkaSettings(), app=None, table=table, idle_after_s=60)
    proc = spec.make_processor("device-000")
    table[b"device-000"] = encode_processor(proc, "device-000", {("sensor.readings", 1): 41})
    table[b"device-001"] = pickle.dumps(proc)
    restored, offsets = runner._load(b"device-000")
    assert offsets == {("sensor.readings@direct", 1): 41, ("sensor.readings@by-key", 1): 41}, "one offset, both paths"
    assert restored.params() == proc.params()
    fresh, offsets = runner._load(b"device-001")
    assert offsets == {} and fresh.device_id == "device-001"

    runner._live[b"device-000"] = (table[b"device-000"], restored, offsets, 1)
    runner._used[b"device-000"] = time.monotonic() - 61
    asyncio.run(runner.sweep())
    assert runner._live == {} and b"device-000" in table, "the bytes stay in the table, the processor goes"


def test_an_idle_processor_frozen_by_a_full_collection_is_freed_when_it_leaves_memory():
    """In a flow, processors that survived a full collection are frozen (``streams.memory.flow_collector``); the
    idle sweep must still free them, with no collection to help (memory follows active keys)."""
    import gc
    import itertools
    import time
    import weakref

    from streams.engines.faust import _FlowRunner
    from streams.memory import flow_collector
    from streams.producers.simulator import SensorSimulator

    spec = sensor_anomaly_flow()
    runner = _FlowRunner(spec, KafkaSettings(), app=None, table=_Table(), idle_after_s=60)
    with flow_collector():
        for rec in itertools.islice(SensorSimulator(devices=5, readings_per_message=20, seed=2), 5):
            key = rec["device_id"]
            proc = spec.make_processor(key)
            proc.process([Event("sensor.readings", key, rec)])
            runner._live[key.encode()] = (b"", proc, {}, 0)
            runner._used[key.encode()] = time.monotonic() - 61
        gc.collect()
        refs = [weakref.ref(live[1]) for live in runner._live.values()]
        frozen = gc.get_freeze_count()
        gc.disable()
        try:
            del proc
            asyncio.run(runner.sweep())
            assert runner._live == {} and all(r() is None for r in refs)
            assert gc.get_freeze_count() < frozen - 5 * 8, "each processor left the frozen generation with its parts"
        finally:
            gc.enable()


def test_the_workers_consumer_fetches_with_a_short_wait_and_its_producer_batches_a_polls_states(tmp_path):
    """Faust builds its consumer with a fixed 1,500 ms fetch wait, which a broker that holds a fetch for its wait
    (the embedded one) turned into a second of latency; aiokafka's 16 KB batches held a partition's changelog sends
    to one or two states per broker round trip. ``[kafka] extra`` still wins over both."""
    import inspect

    from aiokafka import AIOKafkaConsumer

    from streams.engines.faust_transport import FETCH_WAIT_MS

    async def built(settings: KafkaSettings) -> tuple[int, int]:
        app = build_app(sensor_anomaly_flow(), settings, state_dir=tmp_path)
        consumer = app.consumer._thread._create_worker_consumer(app.transport)  # what the started thread builds
        try:
            return consumer._fetch_max_wait_ms, app.conf.producer_max_batch_size
        finally:
            await consumer.stop()

    settings = KafkaSettings(bootstrap_servers="127.0.0.1:1")
    assert asyncio.run(built(settings)) == (FETCH_WAIT_MS, settings.batch_size)
    tuned = settings.model_copy(update={"extra": {"fetch.wait.max.ms": "10", "batch.size": "65536"}})
    assert asyncio.run(built(tuned)) == (10, 65536)
    # the private attribute is what aiokafka hands its fetcher when the consumer starts
    assert "fetch_max_wait_ms=self._fetch_max_wait_ms" in inspect.getsource(AIOKafkaConsumer.start)


def test_the_faust_entry_points_default_to_the_runtime_settings_and_take_them_from_one_translation(monkeypatch):
    """``run``, ``run_worker`` and ``build_app`` default to what ``eddyline run --engine faust`` passes with nothing
    configured (``RuntimeSettings.faust_options``), and what it passes is a parameter of ``run``; 0 seconds of idle
    eviction means never, as for Bytewax."""
    import inspect
    import os

    from streams.engines.faust import _FlowRunner, run, run_worker
    from streams.runtime import RuntimeSettings

    for name in [n for n in os.environ if n.startswith("EDDYLINE_RUNTIME_")]:
        monkeypatch.delenv(name)
    configured = RuntimeSettings().faust_options()
    assert configured == {"batch_size": 500, "lag_interval_s": 5.0, "idle_after_s": 600.0,
                          "idle_retention_s": 30 * 86400.0}
    assert set(configured) <= set(inspect.signature(run).parameters)
    for entry in (run, run_worker, build_app, _FlowRunner):
        params = inspect.signature(entry).parameters
        defaults = {k: params[k].default for k in configured if k in params}
        assert defaults and defaults == {k: configured[k] for k in defaults}, entry.__name__
    monkeypatch.setenv("EDDYLINE_RUNTIME_IDLE_EVICT_S", "0")
    assert RuntimeSettings().faust_options()["idle_after_s"] is None


def test_the_idle_eviction_setting_reaches_the_faust_runner(tmp_path):
    app = build_app(sensor_anomaly_flow(), KafkaSettings(bootstrap_servers="127.0.0.1:1"), state_dir=tmp_path,
                    idle_after_s=None)
    assert app.eddyline_runner.idle_after_s is None


class _Store(dict):
    def written(self, partition: int, offset: int) -> None:
        pass

    def put(self, key: bytes, blob: bytes, partition: int) -> None:
        self[key] = blob


class _StoreTable:
    def __init__(self) -> None:
        self.data = _Store()

    def get(self, key: bytes):
        return self.data.get(key)


class _Producer:
    def __init__(self) -> None:
        self.sent: list[tuple] = []

    async def send(self, topic, key, value, partition, timestamp, headers):
        from types import SimpleNamespace

        self.sent.append((topic, key, value, dict(headers or [])))
        done = asyncio.get_running_loop().create_future()
        done.set_result(SimpleNamespace(partition=partition or 0, offset=len(self.sent)))
        return done


def test_a_processor_that_raises_dead_letters_its_calls_events_and_the_worker_goes_on():
    """A processor's exception used to crash the worker, and the replay crashed it again at every restart."""
    from dataclasses import replace
    from types import SimpleNamespace

    from connectors.dlq import dlq_info
    from schemas import SENSOR_BATCH, AvroSerde
    from streams.engines.faust import _FlowRunner
    from streams.state import decode_checkpoint
    from tests.unit.test_bytewax_outputs import Fragile, fragile_events

    settings = KafkaSettings(namespace="t9.")
    spec = replace(sensor_anomaly_flow(), make_processor=Fragile, key=lambda e: e.key)
    app = SimpleNamespace(producer=_Producer())
    runner = _FlowRunner(spec, settings, app=app, table=_StoreTable(), idle_after_s=None)
    serde = AvroSerde()

    def batch(evs):
        return [SimpleNamespace(message=SimpleNamespace(
            topic=settings.topic(e.topic), key=e.key.encode(), partition=e.partition, offset=e.offset, timestamp=0,
            headers=None, value=serde.encode(SENSOR_BATCH, e.record))) for e in evs]

    bad = batch(fragile_events("d-bad", ["p", "boom", "p"]))
    asyncio.run(runner.handle([*batch(fragile_events("d-ok", ["p"])), *bad], repartitioned=False))
    letters = [s for s in app.producer.sent if s[0] == "t9.dlq.sensor.readings"]
    assert [s[2] for s in letters] == [m.message.value for m in bad], "the events' bytes as they came"
    infos = [dlq_info(s[3]) for s in letters]
    assert {i["reason"] for i in infos} == {"processing_failed"}
    assert [i["offset"] for i in infos] == ["100", "101", "102"]
    assert "RuntimeError: cannot take d-bad-1" in infos[0]["error"] and letters[0][1] == b"d-bad"
    assert [s[1] for s in app.producer.sent if "scores.anomaly" in s[0]] == [b"d-ok"], "the other key's go out"
    saved = decode_checkpoint(runner.table.get(b"d-bad"))
    assert saved["state"] == {"seen": [0]} and saved["offsets"] == {("sensor.readings@direct", 3): 102}, \
        "stored as the call left it, its events absorbed: a replay does not apply them again"
    app.producer.sent.clear()
    asyncio.run(runner.handle(batch(fragile_events("d-bad", ["p"] * 4)), repartitioned=False))
    assert [s[1] for s in app.producer.sent if "scores.anomaly" in s[0]] == [b"d-bad"]
    assert decode_checkpoint(runner.table.get(b"d-bad"))["state"] == {"seen": [0, 3]}


def _message(topic: str, key: bytes | None, value: bytes, partition: int, offset: int, headers=None):
    from types import SimpleNamespace

    return SimpleNamespace(message=SimpleNamespace(topic=topic, key=key, value=value, partition=partition,
                                                   offset=offset, timestamp=0, headers=headers))


def _rekeyed(runner, sent: list[tuple]) -> list:
    """The by-key agent's batch: what the input agent forwarded to the repartition topic, as it comes back."""
    return [_message(runner.repartition, key, value, 0, i, list(headers.items()))
            for i, (topic, key, value, headers) in enumerate(sent) if topic == runner.repartition]


def _sensor_runner(spec=None, idle_after_s: float | None = None):
    from types import SimpleNamespace

    from streams.engines.faust import _FlowRunner

    settings = KafkaSettings(namespace="t17.")
    app = SimpleNamespace(producer=_Producer(), rebalancing=False)
    return _FlowRunner(spec or sensor_anomaly_flow(), settings, app=app, table=_StoreTable(), idle_after_s=idle_after_s)


def _scored(runner) -> list[str]:
    from schemas import ANOMALY_SCORE, AvroSerde

    serde = AvroSerde()
    return sorted(serde.decode(s[2], ANOMALY_SCORE)["source_event_id"] for s in runner.app.producer.sent
                  if s[0] == "t17.scores.anomaly")


def test_a_device_fed_directly_and_through_the_repartition_topic_from_one_partition_loses_no_batch():
    """Offset 0 came without a key (repartitioned), offset 1 keyed by its device (processed directly, first): both
    shared one absorbed offset per partition, so offset 1 marked the repartitioned offset 0 applied and it was lost.
    Bytewax and the engine-free reference score both."""
    import itertools

    from schemas import SENSOR_BATCH, AvroSerde
    from streams.processor import run_local
    from streams.producers.simulator import SensorSimulator

    spec = sensor_anomaly_flow()
    serde = AvroSerde()
    recs = list(itertools.islice(SensorSimulator(devices=1, readings_per_message=10, seed=3), 2))
    device = recs[0]["device_id"]
    runner = _sensor_runner(spec)
    inputs = [_message("t17.sensor.readings", key, serde.encode(SENSOR_BATCH, r), 0, i)
              for i, (key, r) in enumerate(zip([None, device.encode()], recs))]
    asyncio.run(runner.handle(inputs, repartitioned=False))
    by_key = _rekeyed(runner, runner.app.producer.sent)
    assert len(by_key) == 1
    asyncio.run(runner.handle(by_key, repartitioned=True))
    want = [e.record["source_event_id"] for e in run_local(spec, [Event("sensor.readings", device, r) for r in recs])
            if e.topic == "scores.anomaly"]
    assert _scored(runner) == sorted(want) == sorted(r["event_id"] for r in recs)

    runner.app.producer.sent.clear()  # both replayed (a restart before the commit): neither is applied again
    asyncio.run(runner.handle(inputs, repartitioned=False))
    asyncio.run(runner.handle(_rekeyed(runner, runner.app.producer.sent), repartitioned=True))
    assert _scored(runner) == []


def test_the_two_agents_never_work_on_one_key_at_once():
    """Each agent loaded the key's state, processed and stored it; the second store overwrote the first, and the
    changelog lost the events of one of them."""
    from dataclasses import replace

    from schemas import SENSOR_BATCH, AvroSerde
    from streams.engines.faust import _SRC_OFFSET, _SRC_PARTITION, _SRC_TOPIC
    from streams.state import decode_checkpoint
    from tests.unit.test_bytewax_outputs import Fragile, fragile_events

    serde = AvroSerde()
    runner = _sensor_runner(replace(sensor_anomaly_flow(), make_processor=Fragile))
    first, second = fragile_events("d-1", ["p", "p"])
    direct = [_message("t17.sensor.readings", b"d-1", serde.encode(SENSOR_BATCH, second.record), 3, 101)]
    copy = [_message(runner.repartition, b"d-1", serde.encode(SENSOR_BATCH, first.record), 0, 0, [
        (_SRC_TOPIC, b"t17.sensor.readings"), (_SRC_PARTITION, b"3"), (_SRC_OFFSET, b"100")])]

    async def both() -> None:
        await asyncio.gather(runner.handle(direct, repartitioned=False), runner.handle(copy, repartitioned=True))

    asyncio.run(both())
    saved = decode_checkpoint(runner.table.get(b"d-1"))
    assert sorted(saved["state"]["seen"]) == [0, 1], "both agents' events are in the stored state"
    assert saved["offsets"] == {("sensor.readings@direct", 3): 101, ("sensor.readings@by-key", 3): 100}


def test_a_state_stored_before_the_paths_were_told_apart_skips_what_it_absorbed_on_both():
    """Its one offset per partition covered both paths; a replay along either must not be applied again."""
    from dataclasses import replace

    from schemas import SENSOR_BATCH, AvroSerde
    from streams.engines.faust import _SRC_OFFSET, _SRC_PARTITION, _SRC_TOPIC
    from streams.state import decode_checkpoint, encode_processor
    from tests.unit.test_bytewax_outputs import Fragile, fragile_events

    serde = AvroSerde()
    spec = replace(sensor_anomaly_flow(), make_processor=Fragile)
    runner = _sensor_runner(spec)
    old = Fragile("d-1")
    old.seen = [0, 1]
    runner.table.data[b"d-1"] = encode_processor(old, "d-1", {("sensor.readings", 3): 101})
    evs = fragile_events("d-1", ["p"] * 4)  # offsets 100..103
    direct = [_message("t17.sensor.readings", b"d-1", serde.encode(SENSOR_BATCH, e.record), 3, e.offset)
              for e in evs[1:3]]
    copies = [_message(runner.repartition, b"d-1", serde.encode(SENSOR_BATCH, e.record), 0, i, [
        (_SRC_TOPIC, b"t17.sensor.readings"), (_SRC_PARTITION, b"3"), (_SRC_OFFSET, str(e.offset).encode())])
        for i, e in enumerate([evs[0], evs[3]])]
    asyncio.run(runner.handle(direct, repartitioned=False))
    asyncio.run(runner.handle(copies, repartitioned=True))
    saved = decode_checkpoint(runner.table.get(b"d-1"))
    assert saved["state"]["seen"] == [0, 1, 2, 3], "101 and 100 were absorbed already; 102 and 103 are new"
    assert saved["offsets"] == {("sensor.readings@direct", 3): 102, ("sensor.readings@by-key", 3): 103}


def test_an_idle_device_hands_on_the_batches_it_held_behind_a_lost_one_before_it_leaves_memory():
    """A device lost a batch and fell silent: Bytewax scores what it held once the key is idle (it flushes before
    it evicts), Faust dropped the processor with the batches inside, unscored until the device spoke again."""
    import itertools

    from schemas import SENSOR_BATCH, AvroSerde
    from streams.producers.simulator import SensorSimulator
    from streams.state import restore_or_fresh

    written: list = []

    class Sink:
        def write(self, emits) -> None:
            written.extend(emits)

        def close(self) -> None:
            pass

    spec = sensor_anomaly_flow()
    spec.sinks = [Sink]
    serde = AvroSerde()
    recs = list(itertools.islice(SensorSimulator(devices=1, readings_per_message=10, seed=3), 4))
    del recs[1]  # lost on the way: the next two wait for it
    device = recs[0]["device_id"]
    runner = _sensor_runner(spec, idle_after_s=60)
    asyncio.run(runner.handle([_message("t17.sensor.readings", device.encode(), serde.encode(SENSOR_BATCH, r), 0, i)
                               for i, r in enumerate(recs)], repartitioned=False))
    assert _scored(runner) == [recs[0]["event_id"]]
    runner._used[device.encode()] -= 61

    runner.app.rebalancing = True  # its partition may be on its way to another worker: left alone
    asyncio.run(runner.sweep())
    assert _scored(runner) == [recs[0]["event_id"]] and device.encode() in runner._live
    runner.app.rebalancing = False
    asyncio.run(runner.sweep())
    assert _scored(runner) == sorted(r["event_id"] for r in recs)
    assert sorted(e.record["source_event_id"] for e in written if e.topic == "scores.anomaly") == _scored(runner)
    assert runner._live == {} and runner._used == {}
    stored, _ = restore_or_fresh(spec, device, runner.table.get(device.encode()))
    assert stored.sequence.pending == {} and stored.sequence.hwm == recs[-1]["seq"], "the flushed state is stored"
    runner.app.producer.sent.clear()
    asyncio.run(runner.sweep())
    assert runner.app.producer.sent == []
