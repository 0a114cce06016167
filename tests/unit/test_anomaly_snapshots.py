"""Detector snapshots are compact, versioned plain data: they round-trip exactly, old ones convert or are
refused by version, malformed ones are refused with a ValueError, and per-series state stays in budget."""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from models.anomaly import DETECTORS, make_detector
from models.checkpoint import pack_array, plain_nbytes

NAMES = sorted(DETECTORS)
HST = ("hst", "hst-river")
ARRAY_NAMES = [n for n in NAMES if n not in HST]  # HalfSpaceTrees keep node masses (test_hst_compiled.py)
V0 = Path(__file__).parents[1] / "data" / "anomaly" / "snapshots_v0.npz"
NO_CYCLE_BYTES, CYCLE_BYTES = 4096, 65536


def _series(n: int, step_ms: int, seed: int = 3) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    t = 1_700_000_000_000 + np.arange(n, dtype=np.int64) * step_ms
    v = 20 + 5 * np.sin(2 * np.pi * t / 86_400_000) + rng.normal(0, 0.5, n)
    v[rng.integers(0, n, n // 200)] += 15
    return v, t


def _v0_series() -> tuple[np.ndarray, np.ndarray]:
    """The series ``tests/data/anomaly/make_v0_snapshots.py`` wrote the version-0 fixture with."""
    n = 900
    rng = np.random.default_rng(7)
    t = np.arange(n, dtype=np.int64) * 60_000 + 1_700_000_000_000
    v = 10 + 3 * np.sin(np.arange(n) * 2 * np.pi / 144) + rng.normal(0, 0.3, n)
    v[n // 2 : n // 2 + 5] += 8.0
    v[3 * n // 4 :] += 4.0
    return v, t


def _is_plain(value: Any) -> bool:
    try:
        plain_nbytes(value)
    except TypeError:
        return False
    return True


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("step_ms", [1_000, 300_000])  # no usable daily cycle / a daily and a weekly one
def test_round_trip_continues_bit_identically(name: str, step_ms: int) -> None:
    n = 1500 if name in HST else 7000  # past the likelihood history (6000), so block sums are retired too
    v, t = _series(n, step_ms)
    expected = make_detector(name).score_learn(v, t)
    for cut in (0, 1, 2, 650, n - 300):
        det = make_detector(name)
        det.score_learn(v[:cut], t[:cut])
        snap = det.snapshot()
        assert _is_plain(snap) and snap["version"] == (1 if name in HST else 3) and snap["detector"] == name
        assert name in HST or snap["layout"] == len(det.scalars) == len(snap["scalars"]) // 8
        fresh = make_detector(name)
        fresh.restore(pickle.loads(pickle.dumps(snap)))  # any plain serialiser; pickle only copies here
        np.testing.assert_array_equal(fresh.score_learn(v[cut:], t[cut:]), expected[cut:])
        np.testing.assert_array_equal(det.score_learn(v[cut:], t[cut:]), expected[cut:])


@pytest.mark.parametrize("name", ARRAY_NAMES)
def test_version_0_snapshot_converts_and_continues_like_the_old_code(name: str) -> None:
    old = np.load(V0)
    v, t = _v0_series()
    det = make_detector(name)
    det.restore({"state": old[f"{name}/state"]})
    np.testing.assert_array_equal(det.score_learn(v[400:], t[400:]), old[f"{name}/expected"])


@pytest.mark.parametrize("name", ["robust", "seasonal"])
def test_version_0_snapshot_past_the_history_converts_with_the_same_alarms(name: str) -> None:
    """Past 6,000 readings version 0 has lost values that version 1's block sums held: the converted
    detector continues within a hundredth of the old code's scores and alarms on the same readings."""
    old = np.load(V0)
    rng = np.random.default_rng(5)  # make_v0_snapshots.long_series
    t = np.arange(9_000, dtype=np.int64) * 300_000 + 1_700_000_000_000
    v = 20 + 5 * np.sin(2 * np.pi * t / 86_400_000) + rng.normal(0, 0.5, 9_000)
    v[rng.integers(0, 9_000, 30)] += 15
    det = make_detector(name)
    det.restore({"state": old[f"{name}/long_state"]})
    scores, expected = det.score_learn(v[7_000:], t[7_000:]), old[f"{name}/long_expected"]
    assert np.abs(scores - expected).max() < 0.01
    np.testing.assert_array_equal(scores >= det.threshold, expected >= det.threshold)


@pytest.mark.parametrize("name", HST)
def test_version_0_hst_pickle_is_refused_by_version_and_never_loaded(name: str) -> None:
    old = np.load(V0)
    det = make_detector(name)
    with pytest.raises(ValueError, match="version 0 .*pickled"):
        det.restore({"model": old["hst/model"].tobytes()})


def test_version_0_of_other_parameters_is_refused() -> None:
    old = np.load(V0)
    with pytest.raises(ValueError, match=r"version 0 has shape \(20350,\).*parameters"):
        make_detector("seasonal", slots=1024).restore({"state": old["seasonal/state"]})
    with pytest.raises(ValueError, match="version 0"):
        make_detector("robust").restore({"state": "not numbers"})


def _snap(name: str) -> dict[str, Any]:
    det = make_detector(name)
    v, t = _series(700, 300_000)
    det.score_learn(v, t)
    return det.snapshot()


def _version_1(det: Any) -> dict[str, Any]:
    """What ``snapshot()`` wrote until version 2 (scalars by name, each buffer packed)."""
    if det.name in HST:
        return det.snapshot()
    return {
        "format": "eddyline.anomaly-detector", "version": 1, "detector": det.name,
        "scalars": dict(zip(det.scalars, det._s.tolist(), strict=True)),
        "buffers": {name: pack_array(view) for name, view in det._views().items()},
    }


@pytest.mark.parametrize("name", ARRAY_NAMES)
@pytest.mark.parametrize("step_ms", [1_000, 300_000])
def test_version_1_snapshot_restores_to_the_same_scores(name: str, step_ms: int) -> None:
    n = 7000
    v, t = _series(n, step_ms)
    expected = make_detector(name).score_learn(v, t)
    for cut in (0, 2, 650, n - 300):
        det = make_detector(name)
        det.score_learn(v[:cut], t[:cut])
        fresh = make_detector(name)
        fresh.restore(pickle.loads(pickle.dumps(_version_1(det))))
        assert fresh.snapshot() == det.snapshot()
        np.testing.assert_array_equal(fresh.score_learn(v[cut:], t[cut:]), expected[cut:])


def _version_2(snap: dict[str, Any]) -> dict[str, Any]:
    """What ``snapshot()`` wrote until version 3: the same blocks, no ``layout``."""
    return {**{k: v for k, v in snap.items() if k != "layout"}, "version": 2}


def _malformed_blocks(name: str) -> list[tuple[Any, str]]:
    good = _snap(name)
    if name in HST:
        return []
    det = make_detector(name)
    scalars = np.frombuffer(good["scalars"], "<f8").copy()
    nan_count = scalars.copy()
    nan_count[det.scalars.index("n")] = np.nan
    older = len(det.scalars) - len(det.appended)  # the shortest layout version 2 was written in

    def with_(**changes: Any) -> dict[str, Any]:
        return {**good, **changes}

    return [
        (with_(version=4), "state version 4 is not one this eddyline reads .*version 1 or 2 or 3"),
        (with_(version=3.0), "state version 3.0"),
        ({**good, "buffers": {}}, "unexpected snapshot keys"),
        ({k: v for k, v in good.items() if k != "mem"}, "unexpected snapshot keys"),
        ({k: v for k, v in good.items() if k != "layout"}, "unexpected snapshot keys"),
        ({**_version_2(good), "layout": good["layout"]}, "unexpected snapshot keys .* version 2"),
        # version 3 names its layout: a vector cut by a scalar or two is refused, never read as an older one
        (with_(scalars=good["scalars"][:-8]), "'scalars' holds .* bytes, but .* need"),
        (with_(scalars=good["scalars"][:-16]), "'scalars' holds .* bytes, but .* need"),
        (with_(scalars=good["scalars"] + b"\0"), "'scalars' holds"),
        (with_(scalars=good["scalars"] + bytes(8)), "'scalars' holds"),
        (with_(layout=good["layout"] + 1, scalars=good["scalars"] + bytes(8)), "layout .* is not one"),
        (with_(layout=older - 1, scalars=good["scalars"][: 8 * (older - 1)]), "layout .* is not one"),
        (with_(layout=str(good["layout"])), "layout '.*' is not one"),
        (with_(layout=float(good["layout"])), "layout .*\\.0 is not one"),
        (with_(scalars=scalars.tolist()), "'scalars' must be bytes, got list"),
        (with_(scalars=nan_count.tobytes()), "'n' is nan"),
        *([(with_(mem=good["mem"][:-8]), "'mem' holds .* bytes, but .* need")] if good["mem"] else []),
        (with_(mem=good["mem"] + bytes(8)), "'mem' holds"),
        (with_(mem=pickle.dumps(np.zeros(3))), "'mem' holds"),
        (with_(mem=None), "'mem' must be bytes, got NoneType"),
        # version 2 does not name its layout: only the sizes of layouts that were written restore
        (_version_2(with_(scalars=good["scalars"][: 8 * (older - 1)])), "'scalars' holds .* bytes, but .* need"),
        (_version_2(with_(scalars=good["scalars"] + bytes(8))), "'scalars' holds"),
    ]


def _malformed(name: str) -> list[tuple[Any, str]]:
    det = make_detector(name)
    det.score_learn(*_series(700, 300_000))
    good = _version_1(det)
    scalar = next(iter(good["scalars"]))

    def with_(**changes: Any) -> dict[str, Any]:
        return {**good, **changes}

    cases = [
        (b"\x80\x04K\x01.", "mapping"),
        (pickle.dumps(good), "mapping"),
        ({**good, "format": "other"}, "not an eddyline detector snapshot"),
        ({k: v for k, v in good.items() if k != "format"}, "not an eddyline detector snapshot"),
        (with_(version=4), "state version 4 is not one this eddyline reads"),
        (with_(version="1"), "state version '1'"),
        (with_(detector="other"), "of detector 'other'"),
        ({**good, "extra": 1}, "unexpected snapshot keys"),
        (with_(scalars={k: v for k, v in good["scalars"].items() if k != scalar}), "scalars must be exactly"),
        (with_(scalars={**good["scalars"], scalar: "1.0"}), "not a number"),
        (with_(scalars={**good["scalars"], scalar: pickle.dumps(1.0)}), "not a number"),
        (with_(buffers={**good["buffers"], "extra": pack_array(np.zeros(3))}), "buffers must be exactly"),
    ]
    if not good["buffers"]:
        return cases
    buffer = next(iter(good["buffers"]))
    packed = good["buffers"][buffer]
    return [
        *cases,
        (with_(buffers={**good["buffers"], buffer: {**packed, "data": packed["data"][:-1]}}), "bytes of data"),
        (with_(buffers={**good["buffers"], buffer: {**packed, "dtype": "|O"}}), "dtype '|O'"),
        (with_(buffers={**good["buffers"], buffer: {**packed, "dtype": "<f4"}}), "dtype|bytes of data"),
        (with_(buffers={**good["buffers"], buffer: pack_array(np.zeros(3, dtype=packed["dtype"]))}), "shape"),
        (with_(buffers={**good["buffers"], buffer: pickle.dumps(np.zeros(3))}), "packed array"),
    ]


@pytest.mark.parametrize("name", NAMES)
def test_malformed_snapshot_is_refused_and_the_detector_keeps_its_state(name: str) -> None:
    v, t = _series(900, 300_000)
    expected = make_detector(name).score_learn(v, t)
    for bad, message in [*_malformed(name), *_malformed_blocks(name)]:
        det = make_detector(name)
        det.score_learn(v[:700], t[:700])
        with pytest.raises(ValueError, match=message):
            det.restore(bad)
        np.testing.assert_array_equal(det.score_learn(v[700:], t[700:]), expected[700:])


@pytest.mark.parametrize("name", ARRAY_NAMES)
def test_a_count_that_would_index_outside_a_buffer_is_refused(name: str) -> None:
    det = make_detector(name)
    det.score_learn(*_series(700, 300_000))
    snap = _version_1(det)
    with pytest.raises(ValueError, match="'n' is nan"):
        make_detector(name).restore({**snap, "scalars": {**snap["scalars"], "n": float("nan")}})
    with pytest.raises(ValueError, match="'n' is -1"):
        make_detector(name).restore({**snap, "scalars": {**snap["scalars"], "n": -1.0}})


def _state_sizes(name: str, step_ms: int, n: int = 7000) -> tuple[int, int]:
    det = make_detector(name)
    v, t = _series(n, step_ms)
    det.score_learn(v, t)
    return det.state_nbytes(), plain_nbytes(det.snapshot())


@pytest.mark.parametrize("name", ARRAY_NAMES)
@pytest.mark.parametrize("step_ms", [1_000, 10_000, 86_400_000])  # too fine / too fine / too coarse for a cycle
def test_state_without_a_cycle_fits_4_kb(name: str, step_ms: int) -> None:
    live, snap = _state_sizes(name, step_ms)
    assert live <= NO_CYCLE_BYTES and snap <= NO_CYCLE_BYTES, (live, snap)


@pytest.mark.parametrize("step_ms", [60_000, 300_000, 295_313, 3_600_000])  # 1 min, 5 min, 2048-slot week, 1 h
def test_seasonal_state_with_a_cycle_is_sized_to_the_step_and_fits_64_kb(step_ms: int) -> None:
    live, snap = _state_sizes("seasonal", step_ms)
    assert NO_CYCLE_BYTES < live <= CYCLE_BYTES and snap <= CYCLE_BYTES, (live, snap)
    det = make_detector("seasonal")
    v, t = _series(50, step_ms)
    det.score_learn(v, t)
    day, week = (det._views()[b].shape for b in ("slot_mean", "slot_mean2"))
    steps_per_week = round(604_800_000 / step_ms)
    assert day == (round(86_400_000 / step_ms),)
    assert week == (steps_per_week if steps_per_week <= det.slots else 0,)


def test_seasonal_allocates_its_tables_only_when_the_step_gives_a_cycle() -> None:
    det = make_detector("seasonal")
    before = det.state_nbytes()
    det.score_learn(*_series(1, 300_000))
    assert det.state_nbytes() == before  # one reading: no step yet
    det.score_learn(*_series(2, 300_000))
    assert det.state_nbytes() > before
    fine = make_detector("seasonal")
    fine.score_learn(*_series(100, 1_000))
    assert fine.state_nbytes() == before


def test_history_must_be_whole_blocks() -> None:
    with pytest.raises(ValueError, match="multiple of history_block"):
        make_detector("robust", history=6050)
    make_detector("robust", history=6050, history_block=50)


def test_version_2_mem_must_fit_the_shapes_its_scalars_give() -> None:
    """Seasonal tables are sized by the step: a step that gives other tables than ``mem`` holds is refused."""
    det = make_detector("seasonal")
    det.score_learn(*_series(50, 300_000))
    snap = det.snapshot()
    scalars = np.frombuffer(snap["scalars"], "<f8").copy()
    scalars[det.scalars.index("step")] = 60_000.0  # 1 min: a 1440-slot day instead of 288
    with pytest.raises(ValueError, match="'mem' holds .* bytes, but this detector's parameters and scalars need"):
        make_detector("seasonal").restore({**snap, "scalars": scalars.tobytes()})


@pytest.mark.parametrize("version", [1, 2])
def test_a_sensor_flow_checkpoint_with_older_detectors_restores_and_continues(version: int) -> None:
    """The processor's own state version is unchanged: checkpoints main wrote before detector state version 2
    (each detector's snapshot in version 1) and before version 3 (version 2: the blocks without ``layout``)
    still restore through the state codec and continue identically."""
    from itertools import islice

    from streams.flows.sensor_anomaly import SensorAnomalyProcessor
    from streams.processor import Event
    from streams.producers.simulator import SensorSimulator
    from streams.state import decode_checkpoint, decode_processor, encode, encode_processor
    from tests.fixtures.emits import plain

    sim = SensorSimulator(devices=1, readings_per_message=40, anomaly_rate=0.01, seed=9)
    evs = [Event("sensor.readings", r["device_id"], r) for r in islice(sim, 60)]
    device = evs[0].key
    expected = SensorAnomalyProcessor(device).process(evs)
    before = SensorAnomalyProcessor(device)
    head = before.process(evs[:37])
    saved = decode_checkpoint(encode_processor(before, device))
    older = _version_1 if version == 1 else lambda d: _version_2(d.snapshot())
    saved["state"]["detectors"] = {k: older(d) for k, d in before.detectors.items()}
    assert {d["version"] for d in saved["state"]["detectors"].values()} == {version}
    resumed = decode_processor(encode(saved), SensorAnomalyProcessor(device))
    assert plain(head + resumed.process(evs[37:])) == plain(expected)


@pytest.mark.parametrize(("fixture", "series"), [("s5", "cycle"), ("s5", "fine"), ("s6", "cycle"), ("s6", "fine"),
                                                 ("s6", "counts")])
def test_an_older_seasonal_snapshot_restores_and_continues_like_the_old_code(fixture: str, series: str) -> None:
    """Written by the code before ``run_max`` (s5) and before ``count_n`` (s6; tests/data/anomaly/
    make_seasonal_s*_snapshots.py): the scalars it lacks restore at 0; on a series without stuck runs the scores
    continue bit for bit, and a count series keeps the old spike rule (``count_n`` 0 never matches ``n``); so
    they do after a round trip through version 3, which names the current layout."""
    from tests.data.anomaly.make_seasonal_s5_snapshots import CUT, series as make_series
    from tests.data.anomaly.make_seasonal_s6_snapshots import counts

    old = np.load(V0.with_name(f"seasonal_v2_{fixture}.npz"))
    det = make_detector("seasonal")
    det.restore({"format": "eddyline.anomaly-detector", "version": 2, "detector": "seasonal",
                 "scalars": old[f"{series}/scalars"].tobytes(), "mem": old[f"{series}/mem"].tobytes()})
    assert len(old[f"{series}/scalars"]) // 8 == len(det.scalars) - (2 if fixture == "s5" else 1)
    again = make_detector("seasonal")
    again.restore(det.snapshot())
    assert again.snapshot()["layout"] == len(det.scalars)
    v, t = counts() if series == "counts" else make_series(300_000 if series == "cycle" else 1_000)
    np.testing.assert_array_equal(det.score_learn(v[CUT:], t[CUT:]), old[f"{series}/expected"])
    np.testing.assert_array_equal(again.score_learn(v[CUT:], t[CUT:]), old[f"{series}/expected"])


@pytest.mark.parametrize("name", ARRAY_NAMES)
def test_version_2_snapshot_restores_to_the_same_scores(name: str) -> None:
    """What main wrote before version 3 (the current layout, unnamed) restores and continues bit for bit."""
    n = 7000
    v, t = _series(n, 300_000)
    expected = make_detector(name).score_learn(v, t)
    for cut in (0, 2, 650, n - 300):
        det = make_detector(name)
        det.score_learn(v[:cut], t[:cut])
        fresh = make_detector(name)
        fresh.restore(pickle.loads(pickle.dumps(_version_2(det.snapshot()))))
        assert fresh.snapshot() == det.snapshot()
        np.testing.assert_array_equal(fresh.score_learn(v[cut:], t[cut:]), expected[cut:])


def test_an_older_seasonal_layout_is_named_and_a_cut_one_is_refused() -> None:
    """Version 1 names its scalars: one without the appended tail restores with it at 0, one lacking an earlier
    appended scalar but holding a later one is no layout that was written. Version 3 names its scalar count: an
    older layout (``scalars`` less a tail of ``appended``) restores with the rest at 0, and a current one cut by a
    scalar or two is refused."""
    det = make_detector("seasonal")
    det.score_learn(*_series(700, 300_000))
    named, snap = _version_1(det), det.snapshot()
    full = len(det.scalars)
    for lacking in (("count_n",), ("run_max", "count_n")):
        older = make_detector("seasonal")
        older.restore({**named, "scalars": {k: v for k, v in named["scalars"].items() if k not in lacking}})
        blocks = make_detector("seasonal")
        blocks.restore({**snap, "layout": full - len(lacking), "scalars": snap["scalars"][: -8 * len(lacking)]})
        for restored in (older, blocks):
            np.testing.assert_array_equal(restored._s[: full - len(lacking)], det._s[: full - len(lacking)])
            assert restored._s[full - len(lacking) :].tolist() == [0.0] * len(lacking)
    with pytest.raises(ValueError, match="scalars must be exactly"):
        make_detector("seasonal").restore({**named, "scalars": {k: v for k, v in named["scalars"].items()
                                                                 if k != "run_max"}})
    for cut in (1, 2):
        kept = make_detector("seasonal")
        kept.restore(snap)
        with pytest.raises(ValueError, match=f"'scalars' holds {8 * (full - cut)} bytes, but .* need {8 * full}"):
            kept.restore({**snap, "scalars": snap["scalars"][: -8 * cut]})
        assert kept.snapshot() == snap
