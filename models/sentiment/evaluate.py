"""Accuracy on the held-out split, per domain and per text length, for a model and for VADER on the same texts.

Two numbers per domain: ``accuracy`` over the three labels, and ``polar_accuracy``: over the sentences the
raters called clearly positive or negative only, is the sign right (P(positive) vs P(negative) for a model,
compound >= 0 for VADER). The second is the binary metric SST-2 results are quoted in.

Length: the held-out snippets are short (median 24 tokens), so the held-out snippets of each product review
and editorial are also joined into passages (``data.passages``) and both are bucketed by token count. For the
ONNX model (and its PyTorch baseline) every window aggregation is scored on the same windows, ``truncate`` (the first window only) being
the scorer it replaced. ``ece`` is the expected calibration error of the three-way confidence (10 bins), as
served (after the model's temperature), ``ece_before_temperature`` the same at temperature 1.
``emotion_f1``: per-class F1 of the emotion backend (``emotion``) on the developer-written lines of
``emotion_check.json`` (no labelled emotion text ships in the registries; see the model card).
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from models.sentiment.console import Steps
from models.sentiment.data import LABELS, Example, load_examples, passages, split
from models.sentiment.emotion import load_emotion
from models.sentiment.model import SentimentModel, VaderSentiment, WindowedSentiment, load_sentiment
from models.sentiment.normalise import normalise_all
from models.sentiment.windows import AGGREGATIONS, aggregate

LENGTH_BUCKETS = ((0, 32, "<=32"), (32, 64, "33-64"), (64, 128, "65-128"), (128, 1 << 30, ">128"))
ECE_BINS = 10
EMOTION_CHECK = Path(__file__).with_name("emotion_check.json")


def per_domain_accuracy(examples: list[Example], pred: np.ndarray, polar_pred: np.ndarray) -> tuple[dict, dict]:
    """Three-way and polar accuracy per domain: every report (eval, validation, VADER) counts them one way.

    Parameters
    ----------
    examples
        The labelled sentences, in the order of the predictions.
    pred
        The predicted class per example (0 negative, 1 neutral, 2 positive).
    polar_pred
        Whether each example reads positive; scored on the examples labelled negative or positive only.
    """
    by: dict[str, list[int]] = defaultdict(list)
    for i, e in enumerate(examples):
        by[e.domain].append(i)
    acc, polar = {}, {}
    for domain, idx in sorted(by.items()):
        y = np.array([examples[i].label for i in idx])
        acc[domain] = float(np.mean(pred[idx] == y))
        p = np.array(idx)[y != 1]
        polar[domain] = float(np.mean(polar_pred[p] == (np.array([examples[i].label for i in p]) == 2)))
    return acc, polar


def _accuracy(probs: np.ndarray, y: np.ndarray) -> float:
    return float(np.mean(probs.argmax(axis=1) == y)) if len(y) else float("nan")


def _polar_accuracy(probs: np.ndarray, y: np.ndarray) -> float:
    polar = y != 1
    return float(np.mean((probs[polar, 2] > probs[polar, 0]) == (y[polar] == 2))) if polar.any() else float("nan")


def expected_calibration_error(probs: np.ndarray, y: np.ndarray, bins: int = ECE_BINS) -> float:
    """How far the model's confidence is from its accuracy: |accuracy - confidence| per confidence bin,
    weighted by the bin's share of texts.

    Parameters
    ----------
    probs
        (n, labels) probabilities.
    y
        (n,) true label indices.
    bins
        Equal-width confidence bins over [0, 1].
    """
    conf = probs.max(axis=1)
    right = probs.argmax(axis=1) == y
    which = np.minimum((conf * bins).astype(int), bins - 1)
    ece = 0.0
    for b in range(bins):
        m = which == b
        if m.any():
            ece += m.mean() * abs(right[m].mean() - conf[m].mean())
    return float(ece)


def token_counts(model: SentimentModel, texts: list[str]) -> np.ndarray:
    """Tokens per text as a windowed model's tokenizer counts them (words for other backends)."""
    if isinstance(model, WindowedSentiment):
        return np.array([len(ids) for ids in model.token_ids(normalise_all(texts, model.normalise))])
    return np.array([len(t.split()) for t in texts])


