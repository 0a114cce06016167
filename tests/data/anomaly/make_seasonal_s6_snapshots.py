"""Writes ``seasonal_v2_s6.npz``: snapshots of ``seasonal`` in state version 2 as the code before the count view
wrote them (session 6 round 4, main at 0c1c89e: one scalar fewer, no ``count_n``), for the restore test.

Kept for the record of how the fixture was made; it only reproduces the fixture on that older code
(``git archive 0c1c89e models | tar -x -C OLD`` and run with ``PYTHONPATH=OLD:.``). The series of
``make_seasonal_s5_snapshots`` (``cycle``, ``fine``) and ``counts``: bursty Poisson counts every 5 minutes,
which the new code would judge in Anscombe's view, so the test shows that a restored older snapshot keeps the
old judgement. Stored as there: ``scalars`` and ``mem`` bytes after ``CUT`` readings, ``expected`` the scores
the same detector then gave for the rest.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tests.data.anomaly.make_seasonal_s5_snapshots import series, write


def bursty(n: int = 4_000, seed: int = 12) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.random.Generator]:
    """A request counter every 5 minutes: a daily rate (15-45 a reading) times routine bursts (1% of readings
    start 1-5 readings at 2-31 times the rate, Pareto-tailed); the rate, the burst factors, the timestamps and
    the generator, for drawing the counts (``rng.poisson(rate * burst)``) after changing them."""
    rng = np.random.default_rng(seed)
    t = np.arange(n, dtype=np.int64) * 300_000 + 1_700_006_400_000  # from a midnight
    rate = 30.0 * (1.0 + 0.5 * np.sin(2 * np.pi * t / 86_400_000))
    burst = np.ones(n)
    for s in np.flatnonzero(rng.random(n) < 0.01):
        burst[s : s + rng.integers(1, 6)] = min(1.0 + rng.pareto(1.5), 30.0) + 1.0
    return rate, burst, t, rng


def counts() -> tuple[np.ndarray, np.ndarray]:
    rate, burst, t, rng = bursty()
    return rng.poisson(rate * burst).astype(np.float64), t


def main() -> None:
    write(Path(__file__).with_name("seasonal_v2_s6.npz"),
          {"cycle": series(300_000), "fine": series(1_000), "counts": counts()})


if __name__ == "__main__":
    main()
