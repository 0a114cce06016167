"""Drift detectors: data drift statistics, our CUSUM, the ensemble, and the benchmark's scoring."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from models.drift import FeatureDriftMonitor, SelfStartingCusum, ks_test, make_detector, psi
from models.drift.ensemble import DriftEnsemble


def test_psi_is_small_for_the_same_distribution_and_large_for_a_shift() -> None:
    rng = np.random.default_rng(0)
    ref = rng.normal(size=5000)
    assert psi(ref, rng.normal(size=2000)) < 0.02
    assert psi(ref, rng.normal(1.0, 1.0, size=2000)) > 0.25


def test_psi_rejects_empty_samples() -> None:
    with pytest.raises(ValueError, match="non-empty"):
        psi(np.array([]), np.array([1.0]))


def test_ks_separates_a_variance_change_that_leaves_the_mean_alone() -> None:
    rng = np.random.default_rng(1)
    ref = rng.normal(size=2000)
    _, p_same = ks_test(ref, rng.normal(size=1000))
    stat, p_wide = ks_test(ref, rng.normal(0, 2.0, size=1000))
    assert p_same > 1e-3 and p_wide < 1e-6 and stat > 0.1


def test_feature_monitor_waits_for_full_samples_then_flags_drift_and_restores() -> None:
    rng = np.random.default_rng(2)
    mon = FeatureDriftMonitor(reference_size=500, window_size=200)
    mon.update(rng.normal(size=600))
    assert mon.check() is None
    mon.update(rng.normal(size=100))
    quiet = mon.check()
    assert quiet is not None and not quiet.drifted
    mon.update(rng.normal(2.0, 1.0, size=200))
    loud = mon.check()
    assert loud is not None and loud.drifted and loud.psi > 0.25
    again = FeatureDriftMonitor(**mon.params())
    again.restore(mon.snapshot())
    assert again.check() == loud


@pytest.mark.parametrize("shift", ["mean", "variance"])
def test_cusum_finds_an_abrupt_change_soon_and_not_before(shift: str) -> None:
    rng = np.random.default_rng(3)
    before = rng.normal(size=3000)
    after = rng.normal(1.0, 1.0, 1000) if shift == "mean" else rng.normal(0.0, 2.0, 1000)
    hits = SelfStartingCusum().update(np.concatenate([before, after]))
    assert len(hits) >= 1 and 3000 <= hits[0] < 3200


def test_cusum_on_a_binary_error_stream_sees_the_error_rate_rise() -> None:
    rng = np.random.default_rng(4)
    errors = np.concatenate([(rng.random(3000) < 0.1), (rng.random(2000) < 0.4)]).astype(float)
    hits = SelfStartingCusum().update(errors)
    assert len(hits) == 1 and 3000 <= hits[0] < 3300


def _falling_then_rising_errors() -> np.ndarray:
    """A classifier's 0/1 errors: 50 % while it learns, 5 % once it has, then 50 % after a drift at 6000."""
    rng = np.random.default_rng(7)
    rates = np.r_[np.full(3000, 0.5), np.full(3000, 0.05), np.full(2000, 0.5)]
    return (rng.random(len(rates)) < rates).astype(float)


@pytest.mark.parametrize("name,params", [("cusum", {"warmup": 400}), ("adwin", {"delta": 0.01})])
def test_rises_only_on_a_binary_error_stream_ignores_the_learner_getting_better(name: str, params: dict) -> None:
    errors = _falling_then_rising_errors()
    both = make_detector(name, **params).update(errors)
    rises = make_detector(name, direction="rises_on_binary", **params).update(errors)
    assert any(2900 <= i < 3600 for i in both)  # the fall of the error rate is a change both ways...
    assert not any(i < 6000 for i in rises)  # ...but not a drift to act on
    assert len(rises) >= 1 and 6000 <= rises[0] < 6400


def test_rises_only_still_sees_both_directions_on_a_continuous_stream() -> None:
    rng = np.random.default_rng(8)
    x = np.r_[rng.normal(1.0, 1.0, 3000), rng.normal(0.0, 1.0, 1000)]
    for name in ("cusum", "adwin"):
        hits = make_detector(name, direction="rises_on_binary").update(x)
        assert len(hits) >= 1 and 3000 <= hits[0] < 3300, name


def test_the_ensemble_alarms_on_a_rising_error_rate_only() -> None:
    hits = make_detector("ours").update(_falling_then_rising_errors())
    assert len(hits) == 1 and 6000 <= hits[0] < 6400


