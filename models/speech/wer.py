"""Word error rate, with the normalisation that makes Whisper's written style comparable to a script."""

from __future__ import annotations

import re

_DIGITS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
_WORD = re.compile(r"[a-z0-9']+")


def normalize_words(text: str) -> list[str]:
    """Lower case, no punctuation, and digits spelled one by one ("452" -> "four five two"), because
    Whisper writes numbers as digits while reference scripts spell them out.

    Parameters
    ----------
    text
        A transcript or a reference script.

    Examples
    --------
    >>> from models.speech import normalize_words
    >>> normalize_words("Call 452, now!")
    ['call', 'four', 'five', 'two', 'now']
    """
    words: list[str] = []
    for w in _WORD.findall(text.lower().replace("-", " ")):
        w = w.strip("'")
        if w.isdigit():
            words.extend(_DIGITS[int(d)] for d in w)
        elif w:
            words.append(w)
    return words


def edit_distance(ref: list[str], hyp: list[str]) -> int:
    prev = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        cur = [i] + [0] * len(hyp)
        for j, h in enumerate(hyp, 1):
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (r != h))
        prev = cur
    return prev[-1]


def word_error_rate(references: str | list[str], hypotheses: str | list[str]) -> float:
    """Corpus WER: total word edits over total reference words.

    Parameters
    ----------
    references
        What was said: one text, or a list.
    hypotheses
        What was transcribed, in the same order and number.

    Examples
    --------
    >>> from models.speech import word_error_rate
    >>> word_error_rate("the cat sat on the mat", "the cat sat on a mat")
    0.16666666666666666
    """
    refs = [references] if isinstance(references, str) else list(references)
    hyps = [hypotheses] if isinstance(hypotheses, str) else list(hypotheses)
    if len(refs) != len(hyps):
        raise ValueError(f"{len(refs)} references but {len(hyps)} hypotheses")
    edits = words = 0
    for r, h in zip(refs, hyps, strict=True):
        rw, hw = normalize_words(r), normalize_words(h)
        edits += edit_distance(rw, hw)
        words += len(rw)
    if words == 0:
        raise ValueError("references have no words")
    return edits / words
