"""What the cheaper detector paths of session 9 rely on: the spike-reach test as or-ed compares answers exactly as
the farther window extreme did, and detectors made from one pristine copy share a parameter vector that nothing
changes in place, so one series growing its seasonal tables never reaches another's, nor an explainer's state."""

from __future__ import annotations

import numpy as np
import pytest

from models.anomaly import make_detector
from models.anomaly._steps import window_reaches
from models.anomaly.explain import score_explained
from models.anomaly.seasonal import SeasonalDetector


def _reach(x: float, window: np.ndarray) -> float:
    """The previous rule: the distance to the farther extreme of the window."""
    with np.errstate(over="ignore"):
        return float(max(abs(x - window.min()), abs(x - window.max())))


def test_window_reaches_answers_as_the_farther_extreme_did() -> None:
    rng = np.random.default_rng(5)
    cases = []
    for scale in (1e-300, 1e-9, 1.0, 1e6, 1e300, 1e307):  # the largest: differences overflow to infinity
        for _ in range(300):
            w = np.clip(rng.normal(0.0, scale, 64), -1.7e308, 1.7e308)
            x = float(np.clip(rng.normal(0.0, 4 * scale), -1.7e308, 1.7e308))
            cases.append((x, w, _reach(x, w)))  # a bar exactly at the reach: >= must hold
            cases.append((x, w, float(np.nextafter(_reach(x, w), np.inf))))  # just above it: must not
            cases.append((x, w, float(abs(rng.normal(0.0, 3 * scale)))))
    quantised = np.round(rng.normal(20.0, 1.0, 64), 1)
    cases += [(20.0, quantised, b) for b in (0.0, 0.05, 1.0, 3.0, 100.0)]
    cases += [(1.7e308, np.full(64, -1.7e308), 1e308), (0.0, np.zeros(64), 0.0), (0.0, np.zeros(64), 1e-9)]
    hits = 0
    for x, w, bar in [c for c in cases if np.isfinite(c[2])]:  # readings are finite (as_inputs), and so is the bar
        expected = _reach(x, w) >= bar
        assert window_reaches(x, w, 64, bar) == expected, (x, bar)
        hits += expected
    assert 0 < hits < len(cases)  # both answers were exercised


def _series(step_ms: int, n: int = 400, seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    t = 1_700_000_000_000 + np.arange(n, dtype=np.int64) * step_ms
    return 10 + np.sin(np.arange(n) / 20) + rng.normal(0, 0.2, n), t


@pytest.mark.parametrize("name", ["seasonal", "robust", "likelihood", "gauss"])
def test_copies_share_parameters_and_a_growing_one_keeps_its_own(name: str) -> None:
    fine, daily = _series(1_000), _series(300_000, seed=2)  # a 5-minute step grows seasonal tables
    a, b = make_detector(name), make_detector(name)
    assert a._p is b._p  # shared: one vector per parameter set, not one per series
    shared = a._p.copy()
    scores_a, scores_b = a.score_learn(*daily), b.score_learn(*fine)
    np.testing.assert_array_equal(shared, make_detector(name)._p)  # the pristine vector is untouched
    np.testing.assert_array_equal(scores_a, make_detector(name).score_learn(*daily))
    np.testing.assert_array_equal(scores_b, make_detector(name).score_learn(*fine))
    if name == "seasonal":
        assert a._p is not b._p and a._p[-1] > b._p[-1]  # a grew: its own, longer layout


def test_an_explainer_keeps_the_layout_from_before_a_batch_that_grows_the_tables() -> None:
    v, t = _series(300_000, n=300, seed=4)
    v[200] += 30.0
    det = make_detector("seasonal")
    det.score_learn(v[:1], t[:1])  # the step is not known yet: no seasonal tables
    before = det._p
    scores, why = score_explained(det, v[1:], t[1:])
    assert det._p is not before and det._p[-1] > before[-1]  # the batch grew the tables
    replay = SeasonalDetector()
    replay.score_learn(v[:1], t[:1])
    replayed = replay.score_learn(v[1:200], t[1:200])
    np.testing.assert_array_equal(replayed, scores[:199])
    e = why.at(199)  # replays from the state before the batch, with that state's layout
    assert e is not None and e.rule == "spike" and e.context[-1] == v[200]
