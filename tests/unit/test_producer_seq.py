"""The Python producer numbers each device's batches one by one, so the sensor flow scores them on arrival."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest

import connectors.producer as producer_module
from connectors.broker import free_port
from connectors.kafka import KafkaSettings
from connectors.producer import SEQ_FORGET_S, Producer
from schemas.catalog import MAX_BATCH_READINGS
from streams.flows.sensor_anomaly import SensorAnomalyProcessor
from streams.processor import Event
from streams.sequence import RESET_JUMP


class _Capture:
    """Stands in for the Kafka client: keeps what was produced."""

    def __init__(self) -> None:
        self.records: list[dict] = []

    def produce(self, topic: str, schema: str, record: dict, key: str | None = None) -> None:
        self.records.append(record)

    def poll(self, *_a: object) -> int:
        return 0

    def flush(self, *_a: object, **_k: object) -> int:
        return 0

    def close(self, *_a: object) -> None:
        pass


@pytest.fixture
def make_producer() -> Iterator:
    made: list[Producer] = []

    def make() -> Producer:
        settings = KafkaSettings(bootstrap_servers=f"127.0.0.1:{free_port()}", extra={"log_level": "0"})  # nobody
        p = Producer("svc", settings, create_topics=False, max_readings=10, linger_s=3600)
        p._producer = _Capture()
        made.append(p)
        return p

    yield make
    for p in made:
        p.close()


def _send(p: Producer, device: str, batches: int, t0: int) -> list[Event]:
    for b in range(batches):
        p.send_readings(device, "temperature", [t0 + 1000 * (10 * b + i) for i in range(10)],
                        [20.0 + 0.1 * i for i in range(10)])
    return [Event("sensor.readings", r["device_id"], r) for r in p._producer.records if r["device_id"] == device]


def test_each_device_is_numbered_densely_and_scored_on_arrival(make_producer, monkeypatch) -> None:
    monkeypatch.setattr(producer_module, "_now_ms", lambda: 1_700_000_000_000)
    p = make_producer()
    t0 = 1_700_000_000_000
    press7 = _send(p, "press-7", 12, t0)
    press8 = _send(p, "press-8", 3, t0)
    assert [e.record["seq"] for e in press7] == [press7[0].record["seq"] + i for i in range(12)]
    assert [e.record["seq"] for e in press8] == [press7[0].record["seq"] + i for i in range(3)]
    proc = SensorAnomalyProcessor("press-7")
    assert [sum(x.topic == "scores.anomaly" for x in proc.process([e])) for e in press7] == [1] * 12
    assert proc.sequence.counts.gaps == 0

    monkeypatch.setattr(producer_module, "_now_ms", lambda: 1_700_000_000_001)  # the service restarted 1 ms later
    again = _send(make_producer(), "press-7", 3, t0 + 120_000)
    assert again[0].record["seq"] - press7[-1].record["seq"] > RESET_JUMP
    assert len({e.record["event_id"] for e in press7 + again}) == 15
    assert [sum(x.topic == "scores.anomaly" for x in proc.process([e])) for e in again] == [1] * 3
    assert proc.sequence.counts.gaps == 0 and proc.sequence.counts.resets == 1


def test_devices_silent_for_a_day_are_forgotten_and_number_from_the_time_again(make_producer, monkeypatch) -> None:
    """Every device ever seen kept its next number: over months of churning device ids the service only grew."""
    clock, ms = [1000.0], [1_700_000_000_000]
    monkeypatch.setattr(producer_module, "time", SimpleNamespace(monotonic=lambda: clock[0], sleep=time.sleep))
    monkeypatch.setattr(producer_module, "_now_ms", lambda: ms[0])
    p = make_producer()
    t0 = 1_700_000_000_000
    before = _send(p, "press-7", 3, t0)
    for i in range(1000):
        _send(p, f"churn-{i}", 1, t0)
    clock[0] += SEQ_FORGET_S + 1
    ms[0] += int(SEQ_FORGET_S + 1) * 1000
    _send(p, "press-8", 1, t0 + 10**8)
    assert list(p._next_seq) == ["press-8"]
    back = _send(p, "press-7", 2, t0 + 10**8)[3:]
    proc = SensorAnomalyProcessor("press-7")
    assert [sum(x.topic == "scores.anomaly" for x in proc.process([e])) for e in before + back] == [1] * 5
    assert proc.sequence.counts.gaps == 0 and proc.sequence.counts.duplicates == 0
    assert proc.sequence.counts.resets == 1


def _client_threads() -> int:
    """librdkafka's threads in this process (``rdk:main``, ``rdk:broker...``)."""
    names = []
    for task in os.listdir("/proc/self/task"):
        try:
            names.append(Path(f"/proc/self/task/{task}/comm").read_text())
        except OSError:  # ended meanwhile
            pass
    return sum(name.startswith("rdk:") for name in names)


def test_close_releases_the_client_and_a_closed_producer_refuses_politely() -> None:
    """A closed producer kept its librdkafka client: threads and sockets piled up in a service making one per job."""
    settings = KafkaSettings(bootstrap_servers=f"127.0.0.1:{free_port()}", extra={"log_level": "0"})  # nobody
    before = _client_threads()
    producers = [Producer("svc", settings, create_topics=False, linger_s=3600) for _ in range(3)]
    assert _client_threads() > before
    for p in producers:
        p.close()
    assert _client_threads() <= before
    p.close()
    p.flush()  # close sent everything
    with pytest.raises(RuntimeError, match="create a new one"):
        p.send_reading("press-7", "temperature", 20.0)


def test_max_readings_is_bounded_by_what_one_kafka_message_holds() -> None:
    settings = KafkaSettings(bootstrap_servers=f"127.0.0.1:{free_port()}", extra={"log_level": "0"})
    with pytest.raises(ValueError, match="fit one Kafka message"):
        Producer("svc", settings, create_topics=False, max_readings=MAX_BATCH_READINGS + 1)
