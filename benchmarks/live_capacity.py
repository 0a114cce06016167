"""The highest offered rate a flow sustains live: a criterion on its consumer lag, and a bisection over rates.

``bench scale`` offers its latency phase half of a maximum. Measured over a pre-filled topic with the load
generator idle, that maximum overstates what the machine serves live, where the flow, the broker and the
generator share the cores: at half of it they took about 1.8-1.9 of the 2 cores and the queue grew through a
150 s run (BENCHMARKS.md, "Session 13: long-run tail latency at 100,000 devices"). So the live maximum is
measured as the load runs: a probe offers a rate for a while, and the flow sustains it when its lag does not
keep growing.

The lag at a moment is the batches the generator has sent minus those whose score the flow has produced (by the
score's Kafka timestamp, so the watcher's own delay is not counted); batches never scored stay in it. The flow
scores a poll's messages together, so the lag saws up and down by up to a poll's worth; a least-squares line
through it, sampled every ``SAMPLE_S`` over the probe after its first seconds (``warm_s``: the lag fills to its
steady level, latency times rate), averages that out. **Criterion:** the probe is sustained when that line rises
over the fitted span by at most ``RISE_SHARE`` of the batches offered over it, i.e. the flow scored at least
95 % of what came, and the delay grows by at most 0.05 s per second of load; a queue that grows faster fails.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

SAMPLE_S = 0.1  # the lag is sampled this often for the fit
RISE_SHARE = 0.05  # the fitted lag may rise by at most this share of the batches offered over the fitted span


def lag(sent: Sequence[float], scored: Sequence[float], times: Sequence[float]) -> np.ndarray:
    """Batches sent by each of ``times`` minus batches scored by then (all in seconds on one clock)."""
    at = np.asarray(times, dtype=float)
    return (np.searchsorted(np.sort(np.asarray(sent, dtype=float)), at, side="right")
            - np.searchsorted(np.sort(np.asarray(scored, dtype=float)), at, side="right"))


@dataclass(frozen=True)
class Verdict:
    """One probe judged: whether the flow kept up, the fitted rise of its lag and what the criterion allowed
    (batches), and the batches offered over the fitted span."""

    sustained: bool
    rise: float
    allowed: float
    offered: int


def judge(sent: Sequence[float], scored: Sequence[float], warm_s: float, share: float = RISE_SHARE) -> Verdict:
    """Whether a probe's flow kept up: the least-squares line through its lag, from ``warm_s`` after the first
    batch sent to the last, rises by at most ``share`` of the batches sent over that span (module docstring).

    Parameters
    ----------
    sent
        When each batch of the probe was sent (seconds), scored or not.
    scored
        When the flow produced each score (seconds; the score's Kafka timestamp).
    warm_s
        The probe's first seconds, left out of the fit.
    share
        The rise allowed, as a share of the batches offered over the fitted span.
    """
    if not sent:
        raise ValueError("a probe that sent nothing cannot be judged; offer a higher rate or a longer probe")
    start, end = min(sent) + warm_s, max(sent)
    if end - start < 10 * SAMPLE_S:
        raise ValueError(f"the probe's span after its {warm_s} s warm-up is too short to fit; lengthen the probe")
    times = np.arange(start, end, SAMPLE_S)
    slope = float(np.polyfit(times - start, lag(sent, scored, times), 1)[0])
    offered = int(np.count_nonzero((np.asarray(sent) >= start) & (np.asarray(sent) <= end)))
    rise = slope * (end - start)
    return Verdict(rise <= share * offered, rise, share * offered, offered)


def bisect_maximum(sustains: Callable[[float], bool], low: float, high: float, probes: int
                   ) -> tuple[float, list[tuple[float, bool]]]:
    """The highest rate found sustained by bisection over [``low``, ``high``], and each probe (rate, sustained).

    ``low`` is taken as sustained without a probe and ``high`` as not, so every probe falls between them and the
    answer is within (high - low) / 2**probes below the true limit when that lies in the range; when no probe
    is sustained the answer is ``low`` itself, which the caller should report as a bound, not a measurement."""
    if not 0 < low < high or probes < 1:
        raise ValueError(f"need 0 < low < high and at least one probe, got low={low}, high={high}, probes={probes}")
    tried: list[tuple[float, bool]] = []
    for _ in range(probes):
        rate = (low + high) / 2
        ok = sustains(rate)
        tried.append((rate, ok))
        low, high = (rate, high) if ok else (low, rate)
    return low, tried