def _warming_up_then_rising_errors() -> np.ndarray:
    """A model's 0/1 errors as on the MovieLens replay: low while the first few users (who like most things)
    dominate, settling at 35 % from value 300 on, then a real rise to 55 % at 4000."""
    rng = np.random.default_rng(11)
    rates = np.r_[np.full(300, 0.15), np.full(3700, 0.35), np.full(2000, 0.55)]
    return (rng.random(len(rates)) < rates).astype(float)


def test_the_ensemble_waits_for_the_stream_to_settle_before_any_alarm_counts() -> None:
    errors = _warming_up_then_rising_errors()
    eager = make_detector("ours", settle=0).update(errors)
    assert any(i < 1000 for i in eager)  # the warm-up's rise is a change...
    hits = make_detector("ours").update(errors)
    assert len(hits) == 1 and 4000 <= hits[0] < 4400  # ...but not from a settled regime: only the real one counts


def test_the_warm_up_lasts_while_the_stream_is_still_moving() -> None:
    rng = np.random.default_rng(12)
    ramp = np.r_[np.linspace(0.0, 3.0, 1600), np.full(2400, 3.0)] + rng.normal(0, 0.3, 4000)
    det = DriftEnsemble(members=[{"name": "cusum", "warmup": 200}], settle=400)
    assert len(det.update(ramp[:1600])) == 0 and det.snapshot()["warm"] is not None  # unsettled all along the ramp
    det.update(ramp[1600:])
    assert det.snapshot()["warm"] is None


def test_settle_is_checked() -> None:
    with pytest.raises(ValueError, match="settle"):
        DriftEnsemble(settle=2)


def test_a_snapshot_taken_during_the_warm_up_resumes_it() -> None:
    errors = _warming_up_then_rising_errors()
    whole = make_detector("ours").update(errors)
    det = make_detector("ours")
    det.update(errors[:500])
    snap = det.snapshot()
    assert _plain(snap) and len(snap["warm"]) == 500
    again = make_detector("ours")
    again.restore(snap)
    assert list(500 + again.update(errors[500:])) == list(whole)


def test_adwin_takes_its_binary_delta_only_while_the_stream_is_binary() -> None:
    from models.drift.members import make_member

    errors = _falling_then_rising_errors()
    loose = make_member("adwin", direction="rises_on_binary", delta=1e-9, delta_binary=0.01).update(errors)
    strict = make_member("adwin", direction="rises_on_binary", delta=1e-9).update(errors)
    assert len(loose) >= 1 and 6000 <= loose[0] < 6400 and (len(strict) == 0 or strict[0] > loose[0])
    rng = np.random.default_rng(9)
    x = np.r_[rng.normal(0.0, 1.0, 3000), rng.normal(0.3, 1.0, 3000)]  # continuous: the strict delta rules
    assert list(make_member("adwin", direction="rises_on_binary", delta=1e-9, delta_binary=0.5).update(x)) == list(
        make_member("adwin", delta=1e-9).update(x))


def test_direction_is_checked() -> None:
    with pytest.raises(ValueError, match="direction"):
        make_detector("cusum", direction="sideways")
    with pytest.raises(ValueError, match="direction"):
        make_detector("page_hinkley", direction="rises_on_binary")
    with pytest.raises(ValueError, match="delta_binary"):
        make_detector("adwin", delta_binary=0.01)


def _plain(value: object) -> bool:
    if isinstance(value, dict):
        return all(isinstance(k, str) and _plain(v) for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return all(_plain(v) for v in value)
    return value is None or isinstance(value, (bool, int, float, str, bytes))


@pytest.mark.parametrize("name", ["cusum", "ours", "adwin", "page_hinkley"])
def test_batching_never_changes_detections_and_state_survives_a_plain_snapshot(name: str) -> None:
    rng = np.random.default_rng(5)
    x = np.concatenate([rng.normal(size=2500), rng.normal(1.5, 1.0, 2500)])
    whole = make_detector(name).update(x)
    det = make_detector(name)
    parts = []
    for start in range(0, len(x), 777):
        if start == 1554:
            snap = det.snapshot()
            assert _plain(snap), snap
            det = make_detector(name)
            det.restore(snap)
        parts.extend(start + det.update(x[start : start + 777]))
    assert len(whole) >= 1
    assert list(whole) == parts


def test_a_pickled_or_malformed_river_snapshot_is_refused_with_a_reason() -> None:
    with pytest.raises(ValueError, match="pickle"):
        make_detector("adwin").restore({"pickled": pickle.dumps(object()), "binary": True})
    snap = make_detector("adwin").snapshot()
    with pytest.raises(ValueError, match="malformed"):
        make_detector("adwin").restore({**snap, "window": b"not a window"})


def test_ensemble_raises_one_alarm_per_change_and_no_later_than_adwin() -> None:
    rng = np.random.default_rng(6)
    x = np.concatenate([rng.normal(size=4000), rng.normal(1.0, 1.0, 3000)])
    ours = DriftEnsemble().update(x)
    adwin = make_detector("adwin").update(x)
    assert len(ours) == 1 and ours[0] >= 4000
    assert ours[0] <= adwin[adwin >= 4000][0]


def test_unknown_detector_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="unknown drift detector"):
        make_detector("nope")


