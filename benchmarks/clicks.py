"""Click benchmark: prequential quality on the MovieLens replay, our online model beside baselines.

Every rating, in event time, is first predicted by each model and then learned (test-then-train), so
no model ever scores an event it has learned from. AUC is over every event's P(liked). Hit@10 follows
the sampled-candidates protocol: for every ``hit_every``-th liked rating, the liked movie is ranked
among ``negatives`` movies drawn at random from those seen so far (and not rated by the user so far);
a hit is a rank under 10 (ours ranks by ``ClickModel.rank_scores``). All three models score the same candidates. Models: ours
(``models.online.ClickModel``), river's LogisticRegression on one-hot user, item and genres (the plain
river learner), and popularity (number of likes so far).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import typer

from connectors.movielens import load
from models.metrics import auc
from models.online import ClickModel, PopularityModel


def _river_x(user: str, item: str, genres: tuple[str, ...]) -> dict[str, float]:
    x = {f"u={user}": 1.0, f"i={item}": 1.0}
    for g in genres:
        x[f"g={g}"] = 1.0
    return x


def run(json_path: Path | None = None, limit: int | None = None, hit_every: int = 10, negatives: int = 99,
        seed: int = 0) -> dict[str, Any]:
    from river import linear_model, optim

    ratings = load(limit)
    rng = np.random.default_rng(seed)
    ours, pop = ClickModel(), PopularityModel()
    river_lr = linear_model.LogisticRegression(optimizer=optim.SGD(0.05))
    labels, s_ours, s_river, s_pop = [], [], [], []
    hits = {"online": 0, "river": 0, "popularity": 0}
    trials = 0
    seen_items: list[str] = []
    seen_set: set[str] = set()
    genres_of: dict[str, tuple[str, ...]] = {}
    rated: dict[str, set[str]] = {}
    liked_count = 0
    t0 = time.perf_counter()
    for r in ratings:
        x = ours.features(r.user, [r.item], [r.genres])
        p_ours = float(ours.logit.predict(x)[0])
        p_river = float(river_lr.predict_proba_one(_river_x(r.user, r.item, r.genres)).get(True, 0.5))
        p_pop = float(pop.predict(r.user, [r.item])[0])
        if r.liked:
            liked_count += 1
            if liked_count % hit_every == 0 and len(seen_items) > negatives * 2:
                mine = rated.get(r.user, set())
                cands: list[str] = []
                while len(cands) < negatives:
                    c = seen_items[int(rng.integers(len(seen_items)))]
                    if c != r.item and c not in mine and c not in cands:
                        cands.append(c)
                cands.append(r.item)
                gs = [genres_of[c] if c != r.item else r.genres for c in cands]
                sc = {
                    "online": ours.rank_scores(r.user, cands, gs),
                    "river": np.array([river_lr.predict_proba_one(_river_x(r.user, c, g)).get(True, 0.5)
                                       for c, g in zip(cands, gs)]),
                    "popularity": pop.predict(r.user, cands),
                }
                trials += 1
                for name, s in sc.items():
                    # rank of the true item (last) among candidates; ties count against it
                    if int(np.sum(s[:-1] >= s[-1])) < 10:
                        hits[name] += 1
        labels.append(r.liked)
        s_ours.append(p_ours)
        s_river.append(p_river)
        s_pop.append(p_pop)
        ours.learn(r.user, r.item, r.liked, r.genres, r.rating, features=x[0])
        river_lr.learn_one(_river_x(r.user, r.item, r.genres), bool(r.liked))
        pop.learn(r.user, r.item, r.liked)
        rated.setdefault(r.user, set()).add(r.item)
        genres_of[r.item] = r.genres
        if r.item not in seen_set:
            seen_set.add(r.item)
            seen_items.append(r.item)
    y = np.array(labels)
    result = {
        "online_auc": round(auc(y, np.array(s_ours)) or 0.0, 4),
        "river_auc": round(auc(y, np.array(s_river)) or 0.0, 4),
        "popularity_auc": round(auc(y, np.array(s_pop)) or 0.0, 4),
        "online_hit10": round(hits["online"] / max(trials, 1), 4),
        "river_hit10": round(hits["river"] / max(trials, 1), 4),
        "popularity_hit10": round(hits["popularity"] / max(trials, 1), 4),
        "events": len(ratings),
        "liked_fraction": round(float(y.mean()), 4),
        "hit10_trials": trials,
        "hit10_candidates": negatives + 1,
        "seconds": round(time.perf_counter() - t0, 1),
    }
    if json_path is not None:
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps(result, indent=2) + "\n")
    return result


def command(
    json_path: Annotated[Path | None, typer.Option("--json", help="write the results as JSON")] = None,
    limit: Annotated[int | None, typer.Option("--limit", min=1000, help="replay only the first N ratings")] = None,
    hit_every: Annotated[int, typer.Option("--hit-every", min=1, help="rank every N-th liked rating")] = 10,
) -> None:
    """Prequential AUC and hit@10 on the MovieLens replay: online model, river, popularity."""
    res = run(json_path, limit, hit_every)
    for k, v in res.items():
        print(f"{k:>18}  {v}")


if __name__ == "__main__":
    typer.run(command)
