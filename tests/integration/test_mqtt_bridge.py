"""The MQTT bridge against a real Mosquitto and the real Kafka broker: shapes, DLQ, TLS, 3.1.1, SIGKILL."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest

from connectors.dlq import dlq_info
from connectors.kafka import KafkaSettings, read_topic
from connectors.mqtt import MqttBridge, MqttSettings
from connectors.mqtt.mosquitto import Mosquitto
from schemas import SENSOR_BATCH, AvroSerde
from tests.fixtures.mqtt import TLS_PASSWORD, TLS_USER

pytestmark = pytest.mark.integration
serde = AvroSerde()
T0 = 1_767_225_600_000


def publish(broker: Mosquitto, messages: list[tuple[str, bytes]], *, tls: Path | None = None,
            user: tuple[str, str] | None = None, rate: float = 0.0, qos: int = 1) -> None:
    """QoS 1, each confirmed by the broker (``rate`` messages per second; 0: as fast as the window allows)."""
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"pub-{uuid.uuid4().hex[:8]}",
                         protocol=mqtt.MQTTv5)
    client.max_inflight_messages_set(200)
    client.max_queued_messages_set(0)
    if tls:
        client.tls_set(ca_certs=str(tls))
    if user:
        client.username_pw_set(*user)
    client.connect("127.0.0.1", broker.port)
    client.loop_start()
    try:
        infos = []
        start = time.monotonic()
        for i, (topic, payload) in enumerate(messages):
            if rate:
                time.sleep(max(0.0, start + i / rate - time.monotonic()))
            infos.append(client.publish(topic, payload, qos=qos))
        for info in infos:
            info.wait_for_publish(30)
            assert info.is_published()
    finally:
        client.disconnect()
        client.loop_stop()


@contextmanager
def bridge_thread(settings: MqttSettings, kafka: KafkaSettings) -> Iterator[MqttBridge]:
    bridge = MqttBridge(settings, kafka)
    stop = threading.Event()
    thread = threading.Thread(target=bridge.run, args=(stop,), daemon=True)
    thread.start()
    try:
        assert bridge.subscribed.wait(20), "the bridge did not subscribe on Mosquitto"
        yield bridge
    finally:
        stop.set()
        thread.join(30)
        assert not thread.is_alive()


def batches(kafka: KafkaSettings, expected_readings: int, timeout: float = 60) -> list[dict]:
    deadline = time.monotonic() + timeout
    while True:
        records = [serde.decode(m.value(), SENSOR_BATCH) for m in read_topic(kafka, "sensor.readings", idle=1.0)]
        readings = sum(len(s["values"]) for r in records for s in r["series"])
        if readings >= expected_readings or time.monotonic() > deadline:
            return records
        time.sleep(0.5)


def readings_of(records: list[dict]) -> Counter:
    return Counter((r["device_id"], s["sensor"], t, v) for r in records for s in r["series"]
                   for t, v in zip(s["timestamps"], s["values"], strict=True))


def test_shapes_batches_and_dead_letters(mosquitto: Mosquitto, kafka_settings: KafkaSettings) -> None:
    root = f"t{uuid.uuid4().hex[:8]}"
    settings = MqttSettings(
        port=mosquitto.port, client_id=f"bridge-{root}", max_wait_ms=300,
        subscriptions=[
            {"topic": f"{root}/plant/+/+", "device": "topic:2", "sensor": "topic:3", "unit": "C"},
            {"topic": f"{root}/zigbee/#", "device": "payload:device", "fields": ["temperature", "humidity"]},
            {"topic": f"{root}/vib/+", "device": "topic:2", "sensor": "fixed:vibration", "interval_ms": 1},
        ],
    )
    devices, per_device = 20, 100  # 2,000 one-value messages, 10 per device per window
    messages = [(f"{root}/plant/dev{d}/temperature", json.dumps({"value": i + d / 100, "ts": T0 + 100 * i}).encode())
                for i in range(per_device) for d in range(devices)]
    messages.append((f"{root}/zigbee/kitchen", json.dumps({"device": "kitchen", "temperature": 20.5,
                                                           "humidity": 41, "ts": T0}).encode()))
    messages.append((f"{root}/vib/motor-1", json.dumps({"value": list(range(500)), "ts": T0}).encode()))
    bad = [(f"{root}/plant/dev0/temperature", b"{oops"), (f"{root}/plant/dev0/temperature", b'{"value": "hot"}'),
           (f"{root}/zigbee/x", b'{"temperature": 1}')]
    with bridge_thread(settings, kafka_settings) as bridge:
        publish(mosquitto, messages[:1000] + bad + messages[1000:])
        records = batches(kafka_settings, devices * per_device + 2 + 500)
        deadline = time.monotonic() + 20
        while bridge.stats.acked < len(messages) + len(bad) and time.monotonic() < deadline:
            time.sleep(0.2)
    got = readings_of(records)
    want = Counter(("dev%d" % d, "temperature", T0 + 100 * i, i + d / 100) for i in range(per_device)
                   for d in range(devices))
    want.update([("kitchen", "temperature", T0, 20.5), ("kitchen", "humidity", T0, 41.0)])
    want.update(("motor-1", "vibration", T0 + i, float(i)) for i in range(500))
    assert got == want  # everything once, nothing else
    plant = [r for r in records if r["device_id"].startswith("dev")]
    assert len(plant) < devices * per_device / 5  # batched: many readings per Kafka message
    for d in range(devices):
        ids = [r["event_id"] for r in plant if r["device_id"] == f"dev{d}"]
        assert len(set(ids)) == len(ids)
    assert {r["seq"] for r in plant} == {-1}  # no sequence numbers: the flow knows a re-sent batch by its id
    assert all(s["unit"] == "C" for r in plant for s in r["series"])
    assert bridge.stats.acked == len(messages) + len(bad)
    dead = read_topic(kafka_settings, "dlq.mqtt", expected=len(bad), timeout=20)
    infos = sorted((dlq_info(m.headers())["reason"], dlq_info(m.headers())["topic"], m.value()) for m in dead)
    assert infos == sorted([("not_json", bad[0][0], bad[0][1]), ("bad_value", bad[1][0], bad[1][1]),
                            ("no_field", bad[2][0], bad[2][1])])


def test_huge_messages_neither_stop_the_bridge_nor_get_lost(mosquitto: Mosquitto,
                                                             kafka_settings: KafkaSettings) -> None:
    """A message too large for one Kafka message, as a batch or as a dead letter, stopped the bridge at every start."""
    from connectors.dlq import MAX_PAYLOAD as DLQ_MAX_PAYLOAD

    root = f"h{uuid.uuid4().hex[:8]}"
    settings = MqttSettings(port=mosquitto.port, client_id=f"bridge-{root}", max_wait_ms=300,
                            subscriptions=[{"topic": f"{root}/+", "sensor": "fixed:v", "interval_ms": 1}])
    n = 150_000  # a few seconds of a vibration sensor: about 2.3 MB as one batch
    junk = b"x" * 2_000_000
    messages = [(f"{root}/big", json.dumps({"value": [i / 8 for i in range(n)], "ts": T0}).encode()),
                (f"{root}/junk", junk), (f"{root}/small", json.dumps({"value": 2.0, "ts": T0}).encode())]
    with bridge_thread(settings, kafka_settings) as bridge:
        publish(mosquitto, messages)
        deadline = time.monotonic() + 30
        while bridge.stats.acked < len(messages) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert bridge.stats.acked == len(messages)
    records = batches(kafka_settings, n + 1)
    want = Counter(("big", "v", T0 + i, i / 8) for i in range(n))
    want[("small", "v", T0, 2.0)] = 1
    assert readings_of(records) == want
    assert max(sum(len(s["values"]) for s in r["series"]) for r in records) == settings.max_readings
    [dead] = read_topic(kafka_settings, "dlq.mqtt", expected=1, timeout=20)
    info = dlq_info(dead.headers())
    assert (info["reason"], info["topic"], dead.value()) == ("not_json", f"{root}/junk", junk[:DLQ_MAX_PAYLOAD])
    assert f"{len(junk)} bytes are cut" in info["error"]


def test_a_broker_restart_loses_no_qos_0_reading_and_repeats_no_qos_1_one(
    tmp_path: Path, mosquitto: Mosquitto, kafka_settings: KafkaSettings  # mosquitto: skips where it is not installed
) -> None:
    """Open windows start over on a new connection, as the broker sends unacknowledged messages again; QoS 0 messages
    (what many fleets publish) it never sends again, and their readings were dropped without a word."""
    root = f"q{uuid.uuid4().hex[:8]}"
    with Mosquitto(folder=tmp_path / "mosquitto") as broker:  # its own, to restart
        settings = MqttSettings(port=broker.port, client_id=f"bridge-{root}", max_wait_ms=5000, lateness_ms=10**9,
                                subscriptions=[{"topic": f"{root}/+/+"}])
        with bridge_thread(settings, kafka_settings) as bridge:
            for qos in (0, 1):
                publish(broker, [(f"{root}/qos{qos}/t", json.dumps({"value": float(i), "ts": T0 + i}).encode())
                                 for i in range(10)], qos=qos)
            deadline = time.monotonic() + 20
            while bridge.stats.received < 20 and time.monotonic() < deadline:
                time.sleep(0.05)
            assert bridge.stats.received == 20 and bridge.stats.batches == 0  # all in open windows
            broker.restart()
            deadline = time.monotonic() + 30
            while bridge.stats.acked < 10 and time.monotonic() < deadline:
                time.sleep(0.1)
            records = batches(kafka_settings, 20)
    assert readings_of(records) == Counter((f"qos{q}", "t", T0 + i, float(i)) for q in (0, 1) for i in range(10))
    assert bridge.stats.acked == 10  # the QoS 1 messages, received again on the new connection



class _FirstAcksLost(MqttBridge):
    """Its first acknowledgements never reach the broker, as when the broker restarts before it saved them."""

    lost = False

    def _ack(self, tokens: list) -> None:
        if not self.lost:
            self.lost = True
            return
        super()._ack(tokens)


def test_delivered_messages_a_restarted_broker_sends_again_count_once(
    tmp_path: Path, mosquitto: Mosquitto, kafka_settings: KafkaSettings  # mosquitto: skips where it is not installed
) -> None:
    """Sent again with new messages of their window, they went out in a batch of another event id: dedup by id
    downstream could not catch them, and their readings counted twice."""
    root = f"r{uuid.uuid4().hex[:8]}"

    def messages(first: int) -> list[tuple[str, bytes]]:
        return [(f"{root}/d/t", json.dumps({"value": float(i), "ts": T0 + i}).encode())
                for i in range(first, first + 5)]

    with Mosquitto(folder=tmp_path / "mosquitto") as broker:
        settings = MqttSettings(port=broker.port, client_id=f"bridge-{root}", max_wait_ms=3000, lateness_ms=10**9,
                                subscriptions=[{"topic": f"{root}/+/+"}])
        bridge = _FirstAcksLost(settings, kafka_settings)
        stop = threading.Event()
        thread = threading.Thread(target=bridge.run, args=(stop,), daemon=True)
        thread.start()
        try:
            assert bridge.subscribed.wait(20)
            publish(broker, messages(0))
            deadline = time.monotonic() + 30
            while not bridge.lost and time.monotonic() < deadline:
                time.sleep(0.05)
            assert bridge.lost and bridge.stats.acked == 0
            broker.restart()
            publish(broker, messages(5))  # the bridge is still away: these wait in its session with the lost five
            deadline = time.monotonic() + 30
            while bridge.stats.acked < 10 and time.monotonic() < deadline:
                time.sleep(0.1)
            records = batches(kafka_settings, 10)
        finally:
            stop.set()
            thread.join(30)
    unique = {r["event_id"]: r for r in records}
    assert readings_of(list(unique.values())) == Counter(("d", "t", T0 + i, float(i)) for i in range(10))
    assert bridge.stats.redelivered == 5 and bridge.stats.acked == 10


def test_mqtt_311_over_tls_with_a_password(mosquitto_tls: Mosquitto, tls_files: tuple[Path, Path, Path],
                                          kafka_settings: KafkaSettings) -> None:
    ca = tls_files[0]
    settings = MqttSettings(
        port=mosquitto_tls.port, host="localhost", protocol="3.1.1", client_id=f"b311-{uuid.uuid4().hex[:6]}",
        tls=True, ca_file=ca, username=TLS_USER, password=TLS_PASSWORD, max_wait_ms=200,
        subscriptions=[{"topic": "secure/+/+", "value": ""}],  # bare numbers, the receive time
    )
    with bridge_thread(settings, kafka_settings):
        publish(mosquitto_tls, [(f"secure/d{i % 3}/level", str(i).encode()) for i in range(30)], tls=ca,
                user=(TLS_USER, TLS_PASSWORD))
        records = batches(kafka_settings, 30)
    assert sorted(v for _, _, _, v in readings_of(records)) == [float(i) for i in range(30)]


BRIDGE = "from streams.cli import app; app()"


def wait_for_line(log: Path, text: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while text not in (log.read_text() if log.exists() else ""):
        assert time.monotonic() < deadline, f"{text!r} not in {log}: {log.read_text()[-2000:]}"
        time.sleep(0.1)


def _start_bridge(config: Path, kafka: KafkaSettings, log: Path) -> subprocess.Popen:
    env = {**os.environ, "EDDYLINE_KAFKA_BOOTSTRAP_SERVERS": kafka.bootstrap_servers,
           "EDDYLINE_KAFKA_NAMESPACE": kafka.namespace}
    return subprocess.Popen([sys.executable, "-c", BRIDGE, "bridge", "mqtt", "--config", str(config)], env=env,
                            stdout=log.open("ab"), stderr=subprocess.STDOUT, start_new_session=True)


def test_sigkill_mid_stream_loses_nothing(mosquitto: Mosquitto, kafka_settings: KafkaSettings,
                                          tmp_path: Path) -> None:
    root = f"k{uuid.uuid4().hex[:8]}"
    config = tmp_path / "bridge.toml"
    config.write_text(
        f'[mqtt]\nport = {mosquitto.port}\nclient_id = "bridge-{root}"\nprotocol = "5"\nmax_wait_ms = 500\n'
        f'[[mqtt.subscriptions]]\ntopic = "{root}/+/+"\ndevice = "topic:1"\nsensor = "topic:2"\n'
    )
    log = tmp_path / "bridge.log"
    devices, per_device = 10, 300
    messages = [(f"{root}/dev{d}/t", json.dumps({"value": float(i), "ts": T0 + 50 * i}).encode())
                for i in range(per_device) for d in range(devices)]
    proc = _start_bridge(config, kafka_settings, log)
    publisher = threading.Thread(target=publish, args=(mosquitto, messages), kwargs={"rate": 1000}, daemon=True)
    try:
        wait_for_line(log, "subscribed")  # from now on the session keeps messages for the bridge
        publisher.start()
        deadline = time.monotonic() + 60
        while len(read_topic(kafka_settings, "sensor.readings", idle=0.3)) < 20 and time.monotonic() < deadline:
            time.sleep(0.2)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)
        before = len(read_topic(kafka_settings, "sensor.readings", idle=0.5))
        assert 0 < before, log.read_text()
        time.sleep(0.5)
        proc = _start_bridge(config, kafka_settings, log)
        publisher.join(60)
        records = batches(kafka_settings, devices * per_device, timeout=90)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    got = readings_of(records)
    want = Counter((f"dev{d}", "t", T0 + 50 * i, float(i)) for i in range(per_device) for d in range(devices))
    assert set(got) == set(want), log.read_text()[-3000:]  # nothing lost, nothing invented
    by_id: dict[str, dict] = {}
    for r in records:  # a batch sent again carries the same id, seq and readings
        first = by_id.setdefault(r["event_id"], r)
        assert (first["seq"], first["series"]) == (r["seq"], r["series"])
    assert readings_of(list(by_id.values())) == want, "duplicates that are not the same batch again"


class _Crash(Exception):
    pass


class _CrashBeforeAck(MqttBridge):
    """Dies after Kafka confirmed its first batches and before it acknowledges them: the worst moment."""

    def _ack(self, tokens: list) -> None:
        raise _Crash


def test_a_crash_between_delivery_and_ack_sends_the_same_batches_again(
    mosquitto: Mosquitto, kafka_settings: KafkaSettings
) -> None:
    root = f"c{uuid.uuid4().hex[:8]}"
    settings = MqttSettings(port=mosquitto.port, client_id=f"bridge-{root}", window_ms=1000, lateness_ms=0,
                            max_wait_ms=3_000, subscriptions=[{"topic": f"{root}/+/+"}])
    messages = [(f"{root}/dev{d}/t", json.dumps({"value": float(i), "ts": T0 + 100 * i}).encode())
                for i in range(100) for d in range(5)]
    crashing = _CrashBeforeAck(settings, kafka_settings)
    stop = threading.Event()
    errors: list[BaseException] = []

    def run() -> None:
        try:
            crashing.run(stop)
        except _Crash as exc:
            errors.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    assert crashing.subscribed.wait(20)
    publish(mosquitto, messages)
    thread.join(30)
    assert errors, "the bridge never reached an acknowledgement"
    delivered_before = [serde.decode(m.value(), SENSOR_BATCH) for m in read_topic(kafka_settings, "sensor.readings")]
    assert delivered_before
    with bridge_thread(settings, kafka_settings) as bridge:
        records = batches(kafka_settings, 500 + sum(len(s["values"]) for r in delivered_before for s in r["series"]))
        stop.set()
    assert bridge.stats.acked >= 1
    ids = Counter(r["event_id"] for r in records)
    assert {r["event_id"] for r in delivered_before} <= {i for i, n in ids.items() if n == 2}  # each came again
    unique = {r["event_id"]: r for r in records}
    assert readings_of(list(unique.values())) == Counter(
        (f"dev{d}", "t", T0 + 100 * i, float(i)) for i in range(100) for d in range(5))


def test_bad_configuration_and_credentials_say_what_to_fix(mosquitto_tls: Mosquitto, tls_files: tuple[Path, Path, Path],
                                  kafka_settings: KafkaSettings, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from streams.cli import app

    env = {"EDDYLINE_KAFKA_BOOTSTRAP_SERVERS": kafka_settings.bootstrap_servers,
           "EDDYLINE_KAFKA_NAMESPACE": kafka_settings.namespace}
    runner = CliRunner()
    missing = runner.invoke(app, ["bridge", "mqtt", "--config", str(tmp_path / "nope.toml")], env=env)
    assert missing.exit_code == 2 and "does not exist" in missing.output
    empty = tmp_path / "empty.toml"
    empty.write_text("[mqtt]\nport = 1883\n")
    result = runner.invoke(app, ["bridge", "mqtt", "--config", str(empty)], env=env)
    assert result.exit_code == 2 and "no subscriptions" in result.output
    settings = MqttSettings(host="localhost", port=mosquitto_tls.port, tls=True, ca_file=tls_files[0],
                            username=TLS_USER, password="not-the-password", subscriptions=[{"topic": "a/+/+"}])
    bridge = MqttBridge(settings, kafka_settings)
    with pytest.raises(ConnectionError, match="refused the connection.*username/password"):
        bridge.run(threading.Event(), first_connect_s=3)
