"""The MovieLens click replay: which ratings it sends, and the command's checks (publishing is tested
through the broker in tests/integration/test_mlops_flows.py)."""

from __future__ import annotations

import pytest

from connectors.movielens import load
from streams.producers.clicks import replay_ratings


def test_replay_takes_ratings_in_event_time_order_from_skip() -> None:
    whole = load(limit=300)
    part = replay_ratings(count=100, skip=200)
    assert part == whole[200:300]
    assert [r.time_ms for r in part] == sorted(r.time_ms for r in part)


def test_invert_after_turns_tastes_upside_down_from_that_rating_on() -> None:
    plain, turned = replay_ratings(count=50), replay_ratings(count=50, invert_after=20)
    assert turned[:20] == plain[:20]
    assert [r.liked for r in turned[20:]] == [1.0 - r.liked for r in plain[20:]]
    assert [(r.user, r.item, r.time_ms) for r in turned] == [(r.user, r.item, r.time_ms) for r in plain]


@pytest.mark.parametrize("kwargs", [{"count": -1}, {"skip": -1}, {"invert_after": -5}])
def test_negative_settings_are_refused(kwargs) -> None:
    with pytest.raises(ValueError, match="must not be negative"):
        replay_ratings(**kwargs)
