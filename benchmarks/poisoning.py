"""Poisoning benchmark: the click model under a click-flood attack, without and with the model-security defence.

The MovieLens replay (``connectors.movielens``, as ``eddyline bench clicks``) is the honest traffic, sent by
``producers`` producers (users are spread over them by id, as services behind a load balancer would). From
``attack_at`` of the stream on, an attacker adds ``ratio`` events per honest event, each an impression of an item
already seen, labelled against the item's current consensus (liked when most dislike it, disliked when most like
it): the labels that move an online learner furthest. Two attackers:

- ``bot``: a new producer with ``fake_users`` fake accounts;
- ``compromised``: one honest producer (``web-0``) that sends the attack under its own name, with its real
  users' ids, beside its honest traffic.

Each run replays the same stream prequentially (``ClickModel``: predict, then learn) three ways: clean (no
attack), attacked, and attacked with the defence (``models.security.PoisonDetector`` watching every event; an
event from a quarantined producer or user is still scored but not learned, ``lag`` events after the verdict, the
time the quarantine takes to reach the click flow through Kafka). AUC is over the honest events from the attack
start on, with their true labels. Also reported: attack events seen and event-time seconds until the attacker
was quarantined, attack events the model learned anyway, and honest sources quarantined (false quarantines)
with the honest events they kept from learning.
"""

from __future__ import annotations

import json
import time
import zlib
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import typer

from connectors.movielens import Rating, load
from models.metrics import auc
from models.online import ClickModel
from models.security import PoisonDetector, PoisonLimits

ATTACKERS = ("bot", "compromised")


@dataclass(frozen=True, slots=True)
class _Event:
    rating: Rating
    producer: str
    label: float  # what the event says (an attack's label is a lie)
    attack: bool


def _producer(user: str, producers: int) -> str:
    return f"web-{zlib.crc32(user.encode()) % producers}"


def _stream(ratings: list[Rating], attacker: str | None, *, producers: int, attack_at: float, ratio: float,
            fake_users: int, model: ClickModel, seed: int) -> Iterator[_Event]:
    """Honest events, and the attacker's after ``attack_at``; attack labels read the model's item stats as they
    are when the event is made (the attacker watches the public consensus)."""
    rng = np.random.default_rng(seed)
    start = int(len(ratings) * attack_at)
    seen: list[tuple[str, tuple[str, ...]]] = []
    known: set[str] = set()
    victim_users = [r.user for r in ratings[:start] if _producer(r.user, producers) == "web-0"]
    debt = 0.0
    for i, r in enumerate(ratings):
        if attacker is not None and i >= start and seen:
            debt += ratio
            while debt >= 1:
                debt -= 1
                item, genres = seen[int(rng.integers(len(seen)))]
                liked = 0.0 if model.items.rate(item, 0.5) >= 0.5 else 1.0
                if attacker == "bot":
                    user, producer = f"bot-{int(rng.integers(fake_users))}", "bot"
                else:
                    user, producer = victim_users[int(rng.integers(len(victim_users)))], "web-0"
                fake = Rating(user, item, 5.0 if liked else 1.0, genres, r.time_ms)
                yield _Event(fake, producer, liked, True)
        yield _Event(r, _producer(r.user, producers), r.liked, False)
        if r.item not in known:
            known.add(r.item)
            seen.append((r.item, r.genres))


