"""The MovieLens ratings replayed to the ``clicks`` topic as impressions and clicks, in event-time order.

Event times are the ratings' own (1990s timestamps), so a replay is the same stream every time and its
event ids repeat: replaying twice, or after a crash, gives the flows duplicates they already drop. The
``rate`` only paces publishing (ratings per wall-clock second); the flows run on event time, so a fast
replay of months of ratings gives the same predictions and windows as a slow one. ``invert_after``
turns tastes upside down from that rating on (a liked movie becomes a disliked one and the other way
round): a concept drift at a known point, for the demo and the tests of drift and retraining.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Annotated

import typer

from connectors.kafka import EventProducer, KafkaSettings, create_topics
from schemas import CLICK
from schemas.topics import dlq_topic

if TYPE_CHECKING:
    from connectors.movielens import Rating

TOPIC = "clicks"


@dataclass
class ClickReplayStats:
    """What a MovieLens replay sent.

    Parameters
    ----------
    ratings
        Ratings replayed.
    impressions, clicks
        ``click`` events of each action produced.
    first_time_ms, last_time_ms
        The event-time span covered.
    """

    ratings: int = 0
    impressions: int = 0
    clicks: int = 0
    first_time_ms: int | None = None
    last_time_ms: int | None = None

    @property
    def events(self) -> int:
        return self.impressions + self.clicks


def replay_ratings(*, count: int | None = None, skip: int = 0, invert_after: int | None = None) -> list[Rating]:
    """The ratings a replay sends, in event-time order; from ``invert_after`` on (counted within the
    replay) a liked movie is rated 1 and any other 5.

    Parameters
    ----------
    count
        How many ratings (all by default).
    skip
        Ratings to skip first, in event-time order.
    invert_after
        Invert tastes after this many ratings: a concept drift on purpose, for the drift and retraining
        flows to catch.
    """
    from connectors.movielens import load

    if (count is not None and count < 0) or skip < 0 or (invert_after is not None and invert_after < 0):
        raise ValueError("count, skip and invert_after must not be negative")
    ratings = load(limit=None if count is None else skip + count)[skip:]
    if invert_after is None:
        return ratings
    return ratings[:invert_after] + [replace(r, rating=1.0 if r.liked else 5.0) for r in ratings[invert_after:]]


def produce_clicks(
    settings: KafkaSettings,
    *,
    count: int | None = None,
    skip: int = 0,
    rate: float = 0.0,
    invert_after: int | None = None,
    on_progress: Callable[[ClickReplayStats], None] | None = None,
    stop: threading.Event | None = None,
) -> ClickReplayStats:
    """Publish ``count`` ratings (all by default) from the ``skip``-th on, at ``rate`` ratings per second
    (0: as fast as the broker takes them); returns what was sent, once the broker has it all.

    Parameters
    ----------
    settings
        Kafka settings; ``clicks`` and its dead-letter topic are created if missing.
    count, skip, invert_after
        As for ``replay_ratings``.
    rate
        Ratings per second; 0 for as fast as possible.
    on_progress
        Called now and then with the stats so far.
    stop
        Set, it ends the replay early (between two ratings); what was sent is flushed and counted all the same.
    """
    from connectors.movielens import click_events

    if rate < 0:
        raise ValueError("rate must not be negative")
    ratings = replay_ratings(count=count, skip=skip, invert_after=invert_after)
    create_topics(settings, [TOPIC, dlq_topic(TOPIC)])
    stats = ClickReplayStats()
    stop = stop or threading.Event()
    start = time.monotonic()
    last_progress = 0.0
    with EventProducer(settings) as producer:
        for rating, events in ((r, list(click_events([r]))) for r in ratings):
            if rate > 0:
                stop.wait(start + stats.ratings / rate - time.monotonic())
            if stop.is_set():
                break
            for rec in events:
                producer.produce(TOPIC, CLICK, rec, key=rec["user_id"])
                if rec["action"] == "IMPRESSION":
                    stats.impressions += 1
                else:
                    stats.clicks += 1
            stats.ratings += 1
            stats.first_time_ms = stats.first_time_ms if stats.first_time_ms is not None else rating.time_ms
            stats.last_time_ms = rating.time_ms
            if on_progress is not None and time.monotonic() - last_progress >= 0.25:
                last_progress = time.monotonic()
                on_progress(stats)
        producer.flush(60.0)
    return stats


def command(
    count: Annotated[int | None, typer.Option(help="Ratings to replay (default: all 100k).")] = None,
    skip: Annotated[int, typer.Option(help="Start at this rating (in event-time order).")] = 0,
    rate: Annotated[float, typer.Option(help="Ratings per second (0: as fast as possible).")] = 1000.0,
    invert_after: Annotated[int | None, typer.Option(
        help="Invert tastes from this rating on: a concept drift at a known point.")] = None,
) -> None:
    """Replay the MovieLens ratings to the clicks topic as impressions and clicks, in event-time order."""
    from rich.progress import Progress, TextColumn, TimeElapsedColumn

    from streams.producers import stop_on_signal

    with (stop_on_signal() as stop,
          Progress(TextColumn("{task.description}"), TimeElapsedColumn(), transient=True) as bar):
        task = bar.add_task("replaying")

        def show(s: ClickReplayStats) -> None:
            bar.update(task, description=f"replaying: {s.ratings} ratings, {s.impressions} impressions, "
                                         f"{s.clicks} clicks")

        stats = produce_clicks(KafkaSettings(), count=count, skip=skip, rate=rate, invert_after=invert_after,
                               on_progress=show, stop=stop)
    if stop.is_set():
        typer.echo("produce clicks stopped", err=True)
    typer.echo(f"produced {stats.events} click events ({stats.impressions} impressions, {stats.clicks} clicks) "
               f"from {stats.ratings} ratings", err=True)
