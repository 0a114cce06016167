"""Classification metrics over numpy arrays: what the quality flow reports per window and the benchmarks use."""

from __future__ import annotations

import numpy as np


def auc(labels: np.ndarray, scores: np.ndarray) -> float | None:
    """Area under the ROC curve by ranks (ties averaged); None when one class is absent.

    Parameters
    ----------
    labels
        0/1 (or boolean) labels.
    scores
        Any scores where higher means more likely positive.

    Examples
    --------
    >>> from models.metrics import auc
    >>> auc([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]), auc([1, 1], [0.2, 0.3])
    (0.75, None)
    """
    y = np.asarray(labels, dtype=bool)
    s = np.asarray(scores, dtype=np.float64)
    pos = int(y.sum())
    neg = len(y) - pos
    if pos == 0 or neg == 0:
        return None
    from scipy.stats import rankdata

    ranks = rankdata(s)
    return float((ranks[y].sum() - pos * (pos + 1) / 2) / (pos * neg))


def log_loss(labels: np.ndarray, probs: np.ndarray, eps: float = 1e-12) -> float:
    """Mean binary cross-entropy of probabilities against 0/1 labels.

    Parameters
    ----------
    labels
        0/1 labels.
    probs
        P(label is 1).
    eps
        Probabilities are clipped to [eps, 1 - eps], so a confident mistake costs a lot but not infinity.
    """
    y = np.asarray(labels, dtype=np.float64)
    p = np.clip(np.asarray(probs, dtype=np.float64), eps, 1 - eps)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))


def classification_report(labels: np.ndarray, probs: np.ndarray, threshold: float = 0.5) -> dict[str, float]:
    """Accuracy, precision, recall, F1, AUC and log loss of probabilities against 0/1 labels.

    A metric is left out where it is undefined, never reported as 0 (which reads as a broken model): AUC when one
    class is absent, precision without positive predictions, recall without positive labels, F1 with neither. An
    empty input gives ``{}``.

    Parameters
    ----------
    labels
        Labels; 0.5 or more counts as positive.
    probs
        P(positive).
    threshold
        Probabilities at or above it are predicted positive.

    Examples
    --------
    >>> from models.metrics import classification_report
    >>> report = classification_report([1, 0, 1, 0], [0.9, 0.2, 0.4, 0.1])
    >>> report["accuracy"], report["precision"], report["recall"], report["auc"]
    (0.75, 1.0, 0.5, 1.0)
    >>> sorted(classification_report([0, 0], [0.1, 0.2]))  # right every time, but no positives to judge
    ['accuracy', 'log_loss']
    """
    y = np.asarray(labels, dtype=np.float64) >= 0.5
    p = np.asarray(probs, dtype=np.float64)
    if len(y) == 0:
        return {}
    pred = p >= threshold
    tp = float(np.sum(pred & y))
    fp = float(np.sum(pred & ~y))
    fn = float(np.sum(~pred & y))
    out = {"accuracy": float(np.mean(pred == y))}
    if tp + fp:
        out["precision"] = tp / (tp + fp)
    if tp + fn:
        out["recall"] = tp / (tp + fn)
    if tp + fp + fn:
        out["f1"] = 2 * tp / (2 * tp + fp + fn)
    out["log_loss"] = log_loss(y, p)
    a = auc(y, p)
    if a is not None:
        out["auc"] = a
    return out