def scored(model: SentimentModel, texts: list[str]) -> dict[str, np.ndarray]:
    """Probabilities per text: ``served`` (as the model runs), plus every aggregation for a windowed model
    and ``uncalibrated`` (served at temperature 1), all from one pass over the windows."""
    if not isinstance(model, WindowedSentiment):
        return {"served": model.probabilities(texts)}
    logits, windows = model.window_logits(texts)
    out = {m: aggregate(logits, windows, len(texts), m) for m in AGGREGATIONS}
    out["served"] = out[model.aggregation]
    out["uncalibrated"] = aggregate(logits * model.temperature, windows, len(texts), model.aggregation)
    return out


def by_length(probs: dict[str, np.ndarray], vader: np.ndarray, y: np.ndarray, tokens: np.ndarray) -> dict[str, Any]:
    """Accuracy and polar accuracy per length bucket, for each scorer in ``probs`` and for VADER."""
    out: dict[str, Any] = {}
    vader_pred = np.where(vader >= 0.05, 2, np.where(vader <= -0.05, 0, 1))
    for lo, hi, name in LENGTH_BUCKETS:
        m = (tokens > lo) & (tokens <= hi)
        polar = m & (y != 1)
        out[name] = {
            "texts": int(m.sum()),
            "accuracy": {k: _accuracy(p[m], y[m]) for k, p in probs.items()},
            "polar_accuracy": {k: _polar_accuracy(p[m], y[m]) for k, p in probs.items()},
            "vader_accuracy": float(np.mean(vader_pred[m] == y[m])) if m.any() else float("nan"),
            "vader_polar_accuracy": float(np.mean((vader[polar] >= 0) == (y[polar] == 2))) if polar.any() else float("nan"),
        }
    return out


def score_vader(examples: list[Example]) -> dict[str, dict[str, float]]:
    compound = VaderSentiment().compound([e.text for e in examples])
    pred = np.where(compound >= 0.05, 2, np.where(compound <= -0.05, 0, 1))
    acc, polar = per_domain_accuracy(examples, pred, compound >= 0)
    return {"accuracy": acc, "polar_accuracy": polar}


def per_class_f1(y: list[str], pred: list[str], labels: tuple[str, ...]) -> dict[str, float]:
    """F1 of each label (one against the rest) and their unweighted mean as ``macro``.

    Parameters
    ----------
    y, pred
        True and predicted labels, in the same order.
    labels
        Every label, including any never predicted (their F1 is 0).
    """
    t, p = np.array(y), np.array(pred)
    out = {}
    for label in labels:
        tp = float(np.sum((p == label) & (t == label)))
        denom = float(np.sum(p == label) + np.sum(t == label))
        out[label] = 2 * tp / denom if denom else 0.0
    out["macro"] = float(np.mean([out[k] for k in labels]))
    return out


def evaluate_emotion(emotion: str | None = None) -> dict[str, Any]:
    """Per-class F1 of the emotion backend on ``emotion_check.json`` (developer-written lines, see its ``about``).

    Parameters
    ----------
    emotion
        As for ``load_emotion``.
    """
    check = json.loads(EMOTION_CHECK.read_text())
    y, texts = zip(*check["examples"], strict=True)
    backend = load_emotion(emotion)
    pred = [p.label for p in backend.predict(list(texts))]
    return {
        "f1": per_class_f1(list(y), pred, backend.labels),
        "accuracy": float(np.mean(np.array(pred) == np.array(y))),
        "counts": dict(sorted(Counter(y).items())),
        "model": backend.name,
        "data": check["about"],
    }


