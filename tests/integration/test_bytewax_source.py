"""The micro-batching Kafka source (``LingerKafkaSource``) in real Bytewax dataflows over the real broker: every
message comes out once and in order per partition, and messages held when an epoch closes are read again after a
crash, never skipped."""

from __future__ import annotations

import json
import os
import threading
import time
from datetime import timedelta
from pathlib import Path

import bytewax.operators as op
import pytest
from bytewax.dataflow import Dataflow
from bytewax.recovery import RecoveryConfig, init_db_dir
from bytewax.testing import TestingSink, run_main

from connectors.kafka import KafkaSettings, create_topics, make_producer
from streams.engines.bytewax import CONSUMER_DEFAULTS, QUEUED_KBYTES, source_config
from streams.engines.bytewax_source import LingerKafkaSource

pytestmark = pytest.mark.integration
TOPIC = "linger.in"
EPOCH = timedelta(milliseconds=50)


def produce(settings: KafkaSettings, values: list[tuple[str, str]], partition: int = -1) -> None:
    producer = make_producer(settings)
    for key, value in values:
        producer.produce(settings.topic(TOPIC), value.encode(), key.encode(), partition=partition)
    assert producer.flush(30) == 0


def flow(settings: KafkaSettings, out: list, *, tail: bool, batch_size: int, linger: timedelta,
         crash_at: int | None = None) -> Dataflow:
    """Source -> (a crash at the first message at or after offset ``crash_at``) -> (partition, offset, value)."""
    df = Dataflow("linger")
    source = LingerKafkaSource(source_config(settings), [settings.topic(TOPIC)], batch_size=batch_size,
                               linger=linger, tail=tail, consumer_defaults=CONSUMER_DEFAULTS)

    def check(msg):
        if crash_at is not None and msg.offset >= crash_at:
            raise RuntimeError("crash")
        return msg.partition, msg.offset, msg.value.decode()

    op.output("out", op.map("check", op.input("in", df, source), check), TestingSink(out))
    return df


def test_every_message_comes_out_once_and_in_order_per_partition(kafka_settings: KafkaSettings) -> None:
    create_topics(kafka_settings, [TOPIC], partitions=3)
    sent = [(f"dev-{i % 11}", f"m{i}") for i in range(200)]
    produce(kafka_settings, sent)
    out: list = []
    run_main(flow(kafka_settings, out, tail=False, batch_size=7, linger=timedelta(milliseconds=30)))
    assert sorted(v for _, _, v in out) == sorted(v for _, v in sent)
    for partition in {p for p, _, _ in out}:
        offsets = [o for p, o, _ in out if p == partition]
        assert offsets == list(range(len(offsets)))


def test_messages_held_when_an_epoch_closes_are_read_again_after_a_crash(kafka_settings: KafkaSettings,
                                                                          tmp_path: Path) -> None:
    """Run 1 emits five messages, then holds five more for a second while epochs close, and crashes as it emits
    them; run 2 resumes from run 1's last checkpoint and must read those five again. The messages go to partition
    0; the empty partition 1 keeps the input awake, so epochs close (and snapshot partition 0) while it holds."""
    create_topics(kafka_settings, [TOPIC], partitions=2)
    init_db_dir(tmp_path, 1)
    recovery = RecoveryConfig(tmp_path)
    produce(kafka_settings, [("k", f"a{i}") for i in range(5)], partition=0)
    first: list = []

    def second_round() -> None:
        deadline = time.monotonic() + 60
        while len(first) < 5 and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(10 * EPOCH.total_seconds())  # the first round's offsets are checkpointed
        produce(kafka_settings, [("k", f"b{i}") for i in range(5)], partition=0)

    producer = threading.Thread(target=second_round, daemon=True)
    producer.start()
    linger = timedelta(seconds=1)  # twenty epochs close while the second round is held
    with pytest.raises(RuntimeError, match="linger.check"):  # the crash, as Bytewax reports it
        run_main(flow(kafka_settings, first, tail=True, batch_size=100, linger=linger, crash_at=5),
                 epoch_interval=EPOCH, recovery_config=recovery)
    producer.join()
    assert [v for _, _, v in first] == [f"a{i}" for i in range(5)]
    again: list = []
    run_main(flow(kafka_settings, again, tail=False, batch_size=100, linger=linger),
             epoch_interval=EPOCH, recovery_config=recovery)
    assert [v for _, _, v in again][-5:] == [f"b{i}" for i in range(5)]
    assert [o for _, o, _ in again] == list(range(10 - len(again), 10))


