"""The MQTT bridge's mapping and batching, without a broker: payload shapes, reasons, deterministic batches."""

from __future__ import annotations

import json

import pytest

from connectors.mqtt import MappingError, MqttSettings, Subscription
from connectors.mqtt.batches import PARTS, DeviceWindows


def test_one_value_per_topic_level() -> None:
    sub = Subscription(topic="plant/+/+")
    [r] = sub.map("plant/press-7/temperature", b'{"value": 21.5, "ts": 1767225600123}', 5)
    assert (r.device_id, r.sensor, r.timestamps, r.values) == ("press-7", "temperature", [1767225600123], [21.5])


def test_bare_number_gets_the_receive_time() -> None:
    sub = Subscription(topic="plant/+/+", value="")
    [r] = sub.map("plant/p/t", b"21", 1000)
    assert (r.timestamps, r.values) == ([1000], [21.0])


def test_arrays_with_times_or_an_interval() -> None:
    sub = Subscription(topic="s/+", sensor="fixed:vibration", interval_ms=10, time_unit="s")
    [r] = sub.map("s/d1", b'{"value": [1, 2, 3], "ts": 1700000000}', 0)
    assert r.timestamps == [1700000000000, 1700000000010, 1700000000020]
    [r] = sub.map("s/d1", b'{"value": [1, 2], "ts": [1.0, 1.5]}', 0)
    assert r.timestamps == [1000, 1500]


def test_several_sensors_and_device_from_the_payload() -> None:
    sub = Subscription(topic="zigbee/#", device="payload:device", fields=["temperature", "humidity"], unit="si")
    out = sub.map("zigbee/x", b'{"device": "kitchen", "temperature": 20.5, "humidity": 41, "ts": 7}', 0)
    assert [(r.device_id, r.sensor, r.values, r.unit) for r in out] == [
        ("kitchen", "temperature", [20.5], "si"), ("kitchen", "humidity", [41.0], "si")]


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"not json", "not_json"),
        (b'{"ts": 1}', "no_value"),
        (b'{"value": "warm"}', "bad_value"),
        (b'{"value": [1, 2], "ts": [1]}', "length_mismatch"),
        (b'{"value": [1, 2]}', "no_times"),
        (b'{"value": 1, "ts": -5}', "bad_time"),
        (b'{"value": NaN}', "not_json"),
        (b'{"value": []}', "no_value"),
    ],
)
def test_payloads_that_do_not_map_say_why(payload: bytes, reason: str) -> None:
    with pytest.raises(MappingError) as info:
        Subscription(topic="plant/+/+").map("plant/d/s", payload, 0)
    assert info.value.reason == reason
    assert str(info.value)


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b'{"device": "\\ud800", "s": "t", "value": 1}', "bad_device"),  # JSON allows it, UTF-8 does not
        (b'{"device": "d", "s": "t\\udfff", "value": 1}', "bad_sensor"),
        (b'{"device": "' + b"d" * 257 + b'", "s": "t", "value": 1}', "bad_device"),
    ],
)
def test_a_name_kafka_cannot_carry_does_not_map(payload: bytes, reason: str) -> None:
    """Such a device id or sensor name failed when the batch was produced: the bridge died on every restart."""
    with pytest.raises(MappingError) as info:
        Subscription(topic="z/#", device="payload:device", sensor="payload:s").map("z/x", payload, 0)
    assert info.value.reason == reason


def test_topic_filters() -> None:
    assert Subscription(topic="a/+/c").matches("a/b/c")
    assert not Subscription(topic="a/+/c").matches("a/b/c/d")
    assert Subscription(topic="a/#", device="payload:d").matches("a/b/c/d")
    with pytest.raises(ValueError, match="topic filter"):
        Subscription(topic="a/#/c")
    with pytest.raises(MappingError, match="levels"):
        Subscription(topic="#", device="topic:3").map("a/b", b"1", 0)


