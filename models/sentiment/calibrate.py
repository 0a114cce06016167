"""The validation split's verdict on a trained model: accuracy per domain, a lexicon prior and a temperature.

Every training choice (trainable layers, steps, learning rate, lexicon prior, temperature) is made on sentences
carved out of the training side (``data.validation_split``), never on the held-out test split that is reported.
The lexicon prior's weight w (VADER's compound score added to the window logits, ``WindowedSentiment``) is the
value on a grid whose probabilities are the likeliest on validation; a temperature T then divides the window
logits before aggregation: it leaves the served labels as they are and makes the confidence match the
accuracy; T is the value on a grid with the smallest expected calibration error on validation. Both are stored
in ``sentiment.json`` and applied by both engines.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from models.sentiment.data import Example
from models.sentiment.evaluate import expected_calibration_error, per_domain_accuracy
from models.sentiment.model import with_lexicon_prior
from models.sentiment.windows import Windows, aggregate

TEMPERATURES = np.round(np.arange(0.5, 4.0001, 0.01), 2)
LEXICON_WEIGHTS = np.round(np.arange(0.0, 4.0001, 0.05), 2)
NEUTRAL_BANDS = np.round(np.arange(0.0, 0.901, 0.02), 2)
CONFIDENCES = (0.5, 0.6, 0.7, 0.8, 0.9)


def _nll(probs: np.ndarray, y: np.ndarray) -> float:
    return float(-np.mean(np.log(np.clip(probs[np.arange(len(y)), y], 1e-12, None))))


def fit_temperature(logits: np.ndarray, windows: Windows, y: np.ndarray, aggregation: str,
                    grid: np.ndarray = TEMPERATURES) -> float:
    """The temperature of ``grid`` whose calibrated probabilities have the smallest ECE (the lowest on ties).

    Parameters
    ----------
    logits, windows
        Uncalibrated window logits and their windows (``window_logits`` of a model at temperature 1).
    y
        The texts' true labels.
    aggregation
        How the model aggregates windows.
    grid
        Temperatures to try.
    """
    ece = [expected_calibration_error(aggregate(logits / t, windows, len(y), aggregation), y) for t in grid]
    return float(grid[int(np.argmin(ece))])


def fit_lexicon_weight(logits: np.ndarray, compound: np.ndarray, windows: Windows, y: np.ndarray, aggregation: str,
                       grid: np.ndarray = LEXICON_WEIGHTS) -> float:
    """The lexicon prior's weight of ``grid`` with the smallest log loss, each at its own best temperature.

    The temperature is searched jointly (every fifth of ``TEMPERATURES``): without it a larger weight would
    also be paid for sharpening an under-confident model. Ties go to the smaller weight.

    Parameters
    ----------
    logits, compound, windows
        The network's own window logits, VADER's compound score per window and the windows
        (``WindowedSentiment.window_scores`` with ``lexicon=True``).
    y
        The texts' true labels.
    aggregation
        How the model aggregates windows.
    grid
        Weights to try.
    """
    def loss(w: float) -> float:
        shifted = with_lexicon_prior(logits, compound, w)
        return min(_nll(aggregate(shifted / t, windows, len(y), aggregation), y) for t in TEMPERATURES[::5])

    losses = [loss(float(w)) for w in grid]
    return float(grid[int(np.argmin(losses))])


def neutral_band(probs: np.ndarray, y: np.ndarray, grid: np.ndarray = NEUTRAL_BANDS) -> dict[str, float]:
    """The band around a score of 0 (score = P(positive) - P(negative)) best called neutral, on these texts.

    A text whose score lies within the band is labelled neutral, else by the score's sign; the band with the
    best three-way accuracy wins (the narrowest on ties). Compared with the model's own argmax labels.

    Parameters
    ----------
    probs
        Calibrated (texts, 3) probabilities.
    y
        True labels.
    """
    score = probs[:, 2] - probs[:, 0]
    acc = [float(np.mean(np.where(np.abs(score) < b, 1, np.where(score > 0, 2, 0)) == y)) for b in grid]
    best = int(np.argmax(acc))
    return {"band": float(grid[best]), "accuracy": acc[best], "argmax_accuracy": float(np.mean(probs.argmax(1) == y))}


def coverage(probs: np.ndarray, y: np.ndarray, levels: tuple[float, ...] = CONFIDENCES) -> dict[str, dict[str, float | None]]:
    """Per confidence level: the share of texts at least that confident, and their three-way accuracy.

    What an "uncertain" outcome below a level would cost (texts set aside) and buy (accuracy of the rest).

    Parameters
    ----------
    probs
        Calibrated (texts, 3) probabilities.
    y
        True labels.
    levels
        Confidence levels (the largest probability of a text).
    """
    conf, right = probs.max(axis=1), probs.argmax(axis=1) == y
    return {f"{c:.1f}": {"share": float(np.mean(conf >= c)),
                         "accuracy": float(right[conf >= c].mean()) if (conf >= c).any() else None}
            for c in levels}


def validate(logits: np.ndarray, windows: Windows, examples: list[Example], aggregation: str) -> dict[str, Any]:
    """Fit the temperature on ``examples`` and score the model there: per domain, and their mean.

    ``accuracy`` is three-way, ``polar_accuracy`` the sign on clearly rated sentences (as in ``evaluate``);
    the means are over domains, unweighted, the figure layer and step choices are compared on.

    Parameters
    ----------
    logits, windows
        The served model's window logits on ``examples``, its lexicon prior included, before any temperature.
    examples
        Validation sentences.
    aggregation
        How the model aggregates windows.
    """
    y = np.array([e.label for e in examples])
    t = fit_temperature(logits, windows, y, aggregation)
    raw = aggregate(logits, windows, len(y), aggregation)
    calibrated = aggregate(logits / t, windows, len(y), aggregation)
    acc, polar = per_domain_accuracy(examples, calibrated.argmax(axis=1), calibrated[:, 2] > calibrated[:, 0])
    return {
        "sentences": len(examples),
        "counts": {d: sum(e.domain == d for e in examples) for d in acc},
        "accuracy": acc,
        "polar_accuracy": polar,
        "mean_accuracy": float(np.mean(list(acc.values()))),
        "mean_polar_accuracy": float(np.mean(list(polar.values()))),
        "temperature": t,
        "ece_before_temperature": expected_calibration_error(raw, y),
        "ece": expected_calibration_error(calibrated, y),
        "nll_before_temperature": _nll(raw, y),
        "nll": _nll(calibrated, y),
        "neutral_band": neutral_band(calibrated, y),
        "coverage": coverage(calibrated, y),
    }
