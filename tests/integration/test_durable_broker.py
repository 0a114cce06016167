"""The durable broker (Tansu on S3, here s3rver on disk) keeps topics, messages and committed offsets.

Each test produces, commits half, then breaks something: the broker stopped with SIGTERM, the broker
killed with SIGKILL, or the S3 server killed with SIGKILL under a running broker. Afterwards the topic is
there with its partitions, the group resumes exactly at its committed offsets, and a new group reads
every message once.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest
from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import AdminClient

from connectors.broker import BrokerSettings, EmbeddedBroker, check_storage
from connectors.kafka import KafkaSettings, consumer_config, create_topics, make_producer
from connectors.testing.s3rver import S3rver

pytestmark = pytest.mark.integration

TOPIC = "durable.check"
MESSAGES = 400
PARTITIONS = 2


def _settings(broker: EmbeddedBroker) -> KafkaSettings:
    return KafkaSettings(bootstrap_servers=broker.bootstrap, session_timeout_ms=6000)


def _consumer(settings: KafkaSettings, group: str) -> Consumer:
    # On S3 every fetch lists objects: keep the broker's wait at 100 ms or more (README, broker modes).
    c = Consumer(consumer_config(settings, group, **{"fetch.wait.max.ms": 100}))
    c.subscribe([TOPIC])
    return c


def _read(c: Consumer, want: int, timeout: float = 60.0) -> list[bytes]:
    got: list[bytes] = []
    deadline = time.monotonic() + timeout
    while len(got) < want and time.monotonic() < deadline:
        for m in c.consume(500, 0.5):
            if m.error() is None:
                got.append(m.value())
    return got


def _drain(c: Consumer, quiet: float = 3.0) -> list[bytes]:
    got: list[bytes] = []
    deadline = time.monotonic() + quiet
    while time.monotonic() < deadline:
        got += [m.value() for m in c.consume(500, 0.5) if m.error() is None]
    return got


def _produce(settings: KafkaSettings) -> list[bytes]:
    values = [f"m{i:05d}".encode() for i in range(MESSAGES)]
    p = make_producer(settings)
    for i, v in enumerate(values):
        p.produce(TOPIC, key=str(i % 8).encode(), value=v)
    assert p.flush(30) == 0
    p.close()
    return values


def _commit_half(settings: KafkaSettings) -> tuple[list[bytes], dict[int, int]]:
    c = _consumer(settings, "g-resume")
    first = _read(c, MESSAGES // 2)
    c.commit(asynchronous=False)
    committed = {tp.partition: tp.offset for tp in c.committed([TopicPartition(TOPIC, p) for p in range(PARTITIONS)])}
    c.close()
    return first, committed


def _restart_sigterm(broker: EmbeddedBroker, s3: S3rver) -> None:
    broker.stop()
    broker.start()


def _restart_sigkill(broker: EmbeddedBroker, s3: S3rver) -> None:
    broker.kill()
    broker.start()


def _s3_sigkill(broker: EmbeddedBroker, s3: S3rver) -> None:
    s3.kill()
    time.sleep(1.0)
    s3.start()
    assert broker.running()


@pytest.mark.parametrize("disrupt", [_restart_sigterm, _restart_sigkill, _s3_sigkill],
                         ids=["broker-sigterm", "broker-sigkill", "s3-sigkill"])
def test_topics_messages_and_offsets_survive(
    durable_broker: EmbeddedBroker, s3rver: S3rver, disrupt: Callable[[EmbeddedBroker, S3rver], None]
) -> None:
    settings = _settings(durable_broker)
    create_topics(settings, [TOPIC], partitions=PARTITIONS)
    values = _produce(settings)
    first, committed = _commit_half(settings)
    assert sum(committed.values()) == len(first) >= MESSAGES // 2
    port = durable_broker.port

    disrupt(durable_broker, s3rver)

    assert durable_broker.port == port
    meta = AdminClient({"bootstrap.servers": durable_broker.bootstrap}).list_topics(timeout=10)
    assert len(meta.topics[TOPIC].partitions) == PARTITIONS
    resumed = _consumer(settings, "g-resume")
    rest = _drain(resumed, quiet=8.0)
    resumed.close()
    assert sorted(first + rest) == sorted(values)  # resumed exactly after the commit: nothing twice, nothing lost
    everything = _consumer(settings, "g-new")
    assert sorted(_drain(everything, quiet=8.0)) == sorted(values)
    everything.close()
    assert s3rver.objects() > 0


def test_memory_broker_keeps_nothing_across_a_restart(tmp_path) -> None:
    with EmbeddedBroker(stop_timeout=1.0) as broker:
        settings = _settings(broker)
        create_topics(settings, [TOPIC], partitions=PARTITIONS)
        broker.kill()
        broker.start()
        meta = AdminClient({"bootstrap.servers": broker.bootstrap}).list_topics(timeout=10)
        assert TOPIC not in meta.topics


def test_storage_urls_tansu_cannot_use_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    assert check_storage("s3://bucket") == "s3://bucket/"
    for url in ("postgres://db", "sqlite://x.db", "s3://", "/var/lib/tansu"):
        with pytest.raises(ValueError, match=r"memory://tansu/.*s3://BUCKET/"):
            check_storage(url)
    monkeypatch.setenv("EDDYLINE_BROKER_STORAGE", "s3://events")
    assert BrokerSettings().storage == "s3://events/"