def test_settings_say_what_is_missing(tmp_path) -> None:  # noqa: ANN001
    with pytest.raises(ValueError, match="no subscriptions"):
        MqttSettings()
    with pytest.raises(ValueError, match="does not exist"):
        MqttSettings(subscriptions=[{"topic": "a/+/+"}], tls=True, ca_file=tmp_path / "missing.pem")
    with pytest.raises(ValueError, match="topic:N"):
        MqttSettings(subscriptions=[{"topic": "a/+/+", "device": "level1"}])


def test_a_message_with_more_than_max_readings_goes_out_in_parts() -> None:
    """One message of 150,000 samples made one batch Kafka refused as too large, and the bridge stopped on it."""
    w = DeviceWindows("p", window_ms=1000, lateness_ms=0, max_wait_ms=100, max_readings=10)
    sub = Subscription(topic="s/+", sensor="fixed:v", interval_ms=1)
    small = w.add(sub.map("s/d", b'{"value": [1, 2, 3], "ts": 5000}', 0), "small", 0.0)
    parts = small + w.add(sub.map("s/d", json.dumps({"value": list(range(25)), "ts": 5003}).encode(), 0), "big", 0.0)
    parts += w.ready(1.0)
    assert [len(b.record["series"][0]["values"]) for b in parts] == [10, 10, 8]
    assert [b.tokens for b in parts] == [["small"], [], ["big"]]  # acknowledged once the last part is delivered
    assert [b.slot for b in parts] == [5 * PARTS, 5 * PARTS + 1, 5 * PARTS + 2]
    assert [t for b in parts for t in b.record["series"][0]["timestamps"]] == [5000, 5001, 5002, *range(5003, 5028)]


def test_ready_looks_only_at_devices_with_open_windows(monkeypatch: pytest.MonkeyPatch) -> None:
    """``ready`` runs at every 50 ms step; walking each device heard from in five minutes took 130 ms at 50,000."""
    from connectors.mqtt.batches import IDLE_EVICT_S
    from connectors.mqtt.mapping import Readings

    w = DeviceWindows("p", max_wait_ms=100)
    for i, device in enumerate([f"d{i}" for i in range(1000)] + ["busy"]):
        w.add([Readings(device, "t", None, [1767225600000], [1.0])], i, 0.5 if device == "busy" else 0.0)
    assert len(w.ready(0.2)) == 1000
    visited: list[str] = []
    due = w._due
    monkeypatch.setattr(w, "_due", lambda device_id, *args: visited.append(device_id) or due(device_id, *args))
    assert w.ready(0.3) == [] and visited == ["busy"]
    assert [b.device_id for b in w.ready(0.2 + IDLE_EVICT_S)] == ["busy"]
    assert list(w.devices) == ["busy"]  # the others were idle for IDLE_EVICT_S: forgotten


def test_overlapping_filters_are_refused() -> None:
    """Mosquitto delivers a message once per matching filter: plant/+/t and plant/# counted each reading twice."""
    with pytest.raises(ValueError, match="'plant/\\+/t' and 'plant/#' overlap"):
        MqttSettings(subscriptions=[{"topic": "plant/+/t"}, {"topic": "plant/#", "device": "topic:1"}])
    with pytest.raises(ValueError, match="overlap"):
        MqttSettings(subscriptions=[{"topic": "a/b/#"}, {"topic": "a/b", "device": "topic:0", "sensor": "topic:1"}])
    MqttSettings(subscriptions=[{"topic": "plant/+/+"}, {"topic": "zigbee/#"}, {"topic": "a/b/#"}, {"topic": "a/c"}])


def _feed(windows: DeviceWindows, messages: list[tuple[int, float]], start: float = 0.0) -> list:
    sub = Subscription(topic="p/+/+")
    out = []
    for i, (ts, v) in enumerate(messages):
        readings = sub.map("p/dev/temp", json.dumps({"value": v, "ts": ts}).encode(), 0)
        out += windows.add(readings, i, start)
    return out


