"""The sensor anomaly processor without Kafka: outputs, dedup, checkpoint continuation, metrics emits."""

import dataclasses
import itertools
import pickle

import pytest

from schemas import ALERT, ANOMALY_SCORE, AvroSerde
from streams.processor import Event, run_local
from streams.flows.sensor_anomaly import SensorAnomalyProcessor, sensor_anomaly_flow
from streams.producers.simulator import SensorSimulator, flagged_times
from tests.fixtures.emits import plain


def events(n: int, devices: int = 2, seed: int = 1) -> tuple[list[Event], SensorSimulator]:
    sim = SensorSimulator(devices=devices, readings_per_message=40, anomaly_rate=0.01, seed=seed)
    return [Event("sensor.readings", r["device_id"], r) for r in itertools.islice(sim, n)], sim


def test_every_reading_gets_a_score_and_outputs_fit_their_schemas():
    evs, sim = events(60)
    out = run_local(sensor_anomaly_flow(), evs)
    serde = AvroSerde()
    scores = [e for e in out if e.topic == "scores.anomaly"]
    assert len(scores) == len(evs)
    assert sum(len(s["scores"]) for e in scores for s in e.record["series"]) == sim.readings
    for e in out:
        if e.topic == "scores.anomaly":
            serde.encode(ANOMALY_SCORE, e.record)
        elif e.topic == "alerts":
            serde.encode(ALERT, e.record)
    assert any(e.topic == "alerts" and e.record["status"] == "OPENED" for e in out)
    assert all(e.topic in {"scores.anomaly", "alerts", "sink.sensor_metrics"} for e in out)


def test_injected_anomalies_are_scored_anomalous():
    evs, sim = events(200, devices=3, seed=4)
    out = run_local(sensor_anomaly_flow(), evs)
    flagged = flagged_times(e.record for e in out if e.topic == "scores.anomaly")
    found = sum(a.caught(flagged) for a in sim.injected)
    assert sim.injected and found / len(sim.injected) >= 0.9


def test_redelivered_event_is_dropped_and_counted():
    evs, _ = events(3, devices=1)
    proc = SensorAnomalyProcessor(evs[0].record["device_id"])
    first = proc.process(evs)
    assert proc.process([evs[1]]) == []
    assert proc.duplicates == 1 and first


def test_checkpoint_restore_gives_identical_outputs():
    evs, _ = events(80, devices=1, seed=9)
    device = evs[0].record["device_id"]
    straight = SensorAnomalyProcessor(device)
    expected = straight.process(evs)
    before = SensorAnomalyProcessor(device)
    head = before.process(evs[:37])
    resumed = pickle.loads(pickle.dumps(before))
    assert plain(head + resumed.process(evs[37:])) == plain(expected)


def test_output_ids_derive_from_input_ids():
    evs, _ = events(5, devices=1)
    a = run_local(sensor_anomaly_flow(), evs)
    b = run_local(sensor_anomaly_flow(), evs)
    assert [e.record.get("event_id") for e in a] == [e.record.get("event_id") for e in b]


def test_packed_scores_carry_every_score_and_decode_like_arrays():
    from schemas.scores import series_scores

    evs, _ = events(30, devices=2, seed=2)
    plain = [e for e in run_local(sensor_anomaly_flow(), evs) if e.topic == "scores.anomaly"]
    packed = [e for e in run_local(sensor_anomaly_flow(packed=True), evs) if e.topic == "scores.anomaly"]
    serde = AvroSerde()
    for a, b in zip(plain, packed, strict=True):
        back = serde.decode(serde.encode(ANOMALY_SCORE, b.record), ANOMALY_SCORE)
        assert len(serde.encode(ANOMALY_SCORE, b.record)) < len(serde.encode(ANOMALY_SCORE, a.record))
        for sa, sb in zip(a.record["series"], back["series"], strict=True):
            stamps, scores = series_scores(sb)
            assert stamps.tolist() == list(sa["timestamps"])
            assert abs(scores - sa["scores"]).max() < 1e-6
        assert series_scores(serde.decode(serde.encode(ANOMALY_SCORE, a.record), ANOMALY_SCORE)["series"][0])[1] \
            .tolist() == list(a.record["series"][0]["scores"])


