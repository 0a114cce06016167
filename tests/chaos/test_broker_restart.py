"""The durable broker keeps every acknowledged record across a restart under write load.

It does not, here: Tansu 0.6's S3 engine (against s3rver) gives out offsets it had already given after a
restart, SIGTERM or SIGKILL, so new batches overwrite or hide acknowledged records (found by the chaos suite).
No client can undo that, so the chaos suite in ``make test`` leaves broker restarts out, and this test says
whether the broker still does it: it is expected to fail, and fails the suite once the broker is fixed.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest

from benchmarks.chaos import overlapping_batches
from connectors.broker import EmbeddedBroker
from connectors.kafka import KafkaSettings, create_topics, make_producer, read_to_end
from connectors.testing.s3rver import S3rver

pytestmark = [pytest.mark.integration, pytest.mark.chaos]


@pytest.mark.xfail(strict=True, raises=AssertionError, reason="Tansu 0.6 on S3 reuses offsets after a restart: acknowledged records are lost")
def test_a_restart_under_write_load_keeps_every_acknowledged_record(tmp_path: Path) -> None:
    with S3rver(tmp_path / "s3") as s3:
        broker = EmbeddedBroker(storage=f"s3://{s3.bucket}/", env={**os.environ, **s3.env()},
                                log_path=tmp_path / "tansu.log")
        with broker:
            kafka = KafkaSettings(bootstrap_servers=broker.bootstrap, namespace="restart.", linger_ms=100,
                                  extra={"fetch.wait.max.ms": 100, "enable.idempotence": False,
                                         "max.in.flight.requests.per.connection": 1})
            create_topics(kafka, ["records"], timeout=60)
            acked: set[bytes] = set()
            stop = threading.Event()

            def write() -> None:
                producer = make_producer(kafka, **{"message.timeout.ms": 120_000})
                i = 0
                while not stop.is_set():
                    producer.produce(kafka.topic("records"), value=f"record-{i}".encode(), key=str(i % 7),
                                     on_delivery=lambda err, msg: err is None and acked.add(msg.value()))
                    producer.poll(0)
                    i += 1
                    time.sleep(0.02)
                producer.flush(120)

            writer = threading.Thread(target=write)
            writer.start()
            time.sleep(10)
            broker.stop()  # a clean restart: SIGTERM
            broker.start()
            time.sleep(10)
            stop.set()
            writer.join(180)
            messages, pending = read_to_end(kafka, "records", {}, timeout=120)
            assert not pending
            found = {m.value() for m in messages}
            assert acked and acked <= found, (
                f"{len(acked - found)} of {len(acked)} acknowledged records are gone; "
                f"{overlapping_batches(s3)} batches stored on offsets already given out")
