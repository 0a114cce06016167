"""The online click model: stream statistics as features, an online logistic regression on top.

A plain online learner on one-hot user and item ids (river's logistic regression, the baseline) learns
one weight per id and forgets nothing it has not seen often; most MovieLens users and items are seen a
handful of times. Ours turns the stream into a few dense, smoothed statistics that exist from the first
event (how popular the item is, how often it is liked, how often this user likes things, how much this
user likes the item's genres) and learns how to weigh them, so every event teaches every user and item.
State is plain dicts and arrays: it snapshots to data and a restart resumes exactly. Memory follows the users
and items that are active: past ``max_users``, the least recently active user's statistics are forgotten, and that
user is scored like a new one again (the global prior); past ``max_items``, the least recently active item's, so a
catalogue that churns (listings, articles, ads) does not grow the state with every item it ever had.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

FEATURES = (
    "item_rate", "item_log_count", "user_rate", "user_log_count", "genre_affinity", "item_rating", "user_rating",
    "bias",
)
# What data-drift monitors should watch. The log counts grow with the stream's age by construction (an
# item's count only goes up), so any reference sample of them is soon left behind and they would alarm
# for ever; ``bias`` is a constant. The rest are smoothed rates and ratings: bounded, and they move only
# when the traffic does (other users, other items, other tastes).
DRIFT_FEATURES = ("item_rate", "user_rate", "genre_affinity", "item_rating", "user_rating")
MAX_USERS = 100_000  # users whose own statistics a click model keeps by default
MAX_ITEMS = 100_000  # and items


def _logit(p: float) -> float:
    return math.log(p / (1 - p))


class OnlineLogit:
    """Logistic regression by AdaGrad, one step per example; vectorised prediction over candidates.

    Parameters
    ----------
    n_features
        Length of a feature vector.
    lr
        AdaGrad's base learning rate.
    l2
        L2 penalty on the weights.

    Examples
    --------
    >>> import numpy as np
    >>> from models.online.clicks import OnlineLogit
    >>> model = OnlineLogit(2, lr=0.5)
    >>> for _ in range(200):
    ...     model.learn(np.array([[1.0, 1.0], [0.0, 1.0]]), np.array([1.0, 0.0]))
    >>> p = model.predict(np.array([[1.0, 1.0], [0.0, 1.0]]))
    >>> bool(p[0] > 0.8 and p[1] < 0.2)
    True
    """

    def __init__(self, n_features: int, lr: float = 0.1, l2: float = 1e-5) -> None:
        self.n_features, self.lr, self.l2 = n_features, lr, l2
        self.w = np.zeros(n_features)
        self._g2 = np.full(n_features, 1e-8)

    def params(self) -> dict[str, Any]:
        return {"n_features": self.n_features, "lr": self.lr, "l2": self.l2}

    def predict(self, x: np.ndarray) -> np.ndarray:
        """P(positive) for one feature vector or a matrix of them (one row per candidate).

        Parameters
        ----------
        x
            Features, ``n_features`` per row.
        """
        z = np.clip(np.asarray(x, dtype=np.float64) @ self.w, -30, 30)
        return 1.0 / (1.0 + np.exp(-z))

    def learn(self, x: np.ndarray, y: np.ndarray) -> None:
        """Examples in order, one AdaGrad step each (so that a batch equals the same events one by one).

        Parameters
        ----------
        x
            Features, one row per example.
        y
            Labels, 0 or 1.
        """
        for xi, yi in zip(np.atleast_2d(x), np.atleast_1d(y)):
            g = (float(self.predict(xi)) - float(yi)) * xi + self.l2 * self.w
            self._g2 += g * g
            self.w -= self.lr * g / np.sqrt(self._g2)

    def snapshot(self) -> dict[str, Any]:
        return {"w": self.w.tolist(), "g2": self._g2.tolist()}

    def restore(self, state: dict[str, Any]) -> None:
        self.w = np.asarray(state["w"], dtype=np.float64)
        self._g2 = np.asarray(state["g2"], dtype=np.float64)


class _Counts:
    """Smoothed rate and mean rating per key."""

    def __init__(self) -> None:
        self.n: dict[str, float] = {}
        self.pos: dict[str, float] = {}
        self.rating: dict[str, float] = {}

    def add(self, key: str, label: float, rating: float | None) -> None:
        self.n[key] = self.n.get(key, 0.0) + 1
        self.pos[key] = self.pos.get(key, 0.0) + label
        if rating is not None:
            self.rating[key] = self.rating.get(key, 0.0) + rating

    def drop(self, key: str) -> None:
        for table in (self.n, self.pos, self.rating):
            table.pop(key, None)

    def rate(self, key: str, prior: float, strength: float = 5.0) -> float:
        return (self.pos.get(key, 0.0) + prior * strength) / (self.n.get(key, 0.0) + strength)

    def mean_rating(self, key: str, prior: float, strength: float = 5.0) -> float:
        return (self.rating.get(key, 0.0) + prior * strength) / (self.n.get(key, 0.0) + strength)

    def snapshot(self) -> dict[str, Any]:
        return {"n": self.n, "pos": self.pos, "rating": self.rating}

    def restore(self, s: dict[str, Any]) -> None:
        self.n, self.pos, self.rating = dict(s["n"]), dict(s["pos"]), dict(s["rating"])


class ClickModel:
    """P(click | user, item) from stream statistics; ``features`` then ``learn`` per event, in order.

    Parameters
    ----------
    lr, l2
        Of the ``OnlineLogit`` that weighs the features.
    max_users
        Users whose own statistics are kept; past it the least recently active one's are forgotten, so that
        months of new users do not grow the state. ``users.n`` runs from the least recently active user to the
        most, and so does a snapshot's.
    max_items
        Items whose statistics are kept, as for users; a forgotten item is scored like a new one, and the
        recommendations (over the items the model knows) leave it out until it is interacted with again.

    Examples
    --------
    >>> from models.online import ClickModel
    >>> model = ClickModel()
    >>> for _ in range(50):
    ...     model.learn("ann", "m1", 1.0, genres=["Drama"])
    ...     model.learn("ann", "m2", 0.0, genres=["Horror"])
    >>> x = model.features("bob", ["m1", "m2"])
    >>> p = model.logit.predict(x)
    >>> bool(p[0] > p[1])  # a new user: m1 is liked by others, m2 is not
    True
    """

    def __init__(self, lr: float = 0.05, l2: float = 1e-5, max_users: int = MAX_USERS,
                 max_items: int = MAX_ITEMS) -> None:
        if max_users < 1 or max_items < 1:
            raise ValueError(f"max_users and max_items must be at least 1, not {max_users} and {max_items}")
        self.lr, self.l2, self.max_users, self.max_items = lr, l2, max_users, max_items
        self.logit = OnlineLogit(len(FEATURES), lr=lr, l2=l2)
        self.items, self.users, self.user_genres = _Counts(), _Counts(), _Counts()
        self.item_genres: dict[str, list[str]] = {}
        self.total = _Counts()
        self._genres_of: dict[str, set[str]] = {}  # user -> genres of their user_genres keys, forgotten with them

    def params(self) -> dict[str, Any]:
        return {"lr": self.lr, "l2": self.l2, "max_users": self.max_users, "max_items": self.max_items}

    def features(self, user: str, items: Sequence[str], genres: Sequence[Sequence[str]] | None = None) -> np.ndarray:
        """One row per candidate item, columns ``FEATURES``; genres default to those seen with the item.

        Parameters
        ----------
        user
            The user.
        items
            Candidate items.
        genres
            Each item's genres, when the event carries them.
        """
        prior = self.total.rate("all", 0.5, 1.0)
        prior_rating = self.total.mean_rating("all", 3.5, 1.0)
        user_rate = self.users.rate(user, prior)
        user_rating = self.users.mean_rating(user, prior_rating)
        rows = np.empty((len(items), len(FEATURES)))
        for r, item in enumerate(items):
            gs = genres[r] if genres is not None else self.item_genres.get(item, [])
            affinity = (
                sum(self.user_genres.rate(f"{user}|{g}", user_rate) for g in gs) / len(gs) if gs else user_rate
            )
            rows[r] = (
                _logit(self.items.rate(item, prior)),
                math.log1p(self.items.n.get(item, 0.0)),
                _logit(user_rate),
                math.log1p(self.users.n.get(user, 0.0)),
                _logit(min(max(affinity, 1e-3), 1 - 1e-3)),
                self.items.mean_rating(item, prior_rating) - prior_rating,
                user_rating - prior_rating,
                1.0,
            )
        return rows

    def predict(self, user: str, items: Sequence[str], genres: Sequence[Sequence[str]] | None = None) -> np.ndarray:
        """P(click) of each candidate item for the user.

        Parameters
        ----------
        user, items, genres
            As for ``features``.
        """
        return self.logit.predict(self.features(user, items, genres))

    def rank_scores(self, user: str, items: Sequence[str], genres: Sequence[Sequence[str]] | None = None) -> np.ndarray:
        """For top-k: P(the user picks the item) times P(likes it | picks). The first factor is the item's
        share of past interactions; the model itself only learns the second, from items people chose.

        Parameters
        ----------
        user, items, genres
            As for ``features``.
        """
        picks = np.array([self.items.n.get(i, 0.0) + 1.0 for i in items])
        return picks * self.predict(user, items, genres)

    def learn(self, user: str, item: str, label: float, genres: Sequence[str] = (), rating: float | None = None,
              features: np.ndarray | None = None) -> None:
        """Learn from one outcome; pass the ``features`` used to predict it to save recomputing them.

        A NaN or infinite label or rating is refused (``ValueError``) before anything changes: it would turn the
        shared statistics, and so every user's predictions, into NaN for good.

        Parameters
        ----------
        user, item
            Who was shown what.
        label
            1 for a click (or a liked rating), 0 for none.
        genres
            The item's genres, remembered for later candidates.
        rating
            The rating, when the event carries one.
        features
            The features the prediction used; recomputed when not given.
        """
        if not math.isfinite(label) or (rating is not None and not math.isfinite(rating)):
            raise ValueError(f"label {label!r} and rating {rating!r} must be finite; nothing learned")
        x = self.features(user, [item], [genres] if genres else None)[0] if features is None else features
        self.logit.learn(x, np.array([label]))
        if genres:
            self.item_genres[item] = list(genres)
        self.items.n[item] = self.items.n.pop(item, 0.0)  # to the most recently active end
        self.items.add(item, label, rating)
        self.users.n[user] = self.users.n.pop(user, 0.0)  # to the most recently active end
        self.users.add(user, label, rating)
        self.total.add("all", label, rating)
        gs = genres or self.item_genres.get(item, [])
        for g in gs:
            self.user_genres.add(f"{user}|{g}", label, None)
        self._genres_of.setdefault(user, set()).update(gs)
        self._bound()

    def _bound(self) -> None:
        while len(self.users.n) > self.max_users:
            user = next(iter(self.users.n))
            self.users.drop(user)
            for g in self._genres_of.pop(user, ()):
                self.user_genres.drop(f"{user}|{g}")
        while len(self.items.n) > self.max_items:
            item = next(iter(self.items.n))
            self.items.drop(item)
            self.item_genres.pop(item, None)

    def snapshot(self) -> dict[str, Any]:
        return {"logit": self.logit.snapshot(), "items": self.items.snapshot(), "users": self.users.snapshot(),
                "user_genres": self.user_genres.snapshot(), "item_genres": self.item_genres,
                "total": self.total.snapshot()}

    def restore(self, s: dict[str, Any]) -> None:
        self.logit.restore(s["logit"])
        for name in ("items", "users", "user_genres", "total"):
            getattr(self, name).restore(s[name])
        self.item_genres = {k: list(v) for k, v in s["item_genres"].items()}
        self._genres_of = {}
        for key in self.user_genres.n:
            user, _, g = key.rpartition("|")  # genres never hold "|" (events carry them "|"-separated); users may
            self._genres_of.setdefault(user, set()).add(g)
        self._bound()  # a state saved under a larger cap, or before there was one, keeps its most recent ones


class PopularityModel:
    """The baseline every recommender must beat: how many times an item was liked so far."""

    def __init__(self) -> None:
        self.counts = _Counts()

    def predict(self, user: str, items: Sequence[str]) -> np.ndarray:
        """How often each item was liked so far (the same for every user).

        Parameters
        ----------
        user
            Ignored: popularity is the same for everyone.
        items
            Candidate items.
        """
        return np.array([self.counts.pos.get(i, 0.0) for i in items])

    def learn(self, user: str, item: str, label: float) -> None:
        """Count one outcome.

        Parameters
        ----------
        user
            Ignored.
        item
            The item.
        label
            1 for liked, 0 for not.
        """
        self.counts.add(item, label, None)
