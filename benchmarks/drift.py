"""Drift benchmark: detection delay and false alarms on synthetic streams with known drift points.

Every stream starts with 5,000 stationary values (so every detector is calibrated) and then changes
at fixed points, abruptly or along a linear ramp. Five families: the mean and the spread of a Gaussian
series, each abrupt and gradual, and a concept drift in the labels of a classification stream, where
the detectors watch the 0/1 errors of an online logistic regression that predicts, then learns.

Scoring, the same for every detector: a drift starting at ``d`` whose transition ends at ``e`` is
detected by the first alarm in ``[d, e + tolerance]``; the delay is that alarm's position minus ``d``.
Further alarms inside the same window are counted as ``redundant``; alarms outside every window are
false alarms. ``mean_delay`` averages over the drifts a detector caught, so a detector that misses the
hard ones looks quicker; ``mean_delay_both_detected`` and ``baseline_delay_both_detected`` are its and ADWIN's
mean delays over the drifts both caught. ``ours`` is ``models.drift.ensemble.DriftEnsemble`` (self-starting CUSUM + ADWIN, both restarted at
either one's alarm; on a 0/1 error stream both count only rises of the error rate, and ADWIN's ``delta`` is
0.01 there; no alarm counts until the stream has settled);
``ours_strict`` is the ensemble as it was before (ADWIN at 0.0005 on 0/1 streams too, no warm-up), so that
the table shows what the looser ADWIN on error streams buys;
``adwin`` is river's ADWIN alone; ``adwin_rises`` is ADWIN with the same rises-only rule on 0/1 streams, so
that the table shows what that rule buys apart from the ensemble.

A second family of streams we did not write: river's own concept-drift generators (SEA, Agrawal, STAGGER),
four concepts of one generator joined by ``river.datasets.synth.ConceptDriftStream`` at known positions,
abrupt (a 50-sample sigmoid, river's narrowest that does not overflow) and gradual (1,000 samples); the
monitored stream is the prequential 0/1 error of river's ``HoeffdingTreeClassifier`` (predict, then learn).
A drift's window there is its sigmoid's ``[position - width/2, position + width/2]``.

Every detector sees the same streams. Each detector's settings (``SETTINGS``, its defaults first) are chosen
on seeds that are not reported (``TUNE_SEEDS``), over both families together, by detections minus false
alarms (ties: fewer false alarms, then the smaller mean delay); the report then runs the chosen settings on seeds ``0..seeds-1``.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import typer

from models.drift import make_detector

DETECTORS = ("ours", "ours_strict", "adwin", "adwin_rises", "cusum", "page_hinkley")
RISES = {"direction": "rises_on_binary"}
_CUSUM = {"name": "cusum", "h_mean": 16.0, "h_binary": 24.0, "h_var": 34.0, **RISES}
STRICT = {"members": [_CUSUM, {"name": "adwin", "delta": 0.0005, **RISES}], "settle": 0}  # the default before
BASES = {"adwin_rises": ("adwin", RISES), "ours_strict": ("ours", STRICT)}  # rows that are a detector with fixed options
FAMILIES = ("ours", "river")
TUNE_SEEDS = (1000, 1001, 1002, 1003, 1004, 1005)
SETTINGS: dict[str, list[dict[str, Any]]] = {
    "ours": [
        {},
        {"members": [_CUSUM, {"name": "adwin", "delta": 0.0005, "delta_binary": 0.02, **RISES}]},
        {"members": [{**_CUSUM, "h_binary": 18.0}, {"name": "adwin", "delta": 0.0005, "delta_binary": 0.01, **RISES}]},
        {"members": [_CUSUM, {"name": "adwin", "delta": 0.002, "delta_binary": 0.01, **RISES}]},
    ],
    "adwin": [{}, {"delta": 0.0005}, {"delta": 0.01}],
    "adwin_rises": [{}, {"delta": 0.0005}, {"delta": 0.01}],
    "cusum": [{}, {"h_mean": 10.0, "h_binary": 14.0, "h_var": 22.0}, {"h_mean": 20.0, "h_binary": 28.0, "h_var": 40.0}],
    "page_hinkley": [{}, {"threshold": 25.0}, {"threshold": 100.0}],
}
RIVER_LENGTH = 12_000
RIVER_DRIFTS = (3_000, 6_000, 9_000)
RIVER_WIDTHS = {"abrupt": 50, "gradual": 1_000}
RIVER_CONCEPTS = {"sea": (0, 1, 2, 3), "agrawal": (0, 2, 4, 6), "stagger": (0, 1, 2, 0)}
LENGTH = 25_000
DRIFTS = (5_000, 10_000, 15_000, 20_000)
RAMP = 1_000
TOLERANCE = 1_000
MEAN_LEVELS = (0.0, 1.0, 0.5, 1.5, 0.75)  # shifts of 1, 0.5, 1 and 0.75 deviations
SD_LEVELS = (1.0, 2.0, 1.0, 1.5, 1.0)
ANGLES = (0.0, 90.0, 45.0, 105.0, 75.0)  # the labelling hyperplane's direction, degrees


@dataclass(frozen=True)
class Stream:
    name: str
    values: np.ndarray
    drifts: tuple[tuple[int, int], ...]  # (start, end of transition)


def _levels(levels: tuple[float, ...], ramp: int) -> np.ndarray:
    out = np.full(LENGTH, levels[0])
    for d, before, after in zip(DRIFTS, levels, levels[1:]):
        out[d:] = after
        if ramp:
            out[d : d + ramp] = before + (after - before) * (np.arange(ramp) + 1) / ramp
    return out


def _label_errors(rng: np.random.Generator, noise: float = 0.1, lr: float = 0.05) -> np.ndarray:
    """0/1 errors of an online logistic regression on a stream whose labelling hyperplane turns at drifts."""
    x = rng.uniform(-1, 1, size=(LENGTH, 2))
    angle = np.radians(_levels(ANGLES, 0))
    y = (x[:, 0] * np.cos(angle) + x[:, 1] * np.sin(angle) > 0).astype(np.float64)
    flip = rng.random(LENGTH) < noise
    y[flip] = 1 - y[flip]
    w0 = w1 = b = 0.0
    errors = np.empty(LENGTH)
    for i, (a, c, t) in enumerate(zip(x[:, 0].tolist(), x[:, 1].tolist(), y.tolist())):
        z = w0 * a + w1 * c + b
        p = 1.0 / (1.0 + math.exp(-z)) if z > -30 else 0.0
        errors[i] = float((p >= 0.5) != (t == 1.0))
        g = p - t
        w0 -= lr * g * a
        w1 -= lr * g * c
        b -= lr * g
    return errors


def streams(seed: int) -> list[Stream]:
    rng = np.random.default_rng(seed)
    abrupt = tuple((d, d) for d in DRIFTS)
    gradual = tuple((d, d + RAMP) for d in DRIFTS)
    noise = rng.normal(size=(4, LENGTH))
    return [
        Stream("abrupt_mean", _levels(MEAN_LEVELS, 0) + noise[0], abrupt),
        Stream("gradual_mean", _levels(MEAN_LEVELS, RAMP) + noise[1], gradual),
        Stream("abrupt_variance", _levels(SD_LEVELS, 0) * noise[2], abrupt),
        Stream("gradual_variance", _levels(SD_LEVELS, RAMP) * noise[3], gradual),
        Stream("concept_labels", _label_errors(rng), abrupt),
    ]


def _river_concept(family: str, concept: int, seed: int) -> Any:
    from river.datasets import synth

    if family == "sea":
        return synth.SEA(variant=concept, noise=0.1, seed=seed)
    if family == "agrawal":
        return synth.Agrawal(classification_function=concept, seed=seed)
    if family == "stagger":
        return synth.STAGGER(classification_function=concept, seed=seed)
    raise ValueError(f"unknown river generator {family!r}; known: {', '.join(RIVER_CONCEPTS)}")


def river_stream(family: str, kind: str, seed: int, length: int = RIVER_LENGTH,
                 drifts: tuple[int, ...] = RIVER_DRIFTS) -> Stream:
    """The prequential 0/1 errors of a HoeffdingTree on river's ``family`` generator with ``kind`` drifts.

    Parameters
    ----------
    family
        ``sea``, ``agrawal`` or ``stagger``; its concepts are ``RIVER_CONCEPTS[family]``, one per segment.
    kind
        ``abrupt`` or ``gradual`` (the ``ConceptDriftStream`` width, ``RIVER_WIDTHS``).
    seed
        Seeds the generators and the joins.
    length, drifts
        Stream length and the drift positions (one fewer than the concepts).
    """
    from river import tree
    from river.datasets import synth

    width = RIVER_WIDTHS[kind]
    concepts = RIVER_CONCEPTS[family][: len(drifts) + 1]
    joined = _river_concept(family, concepts[-1], seed + len(drifts))
    for i in range(len(drifts) - 1, -1, -1):
        position = drifts[i] - (drifts[i - 1] if i else 0)  # an inner stream counts only its own draws
        joined = synth.ConceptDriftStream(_river_concept(family, concepts[i], seed + i), joined,
                                          position=position, width=width, seed=seed * 31 + i)
    learner = tree.HoeffdingTreeClassifier()
    errors = np.empty(length)
    for j, (x, y) in enumerate(joined.take(length)):
        errors[j] = float(learner.predict_one(x) != y)
        learner.learn_one(x, y)
    windows = tuple((d - width // 2, d + width // 2) for d in drifts)
    return Stream(f"{family}_{kind}", errors, windows)


def river_streams(seed: int) -> list[Stream]:
    return [river_stream(f, k, seed) for f in RIVER_CONCEPTS for k in RIVER_WIDTHS]


def family_streams(family: str, seed: int) -> list[Stream]:
    if family == "ours":
        return streams(seed)
    if family == "river":
        return river_streams(seed)
    raise ValueError(f"unknown stream family {family!r}; known: {', '.join(FAMILIES)}")


def score(alarms: np.ndarray, drifts: tuple[tuple[int, int], ...]) -> dict[str, Any]:
    delays: list[int] = []
    per_drift: list[int | None] = []
    missed = redundant = 0
    inside = np.zeros(len(alarms), dtype=bool)
    for start, end in drifts:
        hits = (alarms >= start) & (alarms <= end + TOLERANCE)
        inside |= hits
        if hits.any():
            delays.append(int(alarms[hits][0] - start))
            per_drift.append(delays[-1])
            redundant += int(hits.sum()) - 1
        else:
            per_drift.append(None)
            missed += 1
    return {"delays": delays, "per_drift": per_drift, "missed": missed, "redundant": redundant, "false_alarms": int((~inside).sum())}


def _summary(parts: list[dict[str, Any]], events: int, versus: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """``versus``: the baseline's parts on the same streams, for the delay over drifts both detected."""
    delays = [d for p in parts for d in p["delays"]]
    fa = sum(p["false_alarms"] for p in parts)
    return {
        "mean_delay": round(float(np.mean(delays)), 1) if delays else None,
        "median_delay": float(np.median(delays)) if delays else None,
        "false_alarms_per_10k": round(fa * 10_000 / events, 3),
        "false_alarms": fa,
        "missed": sum(p["missed"] for p in parts),
        "detected": len(delays),
        "redundant": sum(p["redundant"] for p in parts),
        **(dict(zip(("mean_delay_both_detected", "baseline_delay_both_detected"), _common(parts, versus)))
           if versus is not None else {}),
    }