def test_a_packed_series_with_mismatched_lengths_is_refused():
    import numpy as np
    import pytest

    from schemas import ValidationError
    from schemas.scores import pack_series

    evs, _ = events(1, devices=1)
    rec = [e for e in run_local(sensor_anomaly_flow(packed=True), evs) if e.topic == "scores.anomaly"][0].record
    rec["series"][0] = pack_series("t", np.arange(3), np.zeros(2))
    with pytest.raises(ValidationError, match="do not match"):
        AvroSerde().encode(ANOMALY_SCORE, rec)


def test_a_fleet_shares_one_immutable_policy_config_and_keeps_its_own_policy_params():
    evs, _ = events(4, devices=2)
    a, b = SensorAnomalyProcessor("device-000"), SensorAnomalyProcessor("device-001")
    strict = SensorAnomalyProcessor("device-000", policy={"warmup": 0, "resolve_after": 3})
    for p in (a, b, strict):
        p.process([Event("sensor.readings", p.device_id, evs[0].record | {"device_id": p.device_id})])
    sensor = next(iter(a.policies))
    assert a.policies[sensor].config is b.policies[sensor].config  # one object for the whole fleet, not one each
    assert a.policies[sensor] is not b.policies[sensor]
    assert a.policies[sensor].config.threshold == a.detectors[sensor].threshold
    assert strict.policies[sensor].config.warmup == 0 and strict.policies[sensor].config.resolve_after == 3
    assert a.policies[sensor].config.warmup == 600
    with pytest.raises(dataclasses.FrozenInstanceError):
        a.policies[sensor].config.warmup = 0


def _batch(seq: int, t0: int, device: str = "d", **series) -> Event:
    """A batch of one-minute readings per sensor from ``t0`` (ms)."""
    return Event("sensor.readings", device, {
        "event_id": f"{device}-{seq}", "event_time": t0, "producer": "p", "device_id": device, "seq": seq,
        "local_model": None, "series": [{"sensor": s, "unit": None, "local_flags": None, "values": list(v),
                                         "timestamps": [t0 + 60_000 * j for j in range(len(v))]}
                                        for s, v in series.items()]})


def _calm(rng, n: int = 30):
    return 20 + rng.normal(0, 0.1, n)


def test_a_series_without_readings_is_skipped_not_fatal():
    """Refused on the way in (schemas.validation); one that gets here anyway costs nothing: no detector, no summary
    (its last reading would be an IndexError), the batch's other series scored as ever."""
    p = SensorAnomalyProcessor("d")
    emits = p.process([_batch(0, 1_700_000_000_000, t=[], h=[20.0, 21.0])])
    [scores] = [e for e in emits if e.topic == "scores.anomaly"]
    assert [s["sensor"] for s in scores.record["series"]] == ["h"]
    assert sorted(p.detectors) == ["h"] and [e.record["sensor"] for e in emits if e.topic.startswith("sink.")] == ["h"]


def test_a_sensor_silent_past_forget_after_is_forgotten_and_its_open_incident_resolved():
    import numpy as np

    rng = np.random.default_rng(0)
    p = SensorAnomalyProcessor("d", detector="robust", policy={"warmup": 0}, forget_after_s=3600)
    half_hour = 1_800_000
    opened = []
    for i in range(10):
        values = _calm(rng)
        values[-1] = 80.0 if i == 9 else values[-1]
        opened += [e for e in p.process([_batch(i, i * half_hour, temp=values)]) if e.topic == "alerts"]
    assert [e.record["status"] for e in opened] == ["OPENED"]
    alerts = []
    for i in range(10, 14):  # only "hum" from now on: "temp" was renamed
        alerts += [e for e in p.process([_batch(i, i * half_hour, hum=_calm(rng))]) if e.topic == "alerts"]
        if i == 11:
            assert "temp" in p.detectors, "silent less than an hour of event time: kept"
    assert sorted(p.detectors) == sorted(p.policies) == sorted(p.last_seen) == ["hum"]
    [resolved] = alerts
    r = resolved.record
    assert (r["status"], r["alert_key"], r["value"], r["event_time"]) == (
        "RESOLVED", opened[0].record["alert_key"], None, 12 * half_hour + 29 * 60_000)  # the newest reading then
    assert "stopped reporting" in r["summary"] and r["details"]["sensor"] == "temp"
    AvroSerde().encode(ALERT, r)
    again = SensorAnomalyProcessor("d", detector="robust", policy={"warmup": 0}, forget_after_s=None)
    for i in range(14):
        again.process([_batch(i, i * half_hour, **({"temp": _calm(rng)} if i < 10 else {"hum": _calm(rng)}))])
    assert sorted(again.detectors) == ["hum", "temp"], "None: never forgotten"