def evaluate(json_path: str | Path | None = None, model: str | Path | None = None,
             examples: list[Example] | None = None, steps: Steps | None = None) -> dict[str, Any]:
    """Our model beside VADER on the test split; written to ``json_path`` when given.

    Parameters
    ----------
    json_path
        Where to write the result as JSON.
    model
        As for ``load_sentiment`` (``None``: the model trained here).
    examples
        The held-out sentences (default: the test split); passages are built from them.
    steps
        Announces the load and each scoring pass: with a large model they take minutes.
    """
    steps = steps or Steps()
    with steps.step("load the model and the held-out split") as note:
        if examples is None:
            _, examples = split(load_examples())
        loaded = load_sentiment(model)
        joined = passages(examples)
        note["result"] = f"{loaded.name}; {len(examples)} sentences, {len(joined)} passages"
    texts = [e.text for e in examples] + [e.text for e in joined]
    y = np.array([e.label for e in examples] + [e.label for e in joined])
    with steps.step(f"score {len(texts)} held-out texts with the model") as note:
        probs = scored(loaded, texts)
        tokens = token_counts(loaded, texts)
        note["result"] = f"{int(tokens.sum())} tokens"
    uncalibrated = probs.pop("uncalibrated", probs["served"])
    n = len(examples)
    served = probs["served"]
    acc, polar = per_domain_accuracy(examples, served[:n].argmax(axis=1), served[:n, 2] > served[:n, 0])
    with steps.step(f"score the same {len(texts)} texts with VADER and the emotion lexicon"):
        vader = score_vader(examples)
        compound = VaderSentiment().compound(texts)
        emotion = evaluate_emotion()
    result = {
        "accuracy": acc,
        "vader_accuracy": vader["accuracy"],
        "polar_accuracy": polar,
        "vader_polar_accuracy": vader["polar_accuracy"],
        "ece": expected_calibration_error(served[:n], y[:n]),
        "ece_before_temperature": expected_calibration_error(uncalibrated[:n], y[:n]),
        "temperature": getattr(loaded, "temperature", 1.0),
        "lexicon_weight": getattr(loaded, "lexicon_weight", 0.0),
        "ece_passages": expected_calibration_error(served[n:], y[n:]) if joined else None,
        "accuracy_by_length": by_length(probs, compound, y, tokens),
        "aggregation": getattr(loaded, "aggregation", "none (the backend truncates or reads whole texts)"),
        "counts": dict(sorted(Counter(e.domain for e in examples).items())),
        "passage_counts": dict(sorted(Counter(e.domain for e in joined).items())),
        "labels": list(LABELS),
        "test_sentences": n,
        "test_passages": len(joined),
        "model": str(model) if model is not None else "trained (default dir)",
        "model_name": loaded.name,
    }
    result["emotion_f1"] = emotion.pop("f1")
    result["emotion"] = emotion
    if json_path is not None:
        Path(json_path).write_text(json.dumps(result, indent=2))
    return result


def cross_validate_aggregation(model: WindowedSentiment, examples: list[Example] | None = None,
                               overlaps: tuple[int, ...] = (0, 16, 32), folds: int = 5, seed: int = 13) -> dict[str, Any]:
    """Choose the window aggregation and overlap on passages of the TRAINING split, never the test split.

    Each fold picks the setting with the best three-way accuracy on the other folds and is scored with it;
    ``cv_accuracy`` is the mean of those held-fold scores (what the choosing procedure is worth), ``chosen``
    the setting best over all training passages.

    Parameters
    ----------
    model
        The ONNX model or its PyTorch baseline (its own aggregation and overlap are ignored here).
    examples
        Training sentences (default: the training split); passages are built from them.
    overlaps
        Window overlaps to try, in tokens.
    folds
        Folds over passages, assigned at random with ``seed``.
    """
    if examples is None:
        examples, _ = split(load_examples())
    joined = passages(examples)
    y = np.array([e.label for e in joined])
    right: dict[str, np.ndarray] = {}
    keep = model.overlap
    try:
        for overlap in overlaps:
            model.overlap = overlap
            logits, windows = model.window_logits([e.text for e in joined])
            for m in AGGREGATIONS:
                right[f"{m}/overlap={overlap}"] = aggregate(logits, windows, len(joined), m).argmax(axis=1) == y
    finally:
        model.overlap = keep
    fold = np.random.default_rng(seed).permutation(len(joined)) % folds
    held, chosen_per_fold = [], []
    for k in range(folds):
        pick = max(right, key=lambda s: right[s][fold != k].mean())
        chosen_per_fold.append(pick)
        held.append(float(right[pick][fold == k].mean()))
    return {
        "passages": len(joined),
        "long_passages": int(sum(1 for w in token_counts(model, [e.text for e in joined]) if w > model.max_length - 2)),
        "accuracy": {s: float(r.mean()) for s, r in right.items()},
        "chosen_per_fold": chosen_per_fold,
        "cv_accuracy": float(np.mean(held)),
        "chosen": max(right, key=lambda s: right[s].mean()),
    }
