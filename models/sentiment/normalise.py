"""Text normalisation before tokenising: the cues an uncased WordPiece tokenizer loses, turned into words.

The encoder's tokenizer lower-cases (``GREAT`` becomes ``great``), splits emoticons into punctuation (``:)``
becomes ``:`` and ``)``) and does not know emoji; VADER's lexicon reads all three, and that is where it beat
the model on tweets (BENCHMARKS-audio.md, session 7). So before tokenising, in training and in serving alike:

- HTML entities are unescaped (the tweets carry ``&lt;3``);
- an emoji becomes its description from VADER's emoji lexicon (``😀`` -> ``grinning face``);
- an emoticon (a whitespace-separated token in VADER's lexicon that is not a word) becomes a word the encoder
  knows: a few by name (``<3`` -> ``love``, ``;)`` -> ``wink``), the others by the sign of VADER's rating
  (``smile`` or ``frown``);
- a sentiment word or intensifier (VADER's lexicon or booster list) written in capitals in a text that is not
  all capitals is doubled (``REALLY bored`` -> ``really really bored``): repetition is emphasis the encoder can read.

Spoken transcripts carry none of these but the odd capitalised word (Whisper's ``OK`` is doubled like any other).
Which normalisation a model was trained with is stored in its ``sentiment.json`` (``normalise``), so a model
trained without it is served without it.
"""

from __future__ import annotations

import html
import re
from collections.abc import Sequence
from functools import cache

NORMALISE = "cues-v1"
NAMED = {
    "<3": "love", "</3": "heartbroken", ";)": "wink", ";-)": "wink", ";D": "wink", ":D": "laugh", ":-D": "laugh",
    "xD": "laugh", "XD": "laugh", "=D": "laugh", ":'(": "crying", ":'-(": "crying", "D:": "dismay", ":P": "playful",
    ":p": "playful", ":-P": "playful", ":-p": "playful",
}
_SIGNS = "()[]<>{}|/\\:;=*^"
_TOKEN = re.compile(r"\S+")
_CAPS = re.compile(r"(?<![\w#@])[A-Z][A-Z']+\b")


@cache
def _vader() -> tuple[dict[str, float], dict[str, str], frozenset[str]]:
    from vaderSentiment.vaderSentiment import BOOSTER_DICT, SentimentIntensityAnalyzer

    analyzer = SentimentIntensityAnalyzer()
    emphasis = frozenset(w for w in [*analyzer.lexicon, *BOOSTER_DICT] if w.isalpha())
    return analyzer.lexicon, analyzer.emojis, emphasis


def _emoticon(token: str, lexicon: dict[str, float]) -> str | None:
    if token in NAMED:
        return NAMED[token]
    rating = lexicon.get(token)
    if rating is None or len(token) < 2 or not any(c in _SIGNS for c in token) or any(c.isdigit() for c in token):
        return None
    return "smile" if rating >= 0.5 else "frown" if rating <= -0.5 else None


def normalise(text: str) -> str:
    """``text`` with entities unescaped, emoji and emoticons as words and capitalised sentiment words doubled.

    Parameters
    ----------
    text
        Any text; one without these cues comes back unchanged but for runs of whitespace (made one space).
    """
    lexicon, emojis, emphasis = _vader()
    text = html.unescape(text)
    letters = [c for word in text.split() if _emoticon(word, lexicon) is None for c in word if c.isalpha()]
    if letters and not all(c.isupper() for c in letters):
        text = _CAPS.sub(lambda m: f"{m.group()} {m.group()}" if m.group().lower() in emphasis else m.group(), text)
    if not text.isascii():
        text = "".join(f" {emojis[c]} " if c in emojis else c for c in text)
    text = _TOKEN.sub(lambda m: _emoticon(m.group(), lexicon) or m.group(), text)
    return " ".join(text.split())


def normalise_all(texts: Sequence[str], how: str | None) -> list[str]:
    """The texts as a model trained with normalisation ``how`` reads them (``None``: unchanged).

    Parameters
    ----------
    texts
        The texts.
    how
        The ``normalise`` entry of the model's ``sentiment.json``; only ``NORMALISE`` is known.
    """
    if how is None:
        return list(texts)
    if how != NORMALISE:
        raise ValueError(f"unknown text normalisation {how!r} (this version knows {NORMALISE!r}): update eddyline")
    return [normalise(t) for t in texts]