def _common(parts: list[dict[str, Any]], versus: list[dict[str, Any]]) -> tuple[float | None, float | None]:
    """Mean delays of the detector and of the baseline over the drifts both caught."""
    pairs = [(a, b) for p, q in zip(parts, versus) for a, b in zip(p["per_drift"], q["per_drift"])
             if a is not None and b is not None]
    if not pairs:
        return None, None
    return round(float(np.mean([a for a, _ in pairs])), 1), round(float(np.mean([b for _, b in pairs])), 1)


def _parts(det: str, params: dict[str, Any], streams_: list[Stream]) -> list[dict[str, Any]]:
    name, fixed = BASES.get(det, (det, {}))
    return [score(make_detector(name, **fixed, **params).update(s.values), s.drifts) for s in streams_]


def choose_settings(tune: list[Stream], detectors: tuple[str, ...]) -> dict[str, dict[str, Any]]:
    """Per detector, the ``SETTINGS`` entry with the most detections minus false alarms on ``tune`` (then: fewer
    false alarms, then sooner)."""
    chosen: dict[str, dict[str, Any]] = {}
    for det in detectors:
        def merit(params: dict[str, Any]) -> tuple[int, int, float]:
            parts = _parts(det, params, tune)
            delays = [d for p in parts for d in p["delays"]]
            fa = sum(p["false_alarms"] for p in parts)
            return len(delays) - fa, -fa, -float(np.mean(delays)) if delays else -1e9
        options = SETTINGS.get(det, [{}])
        chosen[det] = max(options, key=lambda params: (*merit(params), -options.index(params)))
    return chosen


