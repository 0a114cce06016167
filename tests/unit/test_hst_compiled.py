"""The compiled ``hst`` gives river's ``MinMaxScaler() | HalfSpaceTrees`` scores (``hst-river``) exactly: every
score of long random and NAB-like streams, however the stream is batched, across snapshot/restore mid-window,
and from a snapshot that the code before it (river's pipeline under the name ``hst``) wrote."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest

from models.anomaly import make_detector
from models.anomaly.hst import split_thresholds
from models.checkpoint import pack_array

NAB_DIR = Path(__file__).resolve().parents[3] / "shared" / "data" / "nab"
FIXTURE = Path(__file__).parents[1] / "data" / "anomaly" / "hst_v1_river.npz"
PARAMS = [{}, {"n_trees": 3, "height": 4, "window_size": 37, "seed": 7}, {"n_trees": 2, "height": 1, "window_size": 5}]


def _random_walk(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    v = np.cumsum(rng.normal(0, 1, n))
    v[rng.integers(0, n, n // 100)] += rng.normal(0, 40, n // 100)
    return v


def _nab_like(n: int, seed: int) -> np.ndarray:
    """A daily cycle sampled every 5 minutes, rounded like a CPU metric (ties, repeated values), with a flat
    stretch, a level shift and spikes; it starts flat so the scaler's range is 0 for a while."""
    rng = np.random.default_rng(seed)
    v = 40 + 15 * np.sin(np.arange(n) * 2 * np.pi / 288) + rng.normal(0, 2, n)
    v[: n // 20] = 40.0
    v[n // 3 : n // 3 + 300] = 55.0
    v[2 * n // 3 :] += 25
    v[rng.integers(0, n, 20)] *= 3
    return np.round(v, 1)


def _batches(n: int, seed: int) -> list[slice]:
    rng, out, start = np.random.default_rng(seed), [], 0
    while start < n:
        size = int(rng.choice([1, 2, 7, 60, 250, 900]))
        out.append(slice(start, min(n, start + size)))
        start += size
    return out


def _scores(name: str, v: np.ndarray, params: dict, seed: int = 0) -> np.ndarray:
    det, t = make_detector(name, **params), np.arange(v.shape[0], dtype=np.int64)
    if name == "hst-river":
        return det.score_learn(v, t)
    return np.concatenate([det.score_learn(v[s], t[s]) for s in _batches(v.shape[0], seed)])


@pytest.mark.parametrize("params", PARAMS)
@pytest.mark.parametrize("stream", ["random_walk", "nab_like", "uniform"])
def test_every_score_equals_rivers(stream: str, params: dict) -> None:
    n = 12_000 if params else 6_000
    v = {"random_walk": _random_walk, "nab_like": _nab_like,
         "uniform": lambda n, s: np.random.default_rng(s).uniform(-1e6, 1e6, n)}[stream](n, 3)
    expected = _scores("hst-river", v, params)
    scores = _scores("hst", v, params, seed=5)
    np.testing.assert_array_equal(scores, expected)
    assert np.unique(expected).size > 2  # the trees were used, not only the first window


@pytest.mark.skipif(not NAB_DIR.is_dir(), reason="NAB data not present")
@pytest.mark.parametrize("rel", ["realKnownCause/machine_temperature_system_failure.csv",
                                 "artificialWithAnomaly/art_daily_jumpsup.csv"])
def test_every_score_equals_rivers_on_nab_files(rel: str) -> None:
    v = np.loadtxt(NAB_DIR / "data" / rel, delimiter=",", skiprows=1, usecols=1)[:8_000]
    np.testing.assert_array_equal(_scores("hst", v, {}, seed=1), _scores("hst-river", v, {}))


@pytest.mark.parametrize("cut", [0, 1, 249, 250, 1_130, 2_777])
def test_snapshot_restore_mid_window_continues_with_rivers_scores(cut: int) -> None:
    v, t = _nab_like(4_000, 9), np.arange(4_000, dtype=np.int64)
    expected = make_detector("hst-river").score_learn(v, t)
    det = make_detector("hst")
    np.testing.assert_array_equal(det.score_learn(v[:cut], t[:cut]), expected[:cut])
    snap = det.snapshot()
    fresh = make_detector("hst")
    fresh.restore(pickle.loads(pickle.dumps(snap)))
    np.testing.assert_array_equal(fresh.score_learn(v[cut:], t[cut:]), expected[cut:])
    river = make_detector("hst-river")
    river.score_learn(v[:cut], t[:cut])
    assert river.snapshot() == {**snap, "detector": "hst-river"}  # the same layout, the same masses


def test_a_snapshot_written_by_rivers_hst_restores() -> None:
    """``hst_v1_river.npz`` was written by the code before ``hst`` was compiled (make_hst_v1_snapshot.py)."""
    old = np.load(FIXTURE)
    rng = np.random.default_rng(13)
    t = np.arange(2_000, dtype=np.int64) * 60_000 + 1_700_000_000_000
    v = 10 + 3 * np.sin(np.arange(2_000) * 2 * np.pi / 144) + rng.normal(0, 0.3, 2_000)
    v[rng.integers(0, 2_000, 20)] += 8.0
    scalars = {k.split("/", 1)[1]: float(old[k]) for k in old.files if k.startswith("scalars/")}
    scalars = {k: int(x) if k in ("seen", "built", "counter", "first_window") else x for k, x in scalars.items()}
    assert 0 < scalars["counter"] and scalars["first_window"] == 0
    snap = {"format": "eddyline.anomaly-detector", "version": 1, "detector": "hst", "scalars": scalars,
            "buffers": {"masses": pack_array(old["masses"].astype("<i4"))}}
    det = make_detector("hst")
    det.restore(snap)
    np.testing.assert_array_equal(det.score_learn(v[1_130:], t[1_130:]), old["expected"])


@pytest.mark.parametrize(("scalar", "value", "message"), [
    ("counter", 250, "not a count below window_size 250"),
    ("counter", -1, "'counter' is -1"),
    ("counter", 2.5, "'counter' is 2.5"),
    ("first_window", 2, "not 0 or 1"),
    ("built", 0, r"shape \[5110, 2\], expected \[0, 2\]"),
])
def test_a_snapshot_out_of_range_is_refused_and_the_detector_keeps_its_state(scalar: str, value: float,
                                                                            message: str) -> None:
    v, t = _nab_like(1_000, 2), np.arange(1_000, dtype=np.int64)
    expected = make_detector("hst").score_learn(v, t)
    det = make_detector("hst")
    det.score_learn(v[:600], t[:600])
    snap = det.snapshot()
    with pytest.raises(ValueError, match=message):
        det.restore({**snap, "scalars": {**snap["scalars"], scalar: value}})
    np.testing.assert_array_equal(det.score_learn(v[600:], t[600:]), expected[600:])


def test_series_share_the_trees_and_keep_only_masses() -> None:
    a, b = make_detector("hst"), make_detector("hst")
    assert a.state_nbytes() == 32  # the trees are built on the first reading, as river builds them
    a.score_learn(np.ones(3), np.arange(3))
    b.score_learn(np.ones(3), np.arange(3))
    assert a.state_nbytes() == 32 + 10 * 511 * 2 * 4
    assert split_thresholds(10, 8, 42) is split_thresholds(10, 8, 42)
    assert split_thresholds(10, 8, 42).shape == (10, 511) and not split_thresholds(10, 8, 42).flags.writeable