def test_a_device_whose_sensor_names_change_keeps_a_bounded_state():
    from streams.state import encode_processor

    p = SensorAnomalyProcessor("d")
    sizes = []
    for i in range(300):  # one live sensor, renamed every 10 batches of 10 minutes (per boot)
        p.process([_batch(i, 1_700_000_000_000 + 600_000 * i, **{f"temp-boot{i // 10}": [20.0 + j % 3 for j in
                                                                                        range(10)]})])
        if i % 100 == 99:
            sizes.append(len(encode_processor(p, "d")))
    assert len(p.detectors) <= 16 and sizes[2] < 1.1 * sizes[1], sizes  # a day's worth of names, then flat


def _apart(p: SensorAnomalyProcessor, rng, seq: int, t0: int, sensors=("temp", "hum")) -> list:
    """One batch per sensor (published apart, a minute after each other) from ``t0``; the alerts they raised."""
    out = []
    for j, sensor in enumerate(sensors):
        out += p.process([_batch(seq * len(sensors) + j, t0 + 60_000 * j, **{sensor: _calm(rng)})])
    return [e for e in out if e.topic == "alerts"]


def test_one_reading_stamped_years_ahead_leaves_the_devices_other_sensors_alone():
    """A clock glitch on one reading (stamped 2100) made it the device's 'now' for good: every other sensor was a
    century silent behind it, forgotten at each of its batches (a fresh detector every time, blind to a spike)."""
    import numpy as np

    rng = np.random.default_rng(2)
    p = SensorAnomalyProcessor("d", detector="robust", policy={"warmup": 0})
    t0, half_hour = 1_700_000_000_000, 1_800_000
    for i in range(10):
        _apart(p, rng, i, t0 + i * half_hour)
    glitch = _batch(20, t0 + 10 * half_hour, temp=_calm(rng))
    glitch.record["series"][0]["timestamps"][-1] = 4_102_444_800_000  # 2100-01-01
    p.process([glitch])
    alerts = []
    for i in range(11, 20):
        alerts += _apart(p, rng, i, t0 + i * half_hour, sensors=("hum", "temp"))
    assert sorted(p.detectors) == ["hum", "temp"]
    assert not [a for a in alerts if "stopped reporting" in a.record["summary"]]
    assert p.detectors["hum"]._s[0] == 19 * 30, "hum learnt every reading it sent"
    assert p.last_seen["temp"] == t0 + 19 * half_hour + 60_000 + 29 * 60_000, "temp's clock came back"


def test_a_device_off_for_a_week_keeps_its_sensors_and_forgets_one_that_did_not_come_back():
    """Silence while the whole device was off is no sensor's: the first sensor back made the others a week silent,
    and they were forgotten (a week's seasonal tables relearnt from scratch). A sensor that stays silent once the
    device reports again is still forgotten ``forget_after_s`` later."""
    import numpy as np

    rng = np.random.default_rng(3)
    p = SensorAnomalyProcessor("d", detector="robust", forget_after_s=3600)
    half_hour, week = 1_800_000, 7 * 86_400_000
    for i in range(6):
        _apart(p, rng, i, i * half_hour, sensors=("temp", "hum", "fan"))
    learnt = p.detectors["hum"]._s[0]
    for i in range(6, 8):  # back a week later; the fan never comes back
        _apart(p, rng, i, week + i * half_hour)
        assert sorted(p.detectors) == ["fan", "hum", "temp"] and p.detectors["hum"]._s[0] == learnt + 30 * (i - 5)
    _apart(p, rng, 8, week + 8 * half_hour)  # an hour after the device came back
    assert sorted(p.detectors) == ["hum", "temp"]
    restored = SensorAnomalyProcessor("d", detector="robust", forget_after_s=3600)
    restored.restore(p.snapshot())
    back = week + 6 * half_hour + 29 * 60_000  # temp's first batch back
    assert (restored.newest, restored.spacing) == (p.newest, p.spacing)
    assert p.newest == back + 2 * half_hour + 60_000 and p.spacing < half_hour, "the week off: no usual spacing"


