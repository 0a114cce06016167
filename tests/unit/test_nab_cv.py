"""Leave-one-category-out cross-validation: folds hold each category out once and choose only on the others."""

from __future__ import annotations

import numpy as np
import pytest

from models.evaluation import cv, nab

STANDARD = {"standard": nab.CostMatrix(tp=1.0, fp=0.11, fn=1.0)}
N, WIN = 2000, (1000, 1099)
TS = np.datetime64("2020-01-01T00:00") + np.arange(N) * np.timedelta64(5, "m")


def test_each_category_is_held_out_once_and_never_trained_on() -> None:
    paths = ["a/1.csv", "a/2.csv", "b/1.csv", "c/1.csv", "c/2.csv"]
    folds = cv.leave_one_category_out(paths)
    assert [f.held_out for f in folds] == ["a", "b", "c"]
    assert sorted(p for f in folds for p in f.test) == sorted(paths)
    for f in folds:
        assert not set(f.train) & set(f.test)
        assert {cv.category(p) for p in f.test} == {f.held_out}
        assert set(f.train) | set(f.test) == set(paths)


def test_one_category_is_an_error() -> None:
    with pytest.raises(ValueError, match="at least two"):
        cv.leave_one_category_out(["a/1.csv", "a/2.csv"])


def _detect_in(files: list[str], hit: set[str]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Scores that detect the window's first record in the files of ``hit`` and nothing elsewhere."""
    out = {}
    for f in files:
        s = np.zeros(N)
        if f in hit:
            s[WIN[0]] = 1.0
        out[f] = (TS, s)
    return out


def test_a_fold_chooses_on_the_other_categories_only() -> None:
    files = ["a/1.csv", "b/1.csv", "c/1.csv"]
    windows = {f: [(TS[WIN[0]], TS[WIN[1]])] for f in files}
    # 'fits_a' is perfect on a and useless elsewhere; 'general' catches b and c but not a.
    candidates = {"general": _detect_in(files, {"b/1.csv", "c/1.csv"}), "fits_a": _detect_in(files, {"a/1.csv"})}
    folds = {f.held_out: f for f in cv.cross_validate(candidates, windows, STANDARD)["standard"]}
    assert folds["a"].candidate == "general"  # chosen on b and c, where 'fits_a' scores nothing
    assert folds["a"].score == pytest.approx(0.0)  # and it misses a's window: no credit for fitting a in-sample
    assert folds["b"].candidate == folds["c"].candidate == "general"
    assert folds["b"].score == pytest.approx(100.0)
    # pooled: two of three held-out windows caught at their first record
    assert cv.pooled(list(folds.values())) == pytest.approx(100.0 * 2 / 3)
    in_sample = {n: nab.score_corpus(c, windows, STANDARD)["standard"].normalized for n, c in candidates.items()}
    assert in_sample["general"] == pytest.approx(100.0 * 2 / 3)


def test_the_held_out_category_is_scored_at_the_threshold_chosen_on_the_others() -> None:
    files = ["a/1.csv", "b/1.csv"]
    windows = {f: [(TS[WIN[0]], TS[WIN[1]])] for f in files}
    a, b = np.zeros(N), np.zeros(N)
    a[WIN[0]] = 0.9  # a's detection is weaker than b's
    b[WIN[0]] = 0.5
    b[1500] = 0.45  # a false positive just under b's detection
    scores = {"a/1.csv": (TS, a), "b/1.csv": (TS, b)}
    folds = {f.held_out: f for f in cv.cross_validate({"only": scores}, windows, STANDARD)["standard"]}
    assert folds["b"].threshold == 0.9  # learnt on a: b's 0.5 is under it, so b's window is missed
    assert folds["b"].score == pytest.approx(0.0)
    assert folds["a"].threshold == 0.5 and folds["a"].score == pytest.approx(100.0)
    fixed = nab.score_corpus(scores, windows, STANDARD, {"standard": 0.5})["standard"]
    swept = nab.score_corpus(scores, windows, STANDARD)["standard"]
    assert swept.threshold == 0.5 and fixed.raw == pytest.approx(swept.raw)


def test_candidates_must_cover_the_same_files() -> None:
    files = ["a/1.csv", "b/1.csv"]
    windows = {f: [] for f in files}
    with pytest.raises(ValueError, match="other files"):
        cv.cross_validate({"x": _detect_in(files, set()), "y": _detect_in(files[:1], set())}, windows, STANDARD)