def test_windows_close_on_lateness_and_replays_rebuild_the_same_batches() -> None:
    messages = [(1_000_000 + 100 * i, float(i)) for i in range(50)]  # 5 s of readings, 10 per window
    first = _feed(DeviceWindows("p", window_ms=1000, lateness_ms=500), messages)
    first += DeviceWindows.ready(first_windows := DeviceWindows("p"), 0.0)  # nothing open in a fresh one
    assert not first_windows.devices
    assert [b.slot for b in first] == [k * PARTS for k in range(1000, 1004)]
    assert {b.record["seq"] for b in first} == {-1}  # slots are no sequence: windows without readings are no gaps  # the last window waits for lateness or max_wait
    assert all(len(b.record["series"][0]["values"]) == 10 for b in first)
    replay = _feed(DeviceWindows("p", window_ms=1000, lateness_ms=500), messages[:30])
    assert [b.record for b in replay] == [b.record for b in first[: len(replay)]]


def test_max_wait_max_readings_and_stragglers() -> None:
    w = DeviceWindows("p", window_ms=1000, lateness_ms=0, max_wait_ms=100, max_readings=4)
    parts = _feed(w, [(5000 + i, 1.0) for i in range(6)])
    assert [b.slot for b in parts] == [5 * PARTS]
    assert w.ready(0.05) == []
    [rest] = w.ready(0.2)
    assert rest.slot == 5 * PARTS + 1 and rest.tokens == [4, 5]
    [late] = _feed(w, [(5500, 2.0)]) + w.ready(10.0)
    assert late.slot == 5 * PARTS + 2
    assert len({parts[0].record["event_id"], rest.record["event_id"], late.record["event_id"]}) == 3


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b'{"value": 1' + b"0" * 400 + b"}", "bad_value"),  # an integer beyond a double
        (b'{"value": [1.5, 1' + b"0" * 400 + b'], "ts": [1, 2]}', "bad_value"),
        (b'{"value": 1, "ts": 9223372036854775808}', "bad_time"),  # 2**63: not an Avro long
        (b'{"value": 1, "ts": 1' + b"0" * 400 + b"}", "bad_time"),
        (b'{"value": [1, 2], "ts": [1, 9223372036854775808]}', "bad_time"),
        (b'{"value": 1, "ts": 1767225600000000}', "bad_time"),  # microseconds, not ms
    ],
)
def test_numbers_and_times_out_of_range_do_not_map(payload: bytes, reason: str) -> None:
    with pytest.raises(MappingError) as info:
        Subscription(topic="plant/+/+").map("plant/d/s", payload, 0)
    assert info.value.reason == reason


def test_an_interval_that_runs_past_the_year_9999_does_not_map() -> None:
    sub = Subscription(topic="s/+", sensor="fixed:v", interval_ms=10**12)
    with pytest.raises(MappingError, match="9999") as info:
        sub.map("s/d", b'{"value": [1, 2, 3], "ts": 253402300000000}', 0)
    assert info.value.reason == "bad_time"


class _Producer:
    def __init__(self) -> None:
        self.sent: list[dict] = []

    def produce(self, topic: str, event_type: str, record: dict, key: str, **_: object) -> None:
        from schemas import AvroSerde

        AvroSerde().encode(event_type, record, topic="t")  # what EventProducer.produce does first
        self.sent.append(record)

    def flush(self, timeout: float | None = None) -> int:
        return 0


class _Dead:
    def __init__(self) -> None:
        self.letters: list[tuple] = []

    def send(self, *args: object, **_: object) -> None:
        self.letters.append(args)