def _rare(p: SensorAnomalyProcessor, rng, seq: int, t0: int) -> None:
    """One device batch from ``t0``: temp's five one-minute readings, and tank's one reading every six hours."""
    tank = {"tank": [50.0]} if t0 % (6 * 3_600_000) == 0 else {}
    p.process([_batch(seq, t0, temp=_calm(rng, 5), **tank)])


def test_a_device_off_for_less_than_forget_after_keeps_a_sensor_that_reports_every_six_hours():
    """Device downtime is nobody's silence however long: a device off for 20 hours (under the default day) lost the
    learnt state of its tank sensor, reporting every six hours, 5 minutes after it came back, as 26 hours silent;
    one off for 25 hours kept it."""
    import numpy as np

    rng = np.random.default_rng(5)
    hour, five = 3_600_000, 300_000
    for off in (20 * hour, 25 * hour):
        p = SensorAnomalyProcessor("d", detector="robust")  # forget_after_s: the default, a day
        t, seq = 0, 0
        for seq in range(2 * 24 * 12):  # two days, a batch every five minutes
            _rare(p, rng, seq, t)
            t += five
        learnt = p.detectors["tank"]._s[0]
        t += off
        for seq in range(seq + 1, seq + 1 + 12 * 12):  # twelve hours back: tank reports again
            _rare(p, rng, seq, t)
            t += five
            assert "tank" in p.detectors, (off / hour, seq)
        assert p.detectors["tank"]._s[0] > learnt, "the same detector learnt on"


def test_a_renamed_sensor_is_forgotten_on_a_device_that_is_off_every_night():
    """Downtime is nobody's silence, but the device's batches while it is on still count: a sensor renamed on a
    device on 8 hours a day is forgotten after a day of the device's reporting (3 days), not kept for ever."""
    import numpy as np

    rng = np.random.default_rng(6)
    hour, five = 3_600_000, 300_000
    p = SensorAnomalyProcessor("d", detector="robust")
    t, seq, gone = 0, 0, None
    for day in range(6):
        for _ in range(8 * 12):
            p.process([_batch(seq, t, **{"temp" if day < 1 else "temp2": _calm(rng, 5)})])
            seq += 1
            t += five
            if gone is None and "temp" not in p.detectors:
                gone = day
        t += 16 * hour
    assert gone is not None and 3 <= gone <= 4, gone


def test_a_snapshot_from_before_reading_times_restores_and_its_sensors_count_as_seen_at_the_next_batch():
    import numpy as np

    rng = np.random.default_rng(1)
    hour = 3_600_000
    p = SensorAnomalyProcessor("d", forget_after_s=3600)
    p.process([_batch(0, 0, temp=_calm(rng), hum=_calm(rng))])
    state = p.snapshot()
    del state["last_seen"], state["newest"], state["spacing"]  # as written before sensors were forgotten
    old = SensorAnomalyProcessor("d", forget_after_s=3600)
    old.restore(state)
    assert sorted(old.detectors) == ["hum", "temp"] and old.last_seen == {} and old.spacing is None
    old.process([_batch(1, 5 * hour, hum=_calm(rng))])  # "temp" unseen since the restore: stamped now, kept
    for seq, at in enumerate((5.5 * hour, 6 * hour), start=2):  # the device reports every half hour
        old.process([_batch(seq, int(at), hum=_calm(rng))])
        assert sorted(old.detectors) == ["hum", "temp"]
    old.process([_batch(4, int(6.5 * hour) + 1, hum=_calm(rng))])
    assert sorted(old.detectors) == ["hum"]


def _restored(old_spec, new_spec, device: str = "device-000"):
    from streams.state import encode_processor, restore_or_fresh

    proc = old_spec.make_processor(device)
    evs, _ = events(30, devices=1)
    proc.process(evs)
    restored, _ = restore_or_fresh(new_spec, device, encode_processor(proc, device))
    return proc, restored, evs


def _reconfigured(kept: str) -> float:
    from prometheus_client import REGISTRY

    labels = {"flow": "sensor-anomaly", "kept": kept}
    return REGISTRY.get_sample_value("eddyline_state_reconfigured_total", labels) or 0.0


