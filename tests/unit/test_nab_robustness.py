"""The robustness suite (benchmarks/nab_robustness.py): label-preserving perturbations of a NAB corpus."""

from __future__ import annotations

import numpy as np
import pytest

from benchmarks import nab_robustness
from models.evaluation import nab


def _corpus() -> tuple[dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]], dict[str, list]]:
    stamps = np.datetime64("2020-01-01T00:00") + np.arange(2000) * np.timedelta64(5, "m")
    ms = stamps.astype("datetime64[ms]").astype(np.int64)
    series = {f"c{i}/f.csv": (stamps, ms, np.arange(2000, dtype=float) + i) for i in range(3)}
    windows = {rel: [(stamps[900], stamps[1099])] for rel in series}
    return series, windows


def test_drops_keep_the_labelled_windows_and_the_original_timestamps() -> None:
    series, windows = _corpus()
    out = nab_robustness.perturb(series, drop=0.3, seed=1, windows=windows)
    for rel, (ts, ms, v) in out.items():
        kept = v - v[0]  # the values are the readings' indices
        assert kept[0] == 0 and np.all(np.isin(np.arange(900, 1100), kept))
        outside = np.setdiff1d(np.arange(2000), np.arange(900, 1100)).size
        assert 0.6 * outside < v.size - 200 < 0.8 * outside  # about 30% of the others dropped
        np.testing.assert_array_equal(ts, series[rel][0][kept.astype(int)])  # the scorer's timestamps are the originals
        np.testing.assert_array_equal(ms, series[rel][1][kept.astype(int)])  # no jitter asked: the detector's too
    again = nab_robustness.perturb(series, drop=0.3, seed=1, windows=windows)
    assert all(np.array_equal(again[r][2], out[r][2]) for r in out)  # same seed, same series
    other = nab_robustness.perturb(series, drop=0.3, seed=2, windows=windows)
    assert any(not np.array_equal(other[r][2], out[r][2]) for r in out)


def test_jitter_moves_only_the_detector_s_timestamps_within_bounds_and_keeps_their_order() -> None:
    series, _ = _corpus()
    out = nab_robustness.perturb(series, jitter=0.2, seed=0)
    for rel, (ts, ms, v) in out.items():
        np.testing.assert_array_equal(ts, series[rel][0])
        moved = ms - series[rel][1]
        assert np.abs(moved).max() <= 0.2 * 300_000 and np.abs(moved).max() > 0.1 * 300_000
        assert np.all(np.diff(ms) >= 0)


def test_bad_settings_are_refused() -> None:
    series, _ = _corpus()
    with pytest.raises(ValueError, match="drop must be in"):
        nab_robustness.perturb(series, drop=1.0)


def test_the_score_of_a_detector_that_sees_the_window_survives_every_perturbation() -> None:
    series, windows = _corpus()
    profiles = {"standard": nab.CostMatrix(tp=1.0, fp=0.11, fn=1.0)}

    def at_window_start(values: np.ndarray, _ms: np.ndarray) -> np.ndarray:
        return (values - values[0] == 900).astype(float)  # fires at the window's first reading only

    scores = nab_robustness.score(series, windows, profiles, at_window_start)
    assert set(scores) == {"as is", *nab_robustness.PERTURBATIONS}
    assert all(s["standard"] == scores["as is"]["standard"] > 99.0 for s in scores.values())