def _replay(ratings: list[Rating], attacker: str | None, defend: bool, args: dict[str, Any]) -> dict[str, Any]:
    model = ClickModel()
    detector = PoisonDetector(PoisonLimits()) if defend else None
    start = int(len(ratings) * args["attack_at"])
    labels: list[float] = []
    scores: list[float] = []
    pending: deque[tuple[int, str]] = deque()  # (event index it takes effect at, source)
    blocked: set[str] = set()
    verdicts: list[dict[str, Any]] = []
    attack_first_ms: int | None = None
    attack_users: set[str] = set()
    attack_seen = attack_learned = honest_blocked = honest_seen = 0
    t0 = time.perf_counter()
    stream = _stream(ratings, attacker, producers=args["producers"], attack_at=args["attack_at"],
                     ratio=args["ratio"], fake_users=args["fake_users"], model=model, seed=args["seed"])
    for i, ev in enumerate(stream):
        r = ev.rating
        while pending and pending[0][0] <= i:
            blocked.add(pending.popleft()[1])
        if ev.attack:
            attack_seen += 1
            attack_users.add(f"user:{r.user}")
            attack_first_ms = r.time_ms if attack_first_ms is None else attack_first_ms
        else:
            honest_seen += 1
        x = model.features(r.user, [r.item], [r.genres])
        if not ev.attack and honest_seen > start:
            labels.append(r.liked)
            scores.append(float(model.logit.predict(x)[0]))
        if detector is not None:
            for v in detector.observe(r.time_ms, r.item, ev.label, producer=ev.producer, user=r.user):
                pending.append((i + args["lag"], v.source))
                verdicts.append({"source": v.source, "rule": v.rule, "reason": v.reason, "events": v.events,
                                 "attack_events_seen": attack_seen, "time_ms": v.time_ms})
        if f"producer:{ev.producer}" in blocked or f"user:{r.user}" in blocked:
            honest_blocked += not ev.attack
            continue
        attack_learned += ev.attack
        model.learn(r.user, r.item, ev.label, r.genres, r.rating, features=x[0])
    attackers = {"producer:bot"} if attacker == "bot" else {"producer:web-0"} if attacker else set()
    caught = [v for v in verdicts if v["source"] in attackers or v["source"].startswith("user:bot-")]
    first = min(caught, key=lambda v: v["time_ms"]) if caught else None
    false = [v for v in verdicts if v not in caught]
    used = [v for v in false if v["source"] in attack_users]  # real accounts the attacker sent events as
    return {
        "auc": round(auc(np.array(labels), np.array(scores)) or 0.0, 4),
        "attack_events": attack_seen,
        "attack_events_learned": attack_learned,
        "quarantined": len(verdicts),
        "attacker_quarantined": first is not None,
        "events_to_quarantine": first["attack_events_seen"] if first else None,
        "seconds_to_quarantine": (first["time_ms"] - attack_first_ms) / 1000 if first and attack_first_ms else None,
        "rule": first["rule"] if first else None,
        "reason": first["reason"] if first else None,
        "false_quarantines": len(false),
        "false_quarantined_users": sum(v["source"].startswith("user:") for v in false),
        "false_quarantined_users_the_attack_used": len(used),
        "false_quarantined_producers": sum(v["source"].startswith("producer:") for v in false),
        "false_quarantine_reasons": [v["reason"] for v in false[:10]],
        "honest_events_not_learned": honest_blocked,
        "seconds": round(time.perf_counter() - t0, 1),
    }


def run(json_path: Path | None = None, limit: int | None = None, ratio: float = 1.0, attack_at: float = 0.3,
        producers: int = 4, fake_users: int = 50, lag: int = 500, seed: int = 0) -> dict[str, Any]:
    """Clean, attacked and defended replays for each attacker; the summary, also written to ``json_path``."""
    ratings = load(limit)
    args = {"ratio": ratio, "attack_at": attack_at, "producers": producers, "fake_users": fake_users, "lag": lag,
            "seed": seed}
    result: dict[str, Any] = {"events": len(ratings), **args,
                              "clean": _replay(ratings, None, False, args),
                              "clean_defended": _replay(ratings, None, True, args)}
    for attacker in ATTACKERS:
        result[attacker] = {"attacked": _replay(ratings, attacker, False, args),
                            "defended": _replay(ratings, attacker, True, args)}
    if json_path is not None:
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps(result, indent=2) + "\n")
    return result


def print_table(result: dict[str, Any], echo: Callable[[str], None] = print) -> None:
    clean, guarded = result["clean"], result["clean_defended"]
    echo(f"{result['events']} honest events; attack from {result['attack_at']:.0%} at {result['ratio']} per honest "
         f"event; verdicts take effect {result['lag']} events later")
    echo(f"clean AUC {clean['auc']:.4f}; with the defence on clean traffic {guarded['auc']:.4f} "
         f"({guarded['false_quarantines']} false quarantines, {guarded['honest_events_not_learned']} honest events "
         "not learned)")
    echo(f"{'attacker':<13}{'attacked':>9}{'defended':>9}{'events':>8}{'seconds':>10}{'learned':>9}{'false q':>8}"
         f"{'honest kept out':>16}  rule")
    for name in ATTACKERS:
        a, d = result[name]["attacked"], result[name]["defended"]
        secs = f"{d['seconds_to_quarantine']:.0f}" if d["seconds_to_quarantine"] is not None else "-"
        echo(f"{name:<13}{a['auc']:>9.4f}{d['auc']:>9.4f}{d['events_to_quarantine'] or '-':>8}{secs:>10}"
             f"{d['attack_events_learned']:>9}{d['false_quarantines']:>8}{d['honest_events_not_learned']:>16}  "
             f"{d['rule'] or '-'}")


def command(
    json_path: Annotated[Path | None, typer.Option("--json", help="write the results as JSON")] = None,
    limit: Annotated[int | None, typer.Option("--limit", min=1000, help="replay only the first N ratings")] = None,
    ratio: Annotated[float, typer.Option("--ratio", min=0.01, help="attack events per honest event")] = 1.0,
    lag: Annotated[int, typer.Option("--lag", min=0,
                                     help="events between a verdict and the click flow obeying it")] = 500,
) -> None:
    """AUC of the online click model on MovieLens: clean, under a click-flood attack, and with the defence."""
    print_table(run(json_path, limit, ratio=ratio, lag=lag))


if __name__ == "__main__":
    typer.run(command)
