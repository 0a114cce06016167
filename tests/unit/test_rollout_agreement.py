"""The canary agreement gate: local flags joined with the platform's scores, and what the controller decides."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from edge_agent.batching import BatchEncoder
from edge_agent.sources import Chunk
from schemas import SENSOR_BATCH, AvroSerde, ValidationError
from schemas.flags import pack_flags, unpack_flags
from schemas.scores import pack_series
from streams.flows.agreement import AgreementJoin
from streams.flows.rollout import RolloutController, RolloutPolicy

POLICY = RolloutPolicy(observe_s=60, swap_timeout_s=120, max_error_rate_per_min=2, max_latency_ms=20,
                       silence_intervals=3, fleet_window_s=600, min_agreement=0.9, min_joined_readings=200)
T0 = 1_767_225_600_000


def batch(device: str, version: str | None, flags: np.ndarray, start: int = 0, sensor: str = "temp") -> dict:
    n = len(flags)
    return {"device_id": device, "local_model": version,
            "series": [{"sensor": sensor, "timestamps": list(range(T0 + start, T0 + start + n)),
                        "values": [1.0] * n, "local_flags": pack_flags(flags) if version else None}]}


def scores(device: str, anomalous: np.ndarray, start: int = 0, sensor: str = "temp", packed: bool = True) -> dict:
    times = np.arange(T0 + start, T0 + start + len(anomalous))
    values = np.where(anomalous, 0.9, 0.1)
    series = pack_series(sensor, times, values) if packed else \
        {"sensor": sensor, "timestamps": times.tolist(), "scores": values.tolist(), "packed_timestamps": None,
         "packed_scores": None}
    return {"device_id": device, "threshold": 0.5, "series": [series]}


def health(device: str, version: str) -> dict:
    return {"device_id": device, "device_class": "rpi4", "interval_s": 10.0, "model_version": version,
            "model_state": "running", "model_message": None, "errors": 0, "inference_latency_ms": 1.0}


def platform_anomalies(n: int, every: int = 50) -> np.ndarray:
    return np.arange(n) % every == 0


def test_flags_round_trip_as_one_bit_per_reading() -> None:
    flags = np.array([1, 0, 0, 1, 1, 0, 0, 0, 1, 1], dtype=bool)
    mask = pack_flags(flags)
    assert len(mask) == 2 and (unpack_flags(mask, 10) == flags).all()
    with pytest.raises(ValueError, match="needs 2"):
        unpack_flags(mask + b"\0", 10)


def test_a_v2_batch_carries_flags_and_its_model_and_a_bad_mask_is_refused() -> None:
    serde = AvroSerde()
    enc = BatchEncoder("pi-1", "test", "sensor.readings", serde)
    chunk = Chunk("temp", "C", [T0, T0 + 1, T0 + 2], [1.0, 2.0, 9.0], pack_flags(np.array([0, 0, 1], dtype=bool)))
    rec = serde.decode(enc.encode(0, [chunk], "v2"), SENSOR_BATCH)
    assert rec["local_model"] == "v2" and unpack_flags(rec["series"][0]["local_flags"], 3).tolist() == [0, 0, 1]
    plain = serde.decode(enc.encode(1, [Chunk("temp", "C", [T0], [1.0])]), SENSOR_BATCH)
    assert plain["local_model"] is None and plain["series"][0]["local_flags"] is None
    with pytest.raises(ValidationError, match=r"series\[0\]\.local_flags: 2 bytes for 3 readings"):
        enc.encode(2, [Chunk("temp", "C", chunk.timestamps, chunk.values, b"\0\0")], "v2")
    with pytest.raises(ValidationError, match="local_model: must name the model"):
        enc.encode(3, [chunk])


def test_local_inference_flags_raw_batches_only() -> None:
    pytest.importorskip("onnxruntime")
    from edge_agent.inference.local import LocalInference

    cfg = SimpleNamespace(model_path=None, threshold=4.0, send="raw", scarce_backlog=10, providers=[])
    values = [float(np.sin(i / 5)) for i in range(64)]
    values[50] = 80.0
    raw = LocalInference(cfg).apply([Chunk("temp", "C", list(range(T0, T0 + 64)), list(values))])
    flags = unpack_flags(raw[0].flags, 64)
    assert flags[50] and flags.sum() <= 3  # the spike, and the windows it is still inside of
    summary = LocalInference(SimpleNamespace(**{**vars(cfg), "send": "summary"})).apply(
        [Chunk("temp", "C", list(range(T0, T0 + 64)), list(values))])
    assert all(c.flags is None for c in summary)


@pytest.mark.parametrize("scores_first", [False, True])
def test_join_counts_the_four_outcomes_whichever_side_comes_first(scores_first: bool) -> None:
    j = AgreementJoin(["pi-1"], "v2")
    local = np.zeros(100, dtype=bool)
    local[[10, 20, 30]] = True
    platform = np.zeros(100, dtype=bool)
    platform[[10, 20, 40, 50]] = True
    feed = [lambda: j.add_readings(batch("pi-1", "v2", local)), lambda: j.add_scores(scores("pi-1", platform))]
    for f in reversed(feed) if scores_first else feed:
        f()
    a = j.counts["pi-1"]
    assert (a.both, a.device_only, a.platform_only, a.neither) == (2, 1, 2, 95)
    assert a.agreement == pytest.approx(0.97) and a.recall == pytest.approx(0.5)
    assert j.pending() == 0


@pytest.mark.parametrize("scores_first", [False, True])
def test_readings_delivered_again_on_both_sides_count_once(scores_first: bool) -> None:
    j = AgreementJoin(["pi-1"], "v2")
    local = np.zeros(100, dtype=bool)
    local[[10, 20]] = True
    platform = np.zeros(100, dtype=bool)
    platform[[10, 40]] = True
    feed = [lambda: j.add_readings(batch("pi-1", "v2", local)), lambda: j.add_scores(scores("pi-1", platform))]
    for _ in range(2):  # the second round: both records redelivered after the join
        for f in reversed(feed) if scores_first else feed:
            f()
    feed[0]()  # one side alone once more: already joined, so nothing waits for its other side
    a = j.counts["pi-1"]
    assert (a.both, a.device_only, a.platform_only, a.neither) == (1, 1, 1, 97)
    assert j.pending() == 0


def test_join_ignores_other_devices_other_versions_and_unscored_batches_and_stays_bounded() -> None:
    j = AgreementJoin(["pi-1"], "v2", max_pending=100)
    j.add_readings(batch("pi-9", "v2", np.ones(50, dtype=bool)))
    j.add_readings(batch("pi-1", "v1", np.ones(50, dtype=bool)))  # the previous model's batch
    j.add_readings(batch("pi-1", None, np.ones(50, dtype=bool)))
    j.add_scores(scores("pi-9", np.ones(50, dtype=bool)))
    assert j.pending() == 0
    j.add_scores(scores("pi-1", np.zeros(50, dtype=bool), packed=False))  # no readings yet: waits
    assert j.pending() == 50 and j.counts["pi-1"].joined == 0
    for k in range(10):
        j.add_scores(scores("pi-1", np.zeros(50, dtype=bool), start=1000 + 50 * k))
    assert j.pending() == 100  # the newest 100 only
    j.add_readings(batch("pi-1", "v2", np.zeros(50, dtype=bool), start=1450))
    assert j.counts["pi-1"].joined == 50 and j.counts["pi-1"].agreement == 1.0


def run(c: RolloutController, local: np.ndarray, until: int, per_step: int = 50) -> dict | None:
    """Canaries switch at t=10; each 10 s step brings ``per_step`` flagged readings and the platform's scores."""
    decided = None
    for t in range(0, until + 1, 10):
        c.observe([health(d, "2" if t else "1") for d in c.canaries], float(t))
        if t:
            at = (t // 10 - 1) * per_step
            for d in c.canaries:
                c.agreement.add_readings(batch(d, "2", local[at: at + per_step], start=at))
                c.agreement.add_scores(scores(d, platform_anomalies(len(local))[at: at + per_step], start=at))
        decided = c.decide(float(t))
        if decided is not None:
            return {**decided, "t": t}
    return decided


def controller(policy: RolloutPolicy = POLICY) -> RolloutController:
    start = RolloutController.start(policy, "rpi4", "2", "1", [f"pi-{i}" for i in range(20)], 0, "t", 10)
    return RolloutController(policy, start, started_at=0.0)


def test_an_agreeing_canary_is_promoted_after_the_window() -> None:
    local = platform_anomalies(2000).copy()
    local[::97] = True  # a few false alarms of its own
    decided = run(controller(), local, 200)
    assert decided["state"] == "promoted" and decided["t"] == 70, decided
    assert "agreement 0.991 over 350 readings" in decided["reason"]
    assert "recall of the platform's anomalies 1.00" in decided["reason"]


def test_a_disagreeing_canary_is_rolled_back_with_the_measure() -> None:
    decided = run(controller(), np.ones(2000, dtype=bool), 200)  # flags everything
    assert decided["state"] == "rolled_back" and decided["t"] == 70, decided
    assert "disagrees with the platform's detector: agreement 0.020" in decided["reason"], decided["reason"]


def test_too_few_joined_readings_wait_and_then_roll_back() -> None:
    c = controller()
    local = platform_anomalies(2000)
    assert run(c, local, 70, per_step=2) is None  # healthy long enough, but 14 readings cannot tell
    decided = run(c, local, 200, per_step=0)
    assert decided["state"] == "rolled_back" and "only 14 of 200 readings joined" in decided["reason"], decided
    assert decided["t"] == 200  # observe (60) + swap timeout (120) after the switch at 10


def test_a_silent_canary_agrees_on_normal_readings_but_fails_a_recall_bound() -> None:
    never = np.zeros(2000, dtype=bool)
    assert run(controller(), never, 200)["state"] == "promoted"  # 0.98 agreement: why recall is reported
    strict = controller(POLICY.model_copy(update={"min_recall": 0.5}))
    decided = run(strict, never, 200)
    assert decided["state"] == "rolled_back" and "misses the platform's anomalies" in decided["reason"], decided
    assert "recall of the platform's anomalies 0.00" in decided["reason"]
