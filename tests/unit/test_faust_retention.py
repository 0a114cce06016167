"""The Faust adapter deletes a state idle past ``idle_retention_s``, as the Bytewax engine deletes an evicted key's
state from its idle store: a tombstone in the key's changelog partition, and out of the table, so a restart does not
load a finished conversation or a retired device again. Without a broker: the producer and the store are stand-ins."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

from connectors.kafka import KafkaSettings
from streams.engines.faust import MARKER, _FlowRunner, changelog_topic
from streams.flows.sensor_anomaly import sensor_anomaly_flow
from streams.state import encode_processor


class Producer:
    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes | None, bytes | None, int | None]] = []

    async def send(self, topic, key, value, partition, timestamp, headers):
        self.sent.append((topic, key, value, partition))
        done = asyncio.get_running_loop().create_future()
        done.set_result(SimpleNamespace(partition=partition, offset=len(self.sent)))
        return done


class Store:
    """What the adapter uses of ``faust_store.ChangelogStore``: Faust's in-memory dict and key partitions."""

    def __init__(self) -> None:
        self.data: dict[bytes, bytes] = {}
        self._key_partition: dict[bytes, int] = {}

    def put(self, key: bytes, value: bytes, partition: int) -> None:
        self.data[key] = value
        self._key_partition[key] = partition

    def written(self, partition: int, offset: int) -> None:
        pass


def runner_with(loaded: dict[bytes, int], retention_s: float = 3600) -> _FlowRunner:
    """A runner whose table loaded these keys' states (key -> changelog partition) from the changelog."""
    spec = sensor_anomaly_flow()
    store = Store()
    for key, partition in loaded.items():
        store.put(key, encode_processor(spec.make_processor(key.decode()), key.decode()), partition)
    table = SimpleNamespace(data=store, get=store.data.get)
    app = SimpleNamespace(producer=Producer(), rebalancing=False)
    runner = _FlowRunner(spec, KafkaSettings(namespace="t18."), app, table, idle_after_s=60,
                         idle_retention_s=retention_s)
    runner.forget_moved()  # as after the table's recovery
    return runner


def age(runner: _FlowRunner, key: bytes, seconds: float) -> None:
    written, partition = runner._held[key]
    runner._held[key] = (written - seconds, partition)


def test_a_state_idle_past_the_retention_gets_a_tombstone_in_its_partition_and_leaves_the_table():
    runner = runner_with({b"device-000": 1, b"device-001": 2})
    age(runner, b"device-000", 3601)
    runner._used[b"device-000"] -= 3601  # loaded that long ago, and silent since: flushed (nothing held) first
    asyncio.run(runner.sweep())
    changelog = changelog_topic(runner.spec, runner.settings)
    assert runner.app.producer.sent == [(changelog, b"device-000", None, 1), (changelog, MARKER, None, 1)]
    assert set(runner.table.data.data) == set(runner.table.data._key_partition) == {b"device-001"}
    runner.app.producer.sent.clear()
    asyncio.run(runner.sweep())
    assert runner.app.producer.sent == [], "deleted once"


def test_a_loaded_state_counts_from_its_load_and_a_written_one_from_its_write():
    import itertools

    from schemas import SENSOR_BATCH, AvroSerde
    from streams.producers.simulator import SensorSimulator

    runner = runner_with({b"device-000": 1})
    asyncio.run(runner.sweep())
    assert runner.app.producer.sent == [], "loaded just now: its retention starts at the load"
    age(runner, b"device-000", 3601)
    rec = next(itertools.islice(SensorSimulator(devices=1, readings_per_message=10, seed=3), 1))
    value = AvroSerde().encode(SENSOR_BATCH, rec)
    message = SimpleNamespace(topic="t18.sensor.readings", key=b"device-000", value=value, partition=1, offset=0,
                              timestamp=0, headers=None)
    asyncio.run(runner.handle([SimpleNamespace(message=message)], repartitioned=False))
    runner._used[b"device-000"] -= 61
    runner.app.producer.sent.clear()
    asyncio.run(runner.sweep())  # evicted, its state written a moment ago
    assert b"device-000" in runner.table.data.data and runner._live == {}, "written again: kept"


def test_a_key_in_memory_is_kept_whatever_its_age_and_deleted_once_it_has_left():
    runner = runner_with({b"device-000": 1})
    proc = runner.spec.make_processor("device-000")
    runner._live[b"device-000"] = (runner.table.data.data[b"device-000"], proc, {}, 1)
    runner._used[b"device-000"] = runner._held[b"device-000"][0]
    age(runner, b"device-000", 3601)
    asyncio.run(runner.sweep())  # used just now: it stays in memory, and so in the table
    assert b"device-000" in runner.table.data.data and b"device-000" in runner._live
    runner._used[b"device-000"] -= 61
    asyncio.run(runner.sweep())  # evicted (its flush hands nothing on), then past its retention: deleted
    assert b"device-000" not in runner.table.data.data and runner._live == {}


def test_without_a_retention_states_stay():
    runner = runner_with({b"device-000": 1}, retention_s=None)
    age(runner, b"device-000", 10**9)
    asyncio.run(runner.sweep())
    assert runner.app.producer.sent == [] and b"device-000" in runner.table.data.data