def test_the_bridge_dead_letters_a_message_whose_mapping_fails_unexpectedly(monkeypatch: pytest.MonkeyPatch) -> None:
    from types import SimpleNamespace

    from connectors.kafka import KafkaSettings
    from connectors.mqtt.bridge import MqttBridge

    bridge = MqttBridge(MqttSettings(subscriptions=[{"topic": "plant/+/+"}]), KafkaSettings(bootstrap_servers="x:1"))
    mapping = bridge._map

    def broken(msg: SimpleNamespace) -> list:
        if msg.topic.endswith("/bad"):
            raise RuntimeError("a bug nobody foresaw")
        return mapping(msg)

    monkeypatch.setattr(bridge, "_map", broken)
    acked: list[int] = []
    monkeypatch.setattr(bridge._client, "ack", lambda mid, qos: acked.append(mid))
    for mid, topic in ((1, "plant/p7/temp"), (2, "plant/p7/bad"), (3, "plant/p8/temp")):
        bridge._inbox.put((0, SimpleNamespace(topic=topic, payload=b'{"value": 20.0, "ts": 1767225600000}', mid=mid,
                                              qos=1, dup=False)))
    producer, dead = _Producer(), _Dead()
    bridge._step(producer, dead, 0.0, force=True)  # type: ignore[arg-type]
    [letter] = dead.letters
    assert letter[1:4] == (b'{"value": 20.0, "ts": 1767225600000}', "plant/p7/bad", "unexpected_error")
    assert "RuntimeError: a bug nobody foresaw" in letter[4]
    assert len(producer.sent) == 2 and sorted(acked) == [1, 2, 3] and bridge.stats.dead_letters == 1


def _bridge_step(bridge, producer: _Producer, messages: list[tuple[int, int, int, bytes]], now: float,  # noqa: ANN001
                 force: bool = False) -> None:
    """One step of the bridge's thread over (connection, packet id, qos, payload) messages on ``s/d``."""
    from types import SimpleNamespace

    for connection, mid, qos, payload in messages:
        bridge._inbox.put((connection, SimpleNamespace(topic="s/d", payload=payload, mid=mid, qos=qos, dup=False)))
    bridge._step(producer, _Dead(), now, force=force)


def _values(producer: _Producer) -> list[float]:
    return sorted(v for record in producer.sent for s in record["series"] for v in s["values"])


@pytest.mark.parametrize("qos", [0, 1])
def test_a_message_in_parts_sent_again_after_a_reconnection_counts_once(monkeypatch: pytest.MonkeyPatch,
                                                                         qos: int) -> None:
    """Its first parts went out at once, its last waited with its token: the broker sent a QoS 1 message again
    (the bridge kept a QoS 0 one) after a reconnection, and its first parts went out again in other batches."""
    from connectors.kafka import KafkaSettings
    from connectors.mqtt.bridge import MqttBridge

    settings = MqttSettings(subscriptions=[{"topic": "s/+", "sensor": "fixed:v", "interval_ms": 1}], max_readings=10,
                            max_wait_ms=60_000)
    bridge = MqttBridge(settings, KafkaSettings(bootstrap_servers="x:1"))
    acked: list[int] = []
    monkeypatch.setattr(bridge._client, "ack", lambda mid, qos: acked.append(mid))
    bridge._connection = 1
    big = json.dumps({"value": list(range(100, 125)), "ts": 1767225600003}).encode()
    producer = _Producer()
    _bridge_step(bridge, producer, [(1, 1, qos, b'{"value": [1, 2, 3], "ts": 1767225600000}'), (1, 2, qos, big)], 0.0)
    bridge._connection = 3  # the broker restarted; it sends again what was not acknowledged
    _bridge_step(bridge, producer, [(3, 2, qos, big)] if qos and 2 not in acked else [], 1.0)
    _bridge_step(bridge, producer, [], 2.0, force=True)
    assert _values(producer) == [1.0, 2.0, 3.0, *map(float, range(100, 125))]


