"""Accuracy on the held-out split, per domain, for a model and for VADER on the same sentences.

Two numbers per domain: ``accuracy`` over the three labels, and ``polar_accuracy``: over the sentences the
raters called clearly positive or negative only, is the sign right (P(positive) vs P(negative) for a model,
compound >= 0 for VADER). The second is the binary metric SST-2 results are quoted in.
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from models.sentiment.data import LABELS, Example, load_examples, split
from models.sentiment.model import SentimentModel, VaderSentiment, load_sentiment


def _per_domain(examples: list[Example], pred: np.ndarray, polar_pred: np.ndarray) -> tuple[dict, dict]:
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


def score(model: SentimentModel, examples: list[Example]) -> dict[str, dict[str, float]]:
    texts = [e.text for e in examples]
    probs = model.probabilities(texts)
    acc, polar = _per_domain(examples, probs.argmax(axis=1), probs[:, 2] > probs[:, 0])
    return {"accuracy": acc, "polar_accuracy": polar}


def score_vader(examples: list[Example]) -> dict[str, dict[str, float]]:
    compound = VaderSentiment().compound([e.text for e in examples])
    pred = np.where(compound >= 0.05, 2, np.where(compound <= -0.05, 0, 1))
    acc, polar = _per_domain(examples, pred, compound >= 0)
    return {"accuracy": acc, "polar_accuracy": polar}


def evaluate(json_path: str | Path | None = None, model: str | Path | None = None,
             examples: list[Example] | None = None) -> dict[str, Any]:
    """Our model beside VADER on the test split; written to ``json_path`` when given."""
    if examples is None:
        _, examples = split(load_examples())
    ours = score(load_sentiment(model), examples)
    vader = score_vader(examples)
    result = {
        "accuracy": ours["accuracy"],
        "vader_accuracy": vader["accuracy"],
        "polar_accuracy": ours["polar_accuracy"],
        "vader_polar_accuracy": vader["polar_accuracy"],
        "labels": list(LABELS),
        "test_sentences": len(examples),
        "model": str(model) if model is not None else "trained (default dir)",
    }
    if json_path is not None:
        Path(json_path).write_text(json.dumps(result, indent=2))
    return result
