"""Leave-one-category-out cross-validation of anomaly detectors under NAB's scoring.

A detector's NAB score with parameters tuned on the scored files says how well it fits those files, not
how it does on series it has never seen. Here every choice (which parameter set, and NAB's detection
threshold per profile) is made on all categories but one and scored on the held-out one; the pooled
score sums the held-out raw scores of every fold and normalises them like NAB normalises a corpus.
Candidates are scored once per file (the caller caches them), so folds only re-run the scorer.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import numpy as np

from models.evaluation.nab import CostMatrix, score_corpus

Scores = Mapping[str, tuple[np.ndarray, np.ndarray]]  # '<category>/<file>.csv' -> (timestamps, anomaly scores)


@dataclass(frozen=True)
class Fold:
    """One split: the held-out category's files are scored, the rest choose."""

    held_out: str
    train: tuple[str, ...]
    test: tuple[str, ...]


@dataclass(frozen=True)
class FoldResult:
    """What one fold chose on its training categories and what that scored on the held-out one.

    ``score`` is None when the held-out category has no labelled window (NAB cannot normalise it; its false
    positives still count in the pooled score).
    """

    held_out: str
    profile: str
    candidate: str
    threshold: float
    train_score: float
    score: float | None
    raw: float
    null: float
    perfect: float
    fp: int
    files: int


def category(path: str) -> str:
    """The category of ``'<category>/<file>.csv'``."""
    if "/" not in path:
        raise ValueError(f"{path!r} is not '<category>/<file>'")
    return path.split("/", 1)[0]


def leave_one_category_out(paths: Iterable[str]) -> list[Fold]:
    """One fold per category, holding that category's files out.

    Parameters
    ----------
    paths
        File keys ``'<category>/<file>.csv'``; at least two categories are needed.

    Examples
    --------
    >>> [(f.held_out, f.train) for f in leave_one_category_out(["a/1.csv", "b/2.csv", "b/3.csv"])]
    [('a', ('b/2.csv', 'b/3.csv')), ('b', ('a/1.csv',))]
    """
    paths = sorted(set(paths))
    cats = sorted({category(p) for p in paths})
    if len(cats) < 2:
        raise ValueError(f"cross-validation over categories needs at least two; found {cats or 'none'}")
    return [
        Fold(c, tuple(p for p in paths if category(p) != c), tuple(p for p in paths if category(p) == c)) for c in cats
    ]


def _subset(scores: Scores, keys: tuple[str, ...]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    return {k: scores[k] for k in keys}


def cross_validate(
    candidates: Mapping[str, Scores],
    windows: Mapping[str, list[tuple[np.datetime64, np.datetime64]]],
    profiles: Mapping[str, CostMatrix],
) -> dict[str, list[FoldResult]]:
    """Per profile, each fold's choice among ``candidates`` (and threshold) made on the training categories.

    Parameters
    ----------
    candidates
        Per candidate name (a parameter set), every file's scores; all candidates must cover the same files.
        On a tie in training score the earlier candidate wins, so list the defaults first.
    windows
        Labelled windows per file.
    profiles
        NAB cost matrices; each profile makes its own choices.
    """
    if not candidates:
        raise ValueError("no candidates to choose from")
    names = list(candidates)
    files = set(candidates[names[0]])
    for n in names[1:]:
        if set(candidates[n]) != files:
            raise ValueError(f"candidate {n!r} covers other files than {names[0]!r}")
    out: dict[str, list[FoldResult]] = {p: [] for p in profiles}
    for fold in leave_one_category_out(files):
        trained = {n: score_corpus(_subset(candidates[n], fold.train), windows, profiles) for n in names}
        for p in profiles:
            best = max(names, key=lambda n: (trained[n][p].normalized, -names.index(n)))
            thr = trained[best][p].threshold
            test = score_corpus(_subset(candidates[best], fold.test), windows, {p: profiles[p]}, {p: thr})[p]
            has_windows = test.perfect != test.null
            out[p].append(FoldResult(
                held_out=fold.held_out, profile=p, candidate=best, threshold=thr,
                train_score=trained[best][p].normalized, score=test.normalized if has_windows else None,
                raw=test.raw, null=test.null, perfect=test.perfect,
                fp=sum(f.fp for f in test.files.values()), files=len(fold.test),
            ))
    return out


def pooled(folds: list[FoldResult]) -> float:
    """The held-out folds together, normalised like a NAB corpus: ``100 * (raw - null) / (perfect - null)``."""
    raw = sum(f.raw for f in folds)
    null = sum(f.null for f in folds)
    perfect = sum(f.perfect for f in folds)
    if perfect == null:
        raise ValueError("no labelled window in any fold")
    return 100.0 * (raw - null) / (perfect - null)