def _report(per: dict[str, dict[str, list[dict[str, Any]]]], detectors: tuple[str, ...], events: int) -> dict[str, Any]:
    """Summaries per detector over all streams of one family, and per stream; delays beside ADWIN's."""
    base = "adwin" if "adwin" in detectors else None

    def flat(det: str) -> list[dict[str, Any]]:
        return [p for rows in per.values() for p in rows[det]]

    out: dict[str, Any] = {det: _summary(flat(det), events * len(per), flat(base) if base else None) for det in detectors}
    out["streams"] = {
        name: {det: _summary(rows[det], events, rows[base] if base else None) for det in detectors}
        for name, rows in per.items()
    }
    return out


def run(json_path: Path | None = None, seeds: int = 5, detectors: tuple[str, ...] = DETECTORS,
        families: tuple[str, ...] = FAMILIES, river_seeds: int = 3,
        tune_seeds: tuple[int, ...] = TUNE_SEEDS) -> dict[str, Any]:
    """Choose settings on ``tune_seeds``, then run every detector over every stream of the reported seeds.

    Parameters
    ----------
    json_path
        Where to write the results.
    seeds, river_seeds
        Reported seeds of our streams and of river's (seeds ``0..n-1``; river's cost a HoeffdingTree each).
    detectors
        Which detectors (``models.drift`` names).
    families
        ``ours`` (our synthetic streams; reported at the top level) and/or ``river`` (under ``"river"``).
    tune_seeds
        Seeds for choosing settings, never reported; empty keeps every detector's defaults.
    """
    if seeds < 1 or river_seeds < 1:
        raise ValueError("seeds and river seeds must each be at least 1")
    if set(tune_seeds) & set(range(max(seeds, river_seeds))):
        raise ValueError(f"tuning seeds {tune_seeds} overlap the reported seeds")
    tune = [s for f in families for seed in tune_seeds for s in family_streams(f, seed)]
    chosen = choose_settings(tune, detectors) if tune else {d: {} for d in detectors}
    result: dict[str, Any] = {}
    for family in families:
        per: dict[str, dict[str, list[dict[str, Any]]]] = {}
        n_seeds = seeds if family == "ours" else river_seeds
        for seed in range(n_seeds):
            for s in family_streams(family, seed):
                for det in detectors:
                    per.setdefault(s.name, {}).setdefault(det, []).extend(_parts(det, chosen[det], [s]))
        length = LENGTH if family == "ours" else RIVER_LENGTH
        report = _report(per, detectors, n_seeds * length)
        if family == "ours":
            result.update(report)
        else:
            result[family] = report
    result["settings"] = chosen
    result["setup"] = {
        "seeds": seeds, "length": LENGTH, "drifts": list(DRIFTS), "ramp": RAMP, "tolerance": TOLERANCE,
        "mean_levels": list(MEAN_LEVELS), "sd_levels": list(SD_LEVELS), "label_angles_deg": list(ANGLES),
        "drifts_total": len(DRIFTS) * seeds * 5, "tune_seeds": list(tune_seeds), "families": list(families),
        "river": {"seeds": river_seeds, "length": RIVER_LENGTH, "drifts": list(RIVER_DRIFTS), "widths": RIVER_WIDTHS,
                  "concepts": {k: list(v) for k, v in RIVER_CONCEPTS.items()},
                  "drifts_total": len(RIVER_DRIFTS) * river_seeds * len(RIVER_CONCEPTS) * len(RIVER_WIDTHS)},
    }
    if json_path is not None:
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps(result, indent=2) + "\n")
    return result


