"""The online click model, the popularity baseline, metrics and the MovieLens replay."""

from __future__ import annotations

import numpy as np

from models.metrics import auc, classification_report
from models.online import ClickModel, PopularityModel


def _stream(n: int, seed: int = 0) -> list[tuple[str, str, float]]:
    """Users like items whose id parity matches theirs; item 'i0' is liked by everyone."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        u, i = int(rng.integers(50)), int(rng.integers(40))
        out.append((f"u{u}", f"i{i}", float(i == 0 or (u % 2) == (i % 2))))
    return out


def test_click_model_learns_prequentially_better_than_chance() -> None:
    model = ClickModel()
    ys, ps = [], []
    for u, i, y in _stream(4000):
        ps.append(float(model.predict(u, [i])[0]))
        ys.append(y)
        model.learn(u, i, y, genres=("odd",) if int(i[1:]) % 2 else ("even",))
    late = slice(2000, None)
    assert auc(np.array(ys[late]), np.array(ps[late])) > 0.8


def test_click_model_snapshot_restores_identical_predictions() -> None:
    a = ClickModel()
    for u, i, y in _stream(500):
        a.learn(u, i, y, genres=("g",))
    b = ClickModel(**a.params())
    b.restore(a.snapshot())
    assert np.allclose(a.predict("u1", ["i1", "i2", "i0"]), b.predict("u1", ["i1", "i2", "i0"]))


def test_click_model_refuses_a_rating_or_label_that_is_not_finite_and_learns_nothing() -> None:
    import json

    import pytest

    model = ClickModel()
    for u, i, y in _stream(50):
        model.learn(u, i, y, genres=("g",), rating=4.0 * y)
    before = json.dumps(model.snapshot(), sort_keys=True)
    for label, rating in [(1.0, float("nan")), (0.0, float("inf")), (float("nan"), None)]:
        with pytest.raises(ValueError, match="must be finite"):
            model.learn("mallory", "i1", label, genres=("g",), rating=rating)
    assert json.dumps(model.snapshot(), sort_keys=True) == before
    assert np.isfinite(model.predict("bob", ["i1", "i7"])).all()


def test_a_click_model_keeps_statistics_of_at_most_max_users_however_many_users_come_and_go() -> None:
    """Months of uptime bring users who never come back: the state follows the active ones, not all ever seen."""
    import json

    def size_after(users: int) -> tuple[int, int, int]:
        model = ClickModel(max_users=100)
        for u in range(users):
            model.learn(f"user-{u:05d}", f"i{u % 40}", float(u % 2), genres=("Drama", "Comedy"), rating=4.0)
        return len(model.users.n), len(model.user_genres.n), len(json.dumps(model.snapshot()))

    assert size_after(100)[:2] == size_after(5000)[:2] == (100, 200)
    assert size_after(5000)[2] < 1.1 * size_after(100)[2]  # only the item and global counts' digits grow


def test_the_least_recently_active_user_is_forgotten_and_scored_like_a_new_one() -> None:
    model = ClickModel(max_users=3)
    for user in ["a", "b", "c", "a", "d"]:  # a is active again before d arrives: b goes
        model.learn(user, "i1", 1.0, genres=("Drama",), rating=5.0)
    model.learn("x", "i2", 0.0, genres=("Horror",), rating=1.0)  # x arrives, c goes
    assert list(model.users.n) == ["a", "d", "x"]
    assert sorted(model.user_genres.n) == ["a|Drama", "d|Drama", "x|Horror"]
    for forgotten in ("b", "c"):
        assert np.array_equal(model.features(forgotten, ["i1", "i2"]), model.features("never-seen", ["i1", "i2"]))
    again = ClickModel(**model.params())
    again.restore(model.snapshot())
    again.learn("y", "i1", 1.0, genres=("Drama",))  # the restored order says who goes next: a
    assert list(again.users.n) == ["d", "x", "y"] and sorted(again.user_genres.n) == ["d|Drama", "x|Horror", "y|Drama"]


def test_a_click_model_state_saved_without_a_cap_restores_under_one() -> None:
    """A state from before the cap (or under a larger one) keeps its last users; the rest fall back to the prior."""
    old = ClickModel(max_users=10)
    for u in range(10):
        old.learn(f"u{u}", "i1", float(u % 2), genres=("Drama", "Comedy"))
    state = old.snapshot()
    new = ClickModel(max_users=4)
    new.restore(state)
    assert list(new.users.n) == ["u6", "u7", "u8", "u9"]
    assert sorted(new.user_genres.n) == sorted(f"u{u}|{g}" for u in range(6, 10) for g in ("Drama", "Comedy"))
    assert np.array_equal(new.predict("u9", ["i1"]), old.predict("u9", ["i1"]))


def test_popularity_counts_likes() -> None:
    pop = PopularityModel()
    for item, y in [("a", 1), ("a", 1), ("b", 1), ("c", 0)]:
        pop.learn("u", item, y)
    assert list(pop.predict("u", ["a", "b", "c", "d"])) == [2.0, 1.0, 0.0, 0.0]


def test_metrics_match_hand_counts() -> None:
    y = np.array([1, 0, 1, 0, 1])
    p = np.array([0.9, 0.2, 0.4, 0.6, 0.8])
    rep = classification_report(y, p)
    assert rep["accuracy"] == 0.6 and rep["precision"] == 2 / 3 and rep["recall"] == 2 / 3
    assert abs(rep["auc"] - 5 / 6) < 1e-12
    assert auc(np.array([1, 1]), np.array([0.1, 0.2])) is None


def test_metrics_that_are_undefined_are_left_out_not_zero() -> None:
    """No positives, none predicted: right every time, and precision, recall, F1 (like AUC) say nothing."""
    assert set(classification_report(np.zeros(5), np.full(5, 0.1))) == {"accuracy", "log_loss"}
    no_positives = classification_report(np.zeros(4), np.array([0.9, 0.1, 0.1, 0.1]))  # one false alarm
    assert no_positives["precision"] == 0.0 and no_positives["f1"] == 0.0 and "recall" not in no_positives
    all_missed = classification_report(np.ones(3), np.full(3, 0.1))
    assert all_missed["recall"] == 0.0 and all_missed["f1"] == 0.0 and "precision" not in all_missed
    rep = classification_report(np.array([1, 0, 1, 0, 1]), np.array([0.9, 0.2, 0.4, 0.6, 0.8]))
    assert rep["f1"] == 2 / 3


def test_movielens_replay_loads_offline_in_event_time() -> None:
    from connectors.movielens import click_events, load

    ratings = load(limit=2000)
    assert len(ratings) == 2000
    assert all(a.time_ms <= b.time_ms for a, b in zip(ratings, ratings[1:]))
    events = list(click_events(ratings[:50]))
    clicks = [e for e in events if e["action"] == "CLICK"]
    assert len(clicks) == sum(r.liked for r in ratings[:50])
    assert len({e["event_id"] for e in events}) == len(events)
    assert list(click_events(ratings[:50])) == events


def test_a_click_model_keeps_statistics_of_at_most_max_items_however_many_items_the_catalogue_churns_through() -> None:
    """A catalogue of listings or articles brings new items every day: the state follows the active ones."""
    model = ClickModel(max_items=3)
    for item in ["a", "b", "c", "a", "d"]:  # a is active again before d arrives: b goes
        model.learn("u1", item, 1.0, genres=("Drama",), rating=5.0)
    assert list(model.items.n) == ["c", "a", "d"] and sorted(model.item_genres) == ["a", "c", "d"]
    model.learn("u2", "b", 0.0)  # b is new again: no genres remembered, c goes
    assert list(model.items.n) == ["a", "d", "b"] and sorted(model.item_genres) == ["a", "d"]
    assert np.array_equal(model.features("u1", ["c"]), model.features("u1", ["never-seen"]))
    for items in (100, 5000):
        big = ClickModel(max_items=100)
        for i in range(items):
            big.learn(f"u{i % 7}", f"item-{i}", float(i % 2), genres=("News",))
        assert (len(big.items.n), len(big.item_genres)) == (100, 100)
    smaller = ClickModel(max_items=2)
    smaller.restore(model.snapshot())  # a state saved under a larger cap keeps its most recent items
    assert list(smaller.items.n) == ["d", "b"] and sorted(smaller.item_genres) == ["d"]
