"""The NAB scorer reproduces NAB's published scores and its rules on small hand-made cases."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from models.evaluation import nab

NAB_DIR = Path(__file__).resolve().parents[3] / "shared" / "data" / "nab"
PUBLISHED = {  # ../shared/data/nab/README.md: NAB's own scorer on these 41 files
    "windowedGaussian": {"standard": 29.06, "reward_low_FP_rate": 14.79, "reward_low_FN_rate": 35.80},
    "numenta": {"standard": 68.58, "reward_low_FP_rate": 62.21, "reward_low_FN_rate": 72.77},
}
STANDARD = {"standard": nab.CostMatrix(tp=1.0, fp=0.11, fn=1.0)}


@pytest.mark.skipif(not NAB_DIR.is_dir(), reason="NAB data not present")
@pytest.mark.parametrize("detector", sorted(PUBLISHED))
def test_reproduces_published_scores(detector: str) -> None:
    windows = nab.load_windows(NAB_DIR / "labels" / "combined_windows.json")
    profiles = nab.load_profiles(NAB_DIR / "config" / "profiles.json")
    results = nab.load_results_dir(NAB_DIR / "reference_results" / detector, detector)
    assert len(results) == 41
    scored = nab.score_corpus(results, windows, profiles)
    for profile, expected in PUBLISHED[detector].items():
        r = scored[profile]
        assert abs(r.normalized - expected) <= 0.1, (profile, r.normalized, expected)
        assert sum(f.score for f in r.files.values()) == pytest.approx(r.raw, abs=1e-9)


def _one_file(n: int = 2000, win: tuple[int, int] = (1000, 1099)) -> tuple[dict, dict]:
    ts = np.datetime64("2020-01-01T00:00") + np.arange(n) * np.timedelta64(5, "m")
    windows = {"cat/f.csv": [(ts[win[0]], ts[win[1]])]}
    return {"ts": ts}, windows


def test_null_detector_scores_zero_and_perfect_scores_hundred() -> None:
    d, windows = _one_file()
    ts = d["ts"]
    null = nab.score_corpus({"cat/f.csv": (ts, np.zeros(len(ts)))}, windows, STANDARD)["standard"]
    assert null.normalized == pytest.approx(0.0)
    perfect = np.zeros(len(ts))
    perfect[1000] = 1.0
    best = nab.score_corpus({"cat/f.csv": (ts, perfect)}, windows, STANDARD)["standard"]
    assert best.normalized == pytest.approx(100.0)
    assert best.threshold == 1.0


def test_earlier_detection_scores_higher_and_only_first_counts() -> None:
    d, windows = _one_file()
    ts = d["ts"]
    early, late = np.zeros(len(ts)), np.zeros(len(ts))
    early[1010] = 1.0
    late[1080] = 1.0
    both = early + late
    s_early = nab.score_corpus({"cat/f.csv": (ts, early)}, windows, STANDARD)["standard"].raw
    s_late = nab.score_corpus({"cat/f.csv": (ts, late)}, windows, STANDARD)["standard"].raw
    s_both = nab.score_corpus({"cat/f.csv": (ts, both)}, windows, STANDARD)["standard"].raw
    assert s_early > s_late > 0
    assert s_both == pytest.approx(s_early)
    width = 100
    expected = float(nab.scaled_sigmoid(np.array(-(1099 - 1010 + 1) / width)) / nab.scaled_sigmoid(np.array(-1.0)))
    assert s_early == pytest.approx(expected)


def test_false_positives_cost_by_distance_and_probation_is_free() -> None:
    d, windows = _one_file()
    ts = d["ts"]
    s = np.zeros(len(ts))
    s[1000] = 1.0  # the window, detected at its start
    s[100] = 1.0  # probationary: ignored
    s[1105] = 1.0  # just past the window: costs little
    s[1900] = 1.0  # far past it: costs the full fpWeight
    r = nab.score_corpus({"cat/f.csv": (ts, s)}, windows, STANDARD)["standard"]
    f = r.files["cat/f.csv"]
    assert f.fp == 2 and f.tp == 1
    near = float(nab.scaled_sigmoid(np.array(6 / 99))) * 0.11
    assert r.raw == pytest.approx(1.0 + near - 0.11)
    assert nab.probation_length(2000) == 300 and nab.probation_length(10_000) == 750


def test_rejects_unlabelled_files_and_bad_lengths() -> None:
    d, windows = _one_file()
    ts = d["ts"]
    with pytest.raises(ValueError, match="no labels"):
        nab.score_corpus({"other/g.csv": (ts, np.zeros(len(ts)))}, windows, STANDARD)
    with pytest.raises(ValueError, match="timestamps but"):
        nab.score_corpus({"cat/f.csv": (ts, np.zeros(3))}, windows, STANDARD)
