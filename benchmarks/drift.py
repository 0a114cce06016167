"""Drift benchmark: detection delay and false alarms on synthetic streams with known drift points.

Every stream starts with 5,000 stationary values (so every detector is calibrated) and then changes
at fixed points, abruptly or along a linear ramp. Five families: the mean and the spread of a Gaussian
series, each abrupt and gradual, and a concept drift in the labels of a classification stream, where
the detectors watch the 0/1 errors of an online logistic regression that predicts, then learns.

Scoring, the same for every detector: a drift starting at ``d`` whose transition ends at ``e`` is
detected by the first alarm in ``[d, e + tolerance]``; the delay is that alarm's position minus ``d``.
Further alarms inside the same window are counted as ``redundant``; alarms outside every window are
false alarms. ``mean_delay`` averages over the drifts a detector caught, so a detector that misses the
hard ones looks quicker; ``mean_delay_both_detected`` compares with ADWIN over the drifts both caught. ``ours`` is ``models.drift.ensemble.DriftEnsemble`` (self-starting CUSUM + ADWIN, both restarted at
either one's alarm);
``adwin`` is river's ADWIN alone with its defaults.
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

DETECTORS = ("ours", "adwin", "cusum", "page_hinkley")
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
        **({"mean_delay_both_detected": _common(parts, versus)} if versus is not None else {}),
    }


def _common(parts: list[dict[str, Any]], versus: list[dict[str, Any]]) -> float | None:
    pairs = [(a, b) for p, q in zip(parts, versus) for a, b in zip(p["per_drift"], q["per_drift"])]
    both = [a for a, b in pairs if a is not None and b is not None]
    return round(float(np.mean(both)), 1) if both else None


def run(json_path: Path | None = None, seeds: int = 5, detectors: tuple[str, ...] = DETECTORS) -> dict[str, Any]:
    """Run every detector over every stream of ``seeds`` seeds; the summary, also written to ``json_path``."""
    if seeds < 1:
        raise ValueError("seeds must be at least 1")
    per: dict[str, dict[str, list[dict[str, Any]]]] = {}
    for seed in range(seeds):
        for s in streams(seed):
            for det in detectors:
                alarms = make_detector(det).update(s.values)
                per.setdefault(s.name, {}).setdefault(det, []).append(score(alarms, s.drifts))
    n_stream = seeds * LENGTH
    result: dict[str, Any] = {}
    base = "adwin" if "adwin" in detectors else None

    def flat(det: str) -> list[dict[str, Any]]:
        return [p for rows in per.values() for p in rows[det]]

    for det in detectors:
        result[det] = _summary(flat(det), n_stream * len(per), flat(base) if base else None)
    result["streams"] = {
        name: {det: _summary(rows[det], n_stream, rows[base] if base else None) for det in detectors}
        for name, rows in per.items()
    }
    result["setup"] = {
        "seeds": seeds, "length": LENGTH, "drifts": list(DRIFTS), "ramp": RAMP, "tolerance": TOLERANCE,
        "mean_levels": list(MEAN_LEVELS), "sd_levels": list(SD_LEVELS), "label_angles_deg": list(ANGLES),
        "drifts_total": len(DRIFTS) * seeds * len(per),
    }
    if json_path is not None:
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps(result, indent=2) + "\n")
    return result


def print_table(result: dict[str, Any]) -> None:
    dets = [d for d in DETECTORS if d in result]
    print(f"{'stream':<18}" + "".join(f"{d:>36}" for d in dets))
    print(f"{'':<18}" + "".join(f"{'delay  (both)  fa/10k  missed':>36}" for _ in dets))
    rows = [*result["streams"].items(), ("ALL", {d: result[d] for d in dets})]
    for name, row in rows:
        cells = "".join(
            f"{str(row[d]['mean_delay']):>14}{str(row[d].get('mean_delay_both_detected')):>8}"
            f"{row[d]['false_alarms_per_10k']:>8}{row[d]['missed']:>6}"
            for d in dets
        )
        print(f"{name:<18}{cells}")


def command(
    json_path: Annotated[Path | None, typer.Option("--json", help="write the results as JSON")] = None,
    seeds: Annotated[int, typer.Option("--seeds", min=1, help="streams of each kind, one per seed")] = 5,
) -> None:
    """Detection delay and false alarms per 10k events: our detector (CUSUM + ADWIN) beside ADWIN alone."""
    print_table(run(json_path, seeds))


if __name__ == "__main__":
    typer.run(command)