def test_benchmark_scoring_counts_delays_misses_and_false_alarms() -> None:
    from benchmarks.drift import score

    s = score(np.array([100, 5010, 5020, 12000]), ((5000, 5000), (10000, 10500)))
    assert s["delays"] == [10] and s["missed"] == 0 + 1 and s["redundant"] == 1
    assert s["false_alarms"] == 2


def test_benchmark_runs_and_reports_ours_beside_adwin(tmp_path) -> None:
    import json

    from benchmarks.drift import run

    out = run(tmp_path / "d.json", seeds=1, detectors=("ours", "adwin"), families=("ours",), tune_seeds=())
    saved = json.loads((tmp_path / "d.json").read_text())
    for det in ("ours", "adwin"):
        assert set(saved[det]) >= {"mean_delay", "false_alarms_per_10k", "missed"}
    assert set(out["streams"]) == {"abrupt_mean", "gradual_mean", "abrupt_variance", "gradual_variance", "concept_labels"}
    assert out["ours"]["missed"] < out["adwin"]["missed"]


def test_river_generator_streams_are_learner_errors_that_rise_at_the_known_drifts() -> None:
    from benchmarks.drift import river_stream

    s = river_stream("stagger", "abrupt", seed=3, length=1500, drifts=(750,))
    again = river_stream("stagger", "abrupt", seed=3, length=1500, drifts=(750,))
    np.testing.assert_array_equal(s.values, again.values)  # every detector is given the same stream
    assert s.name == "stagger_abrupt" and s.drifts == ((725, 775),)
    assert set(np.unique(s.values)) <= {0.0, 1.0}
    assert s.values[775:875].mean() > s.values[650:725].mean() + 0.2  # the tree's old concept is wrong now
    assert river_stream("sea", "gradual", seed=3, length=1500, drifts=(750,)).drifts == ((250, 1250),)


def test_settings_are_chosen_on_seeds_that_are_not_reported(monkeypatch) -> None:
    from benchmarks import drift as bench

    with pytest.raises(ValueError, match="overlap"):
        bench.run(None, seeds=2, families=("ours",), tune_seeds=(1,))
    # adwin's candidates: the one that catches more drifts with no more false alarms on the tuning streams wins
    monkeypatch.setitem(bench.SETTINGS, "adwin", [{"delta": 1e-12}, {}])
    chosen = bench.choose_settings(bench.streams(100)[:1], ("adwin",))
    assert chosen == {"adwin": {}}



def test_a_settled_detector_resumes_from_its_snapshot_and_takes_a_snapshot_from_before_its_warm_up() -> None:
    from models.drift.settle import Settled

    errors = _warming_up_then_rising_errors()
    whole = make_detector("adwin", settle=800).update(errors)
    first = make_detector("adwin", settle=800)
    head = first.update(errors[:500])  # inside the warm-up
    again = make_detector("adwin", settle=800)
    again.restore(first.snapshot())
    assert list(head) == [] and list(again.update(errors[500:]) + 500) == list(whole)
    bare = make_detector("adwin")
    bare.update(errors[:2000])
    old = Settled("adwin", settle=800)
    old.restore(bare.snapshot())  # a checkpoint taken before the detector had a warm-up: on a settled stream
    assert old.warm.settled and list(old.update(errors[2000:])) == list(bare.update(errors[2000:]))


@pytest.mark.parametrize("name", ["ours", "cusum"])
def test_a_flat_metric_raises_no_drift_however_long_it_stays_flat(name: str) -> None:
    """Its spread was floored at min_std, never measured: a 'fall in variance' below it is no drift."""
    detector = make_detector(name)
    assert len(detector.update(np.full(3000, 7.5))) == 0
    assert len(detector.update(np.full(200, 9.5))) == 1  # a step in the level still is