def test_qos_0_readings_closed_in_the_step_of_a_reconnection_count_once() -> None:
    """The batch of a QoS 0 message that closed in the same step as a message from a new connection arrived was
    produced, and its readings went into the new windows as well."""
    from connectors.kafka import KafkaSettings
    from connectors.mqtt.bridge import MqttBridge

    bridge = MqttBridge(MqttSettings(subscriptions=[{"topic": "s/+", "sensor": "fixed:v"}], max_wait_ms=60_000),
                        KafkaSettings(bootstrap_servers="x:1"))
    bridge._connection = 1
    producer = _Producer()
    _bridge_step(bridge, producer, [(1, 0, 0, b'{"value": 1, "ts": 1767225600000}'),
                                    (1, 0, 0, b'{"value": 2, "ts": 1767225603000}'),  # past its window's lateness
                                    (3, 0, 0, b'{"value": 3, "ts": 1767225603001}')], 0.0)  # a new connection
    _bridge_step(bridge, producer, [], 1.0, force=True)
    assert _values(producer) == [1.0, 2.0, 3.0]


def test_the_sensor_flow_scores_each_bridge_batch_on_arrival_and_drops_one_sent_again() -> None:
    """Window slots are not a dense sequence: numbered, every batch waited behind a 'gap' for eight more."""
    from streams.flows.sensor_anomaly import SensorAnomalyProcessor
    from streams.processor import Event

    batches = _feed(DeviceWindows("p", window_ms=1000, lateness_ms=0), [(60_000 * i, float(i)) for i in range(12)])
    processor = SensorAnomalyProcessor("dev")
    scored = [len([e for e in processor.process([Event("sensor.readings", "dev", b.record)])
                   if e.topic == "scores.anomaly"]) for b in batches]
    assert scored == [1] * len(batches) and len(batches) == 11
    again = processor.process([Event("sensor.readings", "dev", batches[-1].record)])  # the bridge crashed, re-sent
    assert not [e for e in again if e.topic == "scores.anomaly"]
    assert processor.sequence.counts.gaps == 0


def _quiet_bridge(monkeypatch: pytest.MonkeyPatch, settings: MqttSettings) -> tuple:
    """A bridge whose ``run`` needs no broker: the MQTT client's network calls do nothing, Kafka is a list."""
    from connectors.kafka import KafkaSettings
    from connectors.mqtt import bridge as bridge_module

    class Closing(_Producer):
        closed = False

        def __enter__(self) -> Closing:
            return self

        def __exit__(self, *exc: object) -> None:
            self.closed = True

    producer = Closing()
    monkeypatch.setattr(bridge_module, "create_topics", lambda *_: None)
    monkeypatch.setattr(bridge_module, "EventProducer", lambda *_a, **_k: producer)
    monkeypatch.setattr(bridge_module, "DeadLetterProducer", lambda _p: _Dead())
    bridge = bridge_module.MqttBridge(settings, KafkaSettings(bootstrap_servers="x:1"))
    for name in ("connect_async", "loop_start", "disconnect", "loop_stop"):
        monkeypatch.setattr(bridge._client, name, lambda *_a, **_k: None)
    return bridge, producer


