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
    seqs = [b.record["seq"] for b in first]
    assert seqs == [k * PARTS for k in range(1000, 1004)]  # the last window waits for lateness or max_wait
    assert all(len(b.record["series"][0]["values"]) == 10 for b in first)
    replay = _feed(DeviceWindows("p", window_ms=1000, lateness_ms=500), messages[:30])
    assert [b.record for b in replay] == [b.record for b in first[: len(replay)]]


def test_max_wait_max_readings_and_stragglers() -> None:
    w = DeviceWindows("p", window_ms=1000, lateness_ms=0, max_wait_ms=100, max_readings=4)
    parts = _feed(w, [(5000 + i, 1.0) for i in range(6)])
    assert [b.record["seq"] for b in parts] == [5 * PARTS]
    assert w.ready(0.05) == []
    [rest] = w.ready(0.2)
    assert rest.record["seq"] == 5 * PARTS + 1 and rest.tokens == [4, 5]
    [late] = _feed(w, [(5500, 2.0)]) + w.ready(10.0)
    assert late.record["seq"] == 5 * PARTS + 2
    assert len({parts[0].record["event_id"], rest.record["event_id"], late.record["event_id"]}) == 3