def test_a_partition_prefetches_a_bounded_amount_however_long_the_backlog(kafka_settings: KafkaSettings) -> None:
    """A flow catching up on a backlog holds what it reads next, not the backlog: a partition's consumer queues at most
    about ``QUEUED_KBYTES`` ahead of what it has handed on. With librdkafka's own bound, 64 MB a partition, a flow at
    1,000 devices over a long pre-filled topic held about 500 MB more than over a short one (BENCHMARKS.md)."""
    create_topics(kafka_settings, [TOPIC], partitions=1)
    noise = os.urandom(130_000).hex()  # hardly compressible: the bound counts messages as the consumer holds them
    produce(kafka_settings, [("k", noise[i % 100 * 2_600:][:2_600]) for i in range(12_000)], partition=0)  # 31 MB
    queued: list[int] = []

    def stats(raw: str) -> None:
        partition = json.loads(raw)["topics"].get(kafka_settings.topic(TOPIC), {}).get("partitions", {}).get("0")
        if partition is not None:
            queued.append(partition["fetchq_size"])

    config = {**source_config(kafka_settings), "statistics.interval.ms": 100, "stats_cb": stats}
    source = LingerKafkaSource(config, [kafka_settings.topic(TOPIC)], batch_size=10, linger=timedelta(0),
                               consumer_defaults=CONSUMER_DEFAULTS)
    part = source.build_part("in", f"0-{kafka_settings.topic(TOPIC)}", None)
    try:
        taken = 0
        deadline = time.monotonic() + 30
        while taken < 10 and time.monotonic() < deadline:
            taken += len(part.next_batch())
        assert taken == 10
        queued.clear()
        while len(queued) < 20 and time.monotonic() < deadline:  # two seconds of a flow busy scoring
            part.consumer.poll(0)  # takes one message, and serves the statistics callback
            time.sleep(0.1)
    finally:
        part.close()
    assert len(queued) >= 20, "no consumer statistics within 30 s"
    assert max(queued) > 1024 * QUEUED_KBYTES // 2  # it did fetch ahead: the bound, not a slow broker, held it
    assert max(queued) <= 1024 * QUEUED_KBYTES + (4 << 20)  # and at most a few fetches past the bound


def test_consumer_settings_in_kafka_extra_reach_the_consumers_and_no_confwarn_from_the_partition_listing(
        kafka_settings: KafkaSettings, capfd: pytest.CaptureFixture[str]) -> None:
    """``[kafka] extra``'s fetch tuning is for the partitions' consumers; the admin client that lists the partitions
    would log a librdkafka CONFWARN line for each such key ("a consumer property and will be ignored")."""
    create_topics(kafka_settings, [TOPIC], partitions=2)
    tuned = kafka_settings.model_copy(update={"extra": {"fetch.min.bytes": "1", "isolation.level": "read_committed"}})
    source = LingerKafkaSource(source_config(tuned), [tuned.topic(TOPIC)], batch_size=10, linger=timedelta(0),
                               consumer_defaults=CONSUMER_DEFAULTS)
    capfd.readouterr()
    assert source.list_parts() == [f"0-{tuned.topic(TOPIC)}", f"1-{tuned.topic(TOPIC)}"]
    part = source.build_part("in", f"0-{tuned.topic(TOPIC)}", None)
    part.close()
    said = capfd.readouterr().err
    assert "CONFWARN" not in said, said
    config = source.consumer_config()
    assert config["fetch.min.bytes"] == "1" and config["isolation.level"] == "read_committed"
