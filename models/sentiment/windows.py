"""Score a text of any length: overlapping token windows, one logit row per window, one prediction per text.

The classifier was trained on windows of at most ``max_length`` tokens. A longer text used to be cut at that
length without a word; here its tokens are split into windows that overlap by ``overlap`` tokens, every
window goes through the model in the same batches as short texts, and the window logits of a text are
aggregated into one row. Which aggregation serves is measured (BENCHMARKS-audio.md): it was chosen by
cross-validation over passages of the training split.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

AGGREGATIONS = ("truncate", "mean-logits", "mean-probs", "late-logits")
DEFAULT_AGGREGATION = "mean-logits"
DEFAULT_OVERLAP = 32


@dataclass(frozen=True, slots=True)
class Windows:
    """A batch of texts cut into windows.

    Parameters
    ----------
    ids
        One token-id list per window, each with the model's special tokens around it.
    owner
        For each window, the index of the text it came from.
    tokens
        For each window, its number of text tokens (without the special tokens): its weight.
    position
        For each window, its index within its text (0 for the first).
    start
        For each window, the index of its first text token in its text's tokens.
    """

    ids: list[list[int]]
    owner: np.ndarray
    tokens: np.ndarray
    position: np.ndarray
    start: np.ndarray


def make_windows(token_ids: Sequence[Sequence[int]], *, max_length: int, prefix: Sequence[int],
                 suffix: Sequence[int], overlap: int = DEFAULT_OVERLAP) -> Windows:
    """Cut each text's token ids (without special tokens) into windows of ``max_length`` with ``overlap``.

    Parameters
    ----------
    token_ids
        Per text, its token ids without special tokens. An empty text still gets one (empty) window.
    max_length
        Tokens per window, special tokens included: the length the model was trained on.
    prefix, suffix
        The special tokens that open and close every window (``[CLS]`` and ``[SEP]`` for BERT).
    overlap
        Tokens shared by consecutive windows, so that no phrase is only ever seen cut in two.
    """
    size = max_length - len(prefix) - len(suffix)
    if size <= 0 or not 0 <= overlap < size:
        raise ValueError(f"windows of {max_length} tokens cannot hold text with overlap {overlap}")
    stride = size - overlap
    ids: list[list[int]] = []
    owner, tokens, position, first = [], [], [], []
    for i, seq in enumerate(token_ids):
        starts = range(0, max(1, len(seq) - overlap), stride)
        for k, start in enumerate(starts):
            piece = list(seq[start : start + size])
            ids.append([*prefix, *piece, *suffix])
            owner.append(i)
            tokens.append(max(1, len(piece)))
            position.append(k)
            first.append(start)
    return Windows(ids, np.array(owner, dtype=np.int64), np.array(tokens, dtype=np.float64),
                   np.array(position, dtype=np.float64), np.array(first, dtype=np.int64))


def window_texts(texts: Sequence[str], windows: Windows, offsets: dict[int, Sequence[tuple[int, int]]]) -> list[str]:
    """The part of its text each window covers, for features computed on text (VADER's compound score).

    A text with one window is that window's text whole; a longer one is cut at the characters its window's
    first and last tokens span.

    Parameters
    ----------
    texts
        The texts the windows were made from.
    windows
        What ``make_windows`` returned for them.
    offsets
        For each text cut into more than one window, its tokens' (start, end) character offsets, in the
        order of the token ids the windows were made from.
    """
    out = []
    for w, i in enumerate(windows.owner):
        if i not in offsets:
            out.append(texts[i])
            continue
        spans = offsets[i]
        first = int(windows.start[w])
        last = min(len(spans), first + int(windows.tokens[w])) - 1
        out.append(texts[i][spans[first][0] : spans[last][1]])
    return out


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax, stable for large logits."""
    z = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def aggregate(logits: np.ndarray, windows: Windows, n_texts: int, method: str = DEFAULT_AGGREGATION) -> np.ndarray:
    """One probability row per text from its windows' logits.

    Parameters
    ----------
    logits
        (windows, labels) logits, in the order of ``windows``.
    windows
        What ``make_windows`` returned for these logits.
    n_texts
        How many texts the windows came from.
    method
        ``truncate``: the first window only (the old behaviour, kept as the baseline); ``mean-logits``: the
        mean of the window logits weighted by each window's token count; ``mean-probs``: the same mean over
        probabilities; ``late-logits``: like ``mean-logits`` with window k weighted k+1 times more, so the
        end of a text (where a call usually settles) counts most.
    """
    if method not in AGGREGATIONS:
        raise ValueError(f"unknown aggregation {method!r}; choose one of {', '.join(AGGREGATIONS)}")
    if method == "truncate":
        weight = (windows.position == 0).astype(np.float64)
    elif method == "late-logits":
        weight = windows.tokens * (windows.position + 1.0)
    else:
        weight = windows.tokens
    rows = softmax(logits) if method == "mean-probs" else logits
    total = np.zeros((n_texts, logits.shape[1]))
    np.add.at(total, windows.owner, rows * weight[:, None])
    norm = np.zeros(n_texts)
    np.add.at(norm, windows.owner, weight)
    mean = total / norm[:, None]
    return mean if method == "mean-probs" else softmax(mean)