def test_a_restored_device_takes_the_flows_packing_and_policy_and_keeps_its_detectors():
    from streams.flows.alert_policy import PolicyConfig

    before = _reconfigured("all")
    new = sensor_anomaly_flow(packed=True, policy=PolicyConfig(resolve_after=3))
    proc, restored, evs = _restored(sensor_anomaly_flow(), new)
    assert restored.params() == new.make_processor("device-000").params()
    assert restored.packed and all(p.config.resolve_after == 3 for p in restored.policies.values())
    assert {k: d.snapshot() for k, d in restored.detectors.items()} == {k: d.snapshot() for k, d in
                                                                       proc.detectors.items()}
    assert restored.snapshot()["policies"] == proc.snapshot()["policies"]
    assert restored.process(evs[-1:]) == [], "the sequence is kept: a repeat is still a repeat"
    assert _reconfigured("all") == before + 1


def test_a_restored_device_under_another_detector_relearns_and_keeps_its_sequence_and_incidents(caplog, monkeypatch):
    from streams import state
    from streams.state import encode_processor, restore_or_fresh

    monkeypatch.setattr(state, "_RECONFIGURED_LOGGED", set())
    before = _reconfigured("part")
    old, new = sensor_anomaly_flow(detector="robust"), sensor_anomaly_flow(detector="seasonal")
    proc = old.make_processor("device-000")
    evs, _ = events(30, devices=1)
    proc.process(evs)
    sensor = next(iter(proc.policies))
    proc.policies[sensor].incident = "incident-1"  # open when the operator switched detectors
    blob = encode_processor(proc, "device-000")
    with caplog.at_level("WARNING"):
        for _ in range(3):  # three restores (of a fleet)
            restored, _ = restore_or_fresh(new, "device-000", blob)
    assert restored.detector_name == "seasonal"
    assert {k: d.snapshot() for k, d in restored.detectors.items()} == {
        k: new.make_processor("x")._series_state(k)[0].snapshot() for k in proc.detectors}, "relearning"
    assert restored.policies[sensor].incident == "incident-1" and restored.policies[sensor].seen == 0
    assert restored.snapshot()["sequence"] == proc.snapshot()["sequence"]
    assert restored.process(evs[-1:]) == [], "the sequence is kept: a repeat is still a repeat"
    assert _reconfigured("part") == before + 3, "each device counted"
    lines = [r.message for r in caplog.records if "restored under changed settings" in r.message]
    assert len(lines) == 1 and "'robust' -> 'seasonal'" in lines[0], "logged once, not once per device"


@pytest.mark.parametrize(("env", "expected"), [(None, 86_400.0), ("3600", 3600.0), ("0", None)])
def test_the_runtime_setting_decides_when_a_silent_sensor_is_forgotten(monkeypatch, env, expected) -> None:
    from streams.flows import flow_spec

    if env is not None:
        monkeypatch.setenv("EDDYLINE_RUNTIME_FORGET_SENSOR_AFTER_S", env)
    assert flow_spec("anomaly").make_processor("d").forget_after_s == expected


def test_a_sensor_with_its_own_clock_ahead_does_not_make_the_others_silent():
    """A sensor stamped by a clock of its own, two hours ahead, set the device's 'now': once the device had reported
    for ``forget_after_s``, each batch without the event-driven door forgot temp, which had reported in that very
    batch (a fresh detector every other batch, blind to a spike)."""
    import numpy as np

    rng = np.random.default_rng(4)
    p = SensorAnomalyProcessor("d", detector="robust", forget_after_s=3600)
    t0, ahead = 1_700_000_000_000, 2 * 3_600_000
    for i in range(24):  # a batch every ten minutes
        door = {"door": [1.0]} if i % 2 == 0 else {}
        batch = _batch(i, t0 + i * 600_000, temp=_calm(rng, 10), gps=_calm(rng, 10), **door)
        gps = batch.record["series"][1]
        gps["timestamps"] = [t + ahead for t in gps["timestamps"]]
        p.process([batch])
        assert sorted(p.detectors) == ["door", "gps", "temp"], i
    assert p.detectors["temp"]._s[0] == 240, "temp learnt every reading it sent"
