"""``bench scale``'s live maximum: the lag criterion on synthetic sends and scores, and the bisection over rates."""

from __future__ import annotations

import numpy as np
import pytest

from benchmarks.live_capacity import RISE_SHARE, bisect_maximum, judge, lag


def _sent(rate: float, seconds: float) -> list[float]:
    return list(np.arange(0.0, seconds, 1.0 / rate))


def _scored_in_polls(sent: list[float], serve: float, poll_s: float = 0.5, delay_s: float = 0.3) -> list[float]:
    """Scores produced a poll at a time: every ``poll_s`` the flow takes what has come (at most ``serve`` batches
    a second) and produces their scores ``delay_s`` later, in order."""
    scored, queue, t, i = [], 0, 0.0, 0
    while i < len(sent):
        t += poll_s
        while queue < len(sent) and sent[queue] <= t:
            queue += 1
        take = min(queue - i, int(serve * poll_s))
        scored += [t + delay_s] * take
        i += take
    return scored


def test_lag_counts_batches_sent_and_not_yet_scored():
    assert list(lag([1.0, 2.0, 3.0], [2.5], [0.5, 1.0, 2.0, 2.5, 3.0])) == [0, 1, 2, 1, 2]


def test_a_flow_that_keeps_up_is_sustained_however_it_bunches_its_scores():
    sent = _sent(1000.0, 20.0)
    verdict = judge(sent, _scored_in_polls(sent, serve=1500.0), warm_s=5.0)
    assert verdict.sustained and abs(verdict.rise) < verdict.allowed / 2
    assert verdict.offered == pytest.approx(15_000, abs=2)
    assert verdict.allowed == pytest.approx(RISE_SHARE * verdict.offered)


def test_a_flow_that_falls_behind_is_not_sustained():
    sent = _sent(1000.0, 20.0)
    verdict = judge(sent, _scored_in_polls(sent, serve=900.0), warm_s=5.0)  # a 10 % deficit
    assert not verdict.sustained and verdict.rise == pytest.approx(0.1 * verdict.offered, rel=0.2)


def test_batches_never_scored_count_against_the_flow():
    sent = _sent(1000.0, 20.0)
    scored = [t + 0.3 for t in sent if t < 12.0]  # the flow stops scoring 12 s in
    assert not judge(sent, scored, warm_s=5.0).sustained


def test_a_probe_too_short_to_fit_is_refused_with_what_to_do():
    with pytest.raises(ValueError, match="lengthen the probe"):
        judge(_sent(100.0, 5.5), [], warm_s=5.0)
    with pytest.raises(ValueError, match="higher rate"):
        judge([], [], warm_s=5.0)


def test_bisection_finds_the_limit_within_its_resolution_from_below():
    for limit in (130.0, 260.0, 399.0, 101.0):
        best, tried = bisect_maximum(lambda r, limit=limit: r <= limit, 100.0, 400.0, 4)
        assert best <= limit < best + 300.0 / 2**4 + 1e-9
        assert len(tried) == 4 and tried[0][0] == 250.0
        assert all(ok == (r <= limit) for r, ok in tried)


def test_bisection_reports_the_range_ends_when_the_limit_lies_outside():
    best, tried = bisect_maximum(lambda r: False, 100.0, 400.0, 3)
    assert best == 100.0 and [ok for _, ok in tried] == [False] * 3
    best, tried = bisect_maximum(lambda r: True, 100.0, 400.0, 3)
    assert best == 400.0 - 300.0 / 8 and all(ok for _, ok in tried)
    with pytest.raises(ValueError):
        bisect_maximum(lambda r: True, 400.0, 100.0, 3)
