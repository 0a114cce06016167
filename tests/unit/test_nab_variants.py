"""The variants of issue 14 (benchmarks/nab_variants.py): patched from seasonal.py, identical to it when off."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from benchmarks import nab_variants
from models.anomaly.seasonal import SeasonalDetector
from models.evaluation import nab

STANDARD = nab.CostMatrix(tp=1.0, fp=0.11, fn=1.0)


def _daily_series() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(1)
    ts = np.arange(5000) * 300_000
    v = 10 * np.sin(2 * np.pi * ts / 86_400_000) + rng.normal(0, 1, ts.size)
    v[3000] += 30
    v[4000:4100] += 8
    return v, ts


def test_switched_off_the_variant_is_seasonal_bit_for_bit(tmp_path: Path) -> None:
    variant = nab_variants.variant_class(tmp_path)
    v, ts = _daily_series()
    expected = SeasonalDetector().score_learn(v, ts)
    np.testing.assert_array_equal(variant().score_learn(v, ts), expected)
    # Each switch is really wired in: confirming the cycle first changes the scores of a cyclic series.
    assert not np.array_equal(variant(confirm=1.0).score_learn(v, ts), expected)
    assert not np.array_equal(variant(ar=0.5).score_learn(v, ts), expected)  # round 6: the AR(1) predictor
    # round 6: the Bonferroni correction acts only where seasonal's own ratio_max lets both scores speak
    both = variant(ratio_max=1.0).score_learn(v, ts)
    np.testing.assert_array_equal(variant(bonf=1.0).score_learn(v, ts), expected)
    assert not np.array_equal(variant(ratio_max=1.0, bonf=1.0).score_learn(v, ts), both)


def test_a_patch_whose_anchor_is_gone_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(nab_variants.PATCHES, "stale", [("text that seasonal.py does not contain", "")])
    with pytest.raises(ValueError, match="anchor found 0 times"):
        nab_variants.patched_source()


def test_the_vote_keeps_the_defaults_unless_another_candidate_wins_enough_categories() -> None:
    n, win = 2000, (1000, 1099)
    stamps = np.datetime64("2020-01-01T00:00") + np.arange(n) * np.timedelta64(5, "m")
    files = ["a/1.csv", "b/1.csv", "c/1.csv", "d/1.csv"]
    windows = {f: [(stamps[win[0]], stamps[win[1]])] for f in files}

    def detects(hit: set[str]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        out = {}
        for f in files:
            s = np.zeros(n)
            s[win[0] if f in hit else 1500] = 1.0
            out[f] = (stamps, s)
        return out

    # 'other' beats the defaults on a and b only: in the fold holding d out it wins 2 of the 3 training categories.
    cands = {"defaults": detects({"c/1.csv", "d/1.csv"}), "other": detects({"a/1.csv", "b/1.csv", "c/1.csv"})}
    strict = {f.held_out: f.candidate for f in nab_variants.select_by_vote(cands, windows, STANDARD, 3)}
    loose = {f.held_out: f.candidate for f in nab_variants.select_by_vote(cands, windows, STANDARD, 2)}
    assert strict == {"a": "defaults", "b": "defaults", "c": "defaults", "d": "defaults"}
    assert loose["d"] == "other" and loose["a"] == "defaults"
    # Nested: holding d out, a CV over a, b and c finds 'other' better on held-out categories there.
    nested = {f.held_out: f for f in nab_variants.select_nested(cands, windows, STANDARD)}
    assert nested["d"].candidate == "other" and nested["d"].score < 0.0  # which misses d's window
