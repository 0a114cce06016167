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
