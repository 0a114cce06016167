"""A robustness suite made from a NAB-layout corpus by label-preserving perturbations of its sampling.

Why: fleets drop readings and their clocks jitter, and the 41 dev files are regularly sampled, so neither a
detector's step and cycle logic nor its scores are ever tested on them under either. The same files, with
readings dropped at random or their timestamps moved, keep their labels (NAB's windows are spans of time, and
the scorer keeps each kept reading's original timestamp), so a detector's score there, next to its score on the
files as they are, says what irregular sampling costs it. Only the detector sees the moved timestamps.

Perturbations (``PERTURBATIONS``), each seeded per file, so the same seed always gives the same series:

- ``drop``: each reading after the first and outside the labelled windows is dropped with this probability (a flaky
  link); readings inside a window are kept, so every labelled anomaly stays in the data (dropping a one-reading
  spike would remove the anomaly, not test the detector);
- ``jitter``: each kept reading's timestamp moves by a uniform offset of up to this fraction of the file's median
  gap, either way (a clock that jitters; order is kept).

Settings are chosen on ``TUNE_SEED`` and reported on ``REPORT_SEED``; like the synthetic suites this is our own
construction, no estimate of NAB's held-out categories.

    python -m benchmarks.nab_robustness --data ../shared/data/nab --detector seasonal --detector likelihood
    python -m benchmarks.nab_robustness --data .eddyline/nab-synthetic/fleet-seed1 --detector seasonal-variants@phase=1
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import typer

from benchmarks.nab import Corpus, Windows
from models.evaluation import nab

TUNE_SEED = 0
REPORT_SEED = 1
PERTURBATIONS: dict[str, dict[str, float]] = {
    "drop 10%": {"drop": 0.1},
    "drop 30%": {"drop": 0.3},
    "jitter 20%": {"jitter": 0.2},
    "drop 20% + jitter 20%": {"drop": 0.2, "jitter": 0.2},
}

Scorer = Callable[[np.ndarray, np.ndarray], np.ndarray]  # (values, epoch ms) -> anomaly scores of a fresh detector


def perturb(series: Corpus, drop: float = 0.0, jitter: float = 0.0, seed: int = TUNE_SEED,
            windows: Windows | None = None) -> Corpus:
    """The corpus with readings dropped and timestamps moved, each file by its own generator (``seed``, the file's
    place in sorted order); the NAB timestamps of the kept readings are the original ones.

    Parameters
    ----------
    series
        ``rel -> (NAB timestamps, epoch ms, values)``, as ``benchmarks.nab.load_corpus`` gives it.
    drop
        Probability that a reading after the first is dropped.
    jitter
        Largest move of a timestamp, as a fraction of the file's median gap between readings.
    seed
        Seeds every file's generator.
    windows
        Labelled windows: readings inside them are never dropped.
    """
    if not 0.0 <= drop < 1.0 or jitter < 0.0:
        raise ValueError(f"drop must be in [0, 1) and jitter at least 0; got drop={drop}, jitter={jitter}")
    out: Corpus = {}
    for j, rel in enumerate(sorted(series)):
        ts, ms, values = series[rel]
        rng = np.random.default_rng([seed, j])
        keep = rng.random(values.shape[0]) >= drop
        keep[0] = True
        for lo, hi in nab.window_indices(ts, (windows or {}).get(rel, [])):
            keep[lo:hi + 1] = True
        moved = ms[keep].copy()
        if jitter > 0.0 and ms.shape[0] > 1:
            gap = float(np.median(np.diff(ms)))
            moved = moved + np.round(rng.uniform(-jitter, jitter, moved.shape[0]) * gap).astype(np.int64)
            moved = np.maximum.accumulate(moved)  # a reading never arrives before the one before it
        out[rel] = (ts[keep], moved, values[keep])
    return out


def score(series: Corpus, windows: Windows, profiles: Mapping[str, nab.CostMatrix], scorer: Scorer,
          seed: int = REPORT_SEED) -> dict[str, dict[str, float]]:
    """NAB's normalised score per profile on the corpus as it is (``"as is"``) and under each perturbation.

    Parameters
    ----------
    series, windows, profiles
        As ``benchmarks.nab.load_corpus`` gives them.
    scorer
        Scores one whole series with a fresh detector.
    seed
        The perturbations' seed.
    """
    out = {}
    for name, kw in {"as is": {}, **PERTURBATIONS}.items():
        corpus = perturb(series, seed=seed, windows=windows, **kw) if kw else series
        results = {rel: (ts, scorer(v, ms)) for rel, (ts, ms, v) in corpus.items()}
        out[name] = {p: round(r.normalized, 2) for p, r in nab.score_corpus(results, windows, profiles).items()}
    return out


def command(
    data: Annotated[list[Path], typer.Option("--data", help="NAB-layout directories (the dev files, a written suite)")],
    detector: Annotated[list[str] | None, typer.Option(
        "--detector", help="NAME or NAME@PARAM=VALUE,... as in benchmarks.nab_synthetic (default: seasonal)")] = None,
    seed: Annotated[int, typer.Option("--seed", help="the perturbations' seed")] = REPORT_SEED,
    json_path: Annotated[Path | None, typer.Option("--json", help="write the scores as JSON")] = None,
) -> None:
    """Score detectors on each corpus as it is and under each perturbation (standard profile)."""
    from benchmarks.nab import load_corpus
    from benchmarks.nab_synthetic import detector_builder, label_params

    report: dict[str, dict[str, Any]] = {}
    for where in data:
        series, windows, profiles = load_corpus(where)
        report[str(where)] = {}
        for label in detector or ["seasonal"]:
            build, params = detector_builder(label.split("@")[0]), label_params(label)
            scores = score(series, windows, {"standard": profiles["standard"]},
                           lambda v, ms, build=build, params=params: build(**params).score_learn(v, ms), seed)
            report[str(where)][label] = {name: s["standard"] for name, s in scores.items()}
            print(where, label, " ".join(f"{name}: {s:.2f}" for name, s in report[str(where)][label].items()))
    if json_path is not None:
        json_path.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    typer.run(command)