def print_table(result: dict[str, Any]) -> None:
    sections = [("our streams", result)] if "streams" in result else []
    sections += [("river's generators, HoeffdingTree errors", result["river"])] if "river" in result else []
    for title, section in sections:
        dets = [d for d in DETECTORS if d in section]
        print(f"{title}: mean delay, (its / ADWIN's over drifts both caught), false alarms / 10k, missed")
        print(f"{'stream':<18}" + "".join(f"{d:>44}" for d in dets))
        rows = [*section["streams"].items(), ("ALL", {d: section[d] for d in dets})]
        for name, row in rows:
            cells = "".join(
                f"{str(row[d]['mean_delay']):>14}{str(row[d].get('mean_delay_both_detected')):>8}"
                f"{str(row[d].get('baseline_delay_both_detected')):>8}"
                f"{row[d]['false_alarms_per_10k']:>8}{row[d]['missed']:>6}"
                for d in dets
            )
            print(f"{name:<18}{cells}")
    print(f"settings (chosen on seeds {result['setup']['tune_seeds']}): {json.dumps(result['settings'])}")


def command(
    json_path: Annotated[Path | None, typer.Option("--json", help="write the results as JSON")] = None,
    seeds: Annotated[int, typer.Option("--seeds", min=1, help="our streams of each kind, one per seed")] = 5,
    river_seeds: Annotated[int, typer.Option("--river-seeds", min=1, help="river's streams of each kind, one per seed")] = 3,
    river: Annotated[bool, typer.Option("--river/--no-river", help="also river's generators (minutes: a HoeffdingTree per stream)")] = True,
) -> None:
    """Detection delay and false alarms per 10k events, on our streams and river's: every detector, settings chosen on unreported seeds."""
    print_table(run(json_path, seeds, families=FAMILIES if river else ("ours",), river_seeds=river_seeds))


if __name__ == "__main__":
    typer.run(command)