def test_qos_0_messages_in_the_inbox_at_shutdown_are_sent_and_the_producer_closed(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The last step read the inbox for 50 ms or 1000 batches: the QoS 0 messages after those were dropped unsaid."""
    import threading
    from types import SimpleNamespace

    settings = MqttSettings(subscriptions=[{"topic": "s/+", "sensor": "fixed:v"}], lateness_ms=0)
    bridge, producer = _quiet_bridge(monkeypatch, settings)
    n = 3000  # a reading a window: each message closes its device's window before
    for i in range(n):
        bridge._inbox.put((0, SimpleNamespace(topic="s/d", payload=json.dumps({"value": i, "ts": 1000 * i}).encode(),
                                              mid=0, qos=0, dup=False)))
    stop = threading.Event()
    stop.set()
    bridge.run(stop)
    assert _values(producer) == [float(i) for i in range(n)] and bridge._inbox.empty()
    assert producer.closed


def test_a_payload_larger_than_max_payload_bytes_is_a_dead_letter_unread(monkeypatch: pytest.MonkeyPatch) -> None:
    """A 200 MB publish was parsed whole (some forty times its size in memory) before anything refused it."""
    from types import SimpleNamespace

    from connectors.kafka import KafkaSettings
    from connectors.mqtt.bridge import MqttBridge

    bridge = MqttBridge(MqttSettings(subscriptions=[{"topic": "s/+", "sensor": "fixed:v", "interval_ms": 1}],
                                     max_payload_bytes=1000), KafkaSettings(bootstrap_servers="x:1"))
    acked: list[int] = []
    monkeypatch.setattr(bridge._client, "ack", lambda mid, qos: acked.append(mid))
    monkeypatch.setattr(json, "loads", lambda *_a, **_k: pytest.fail("a payload over the limit was parsed"))
    big = b'{"ts": 0, "value": [' + b",".join([b"1"] * 600) + b"]}"
    bridge._inbox.put((0, SimpleNamespace(topic="s/d", payload=big, mid=7, qos=1, dup=False)))
    producer, dead = _Producer(), _Dead()
    bridge._step(producer, dead, 0.0, force=True)  # type: ignore[arg-type]
    [letter] = dead.letters
    assert letter[1:4] == (big, "s/d", "too_large") and "max_payload_bytes" in letter[4]
    assert producer.sent == [] and acked == [7]


def test_max_readings_is_bounded_by_what_one_kafka_message_holds() -> None:
    """A million readings a batch was accepted; Kafka refused every such batch, and the bridge stopped at each start."""
    from pydantic import ValidationError

    from schemas.catalog import MAX_BATCH_READINGS

    with pytest.raises(ValidationError, match="max_readings"):
        MqttSettings(subscriptions=[{"topic": "s/+"}], max_readings=MAX_BATCH_READINGS + 1)



def test_a_delivered_message_sent_again_after_its_ack_was_lost_is_not_sent_again(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The broker sent again (DUP) what Kafka had confirmed, as the connection dropped before the acknowledgement;
    with a new message of the same window it went out in a batch of another event id, and counted twice downstream."""
    from types import SimpleNamespace

    from connectors.kafka import KafkaSettings
    from connectors.mqtt.bridge import MqttBridge

    bridge = MqttBridge(MqttSettings(subscriptions=[{"topic": "s/+", "sensor": "fixed:v"}], max_wait_ms=60_000),
                        KafkaSettings(bootstrap_servers="x:1"))
    acked: list[int] = []
    monkeypatch.setattr(bridge._client, "ack", lambda mid, qos: acked.append(mid))

    class Dropping(_Producer):
        def flush(self, timeout: float | None = None) -> int:
            bridge._connection += 1  # the broker went away while Kafka confirmed the batch: no ack reaches it
            return 0

    def message(mid: int, i: int, dup: bool) -> SimpleNamespace:
        payload = json.dumps({"value": i, "ts": 1767225600000 + i}).encode()
        return SimpleNamespace(topic="s/d", payload=payload, mid=mid, qos=1, dup=dup)

    bridge._connection = 1
    first, again = Dropping(), _Producer()
    for m in (message(1, 0, False), message(2, 1, False)):
        bridge._inbox.put((1, m))
    bridge._step(first, _Dead(), 0.0, force=True)  # type: ignore[arg-type]
    assert acked == []
    for m in (message(1, 0, True), message(2, 1, True), message(3, 2, False), message(4, 3, True)):
        bridge._inbox.put((2, m))  # the two again; a new one; one marked DUP that never was delivered
    bridge._step(again, _Dead(), 1.0, force=True)  # type: ignore[arg-type]
    assert _values(first) == [0.0, 1.0] and _values(again) == [2.0, 3.0]
    assert sorted(acked) == [1, 2, 3, 4] and bridge.stats.redelivered == 2
