"""Writes ``seasonal_v2_s5.npz``: snapshots of ``seasonal`` in state version 2 as the code before the stuck-sensor
rule wrote them (session 5, main at 568925d: one scalar fewer, no ``run_max``), for the restore test.

Kept for the record of how the fixture was made; it only reproduces the fixture on that older code.
Two series: ``cycle`` (5-minute readings, so the daily and weekly tables exist) and ``fine`` (1-second
readings, no seasonal context). ``seasonal`` with default parameters scores the first ``CUT`` readings; its
snapshot's ``scalars`` and ``mem`` bytes are stored as uint8 arrays, and ``expected`` holds the scores the
same detector then gave for the rest.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from models.anomaly import make_detector

CUT = 2_500


def series(step_ms: int, n: int = 4_000, seed: int = 11) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    t = np.arange(n, dtype=np.int64) * step_ms + 1_700_000_000_000
    v = 20 + 5 * np.sin(2 * np.pi * t / 86_400_000) + rng.normal(0, 0.5, n)
    v[rng.integers(0, n, 20)] += 15.0
    return v, t


def write(path: Path, named: dict[str, tuple[np.ndarray, np.ndarray]]) -> None:
    """Snapshot ``seasonal`` after ``CUT`` readings of each named series and store it with the scores that follow."""
    arrays = {}
    for name, (v, t) in named.items():
        det = make_detector("seasonal")
        det.score_learn(v[:CUT], t[:CUT])
        snap = det.snapshot()
        assert snap["version"] == 2
        arrays[f"{name}/scalars"] = np.frombuffer(snap["scalars"], np.uint8)
        arrays[f"{name}/mem"] = np.frombuffer(snap["mem"], np.uint8)
        arrays[f"{name}/expected"] = det.score_learn(v[CUT:], t[CUT:])
    np.savez_compressed(path, **arrays)


def main() -> None:
    write(Path(__file__).with_name("seasonal_v2_s5.npz"), {"cycle": series(300_000), "fine": series(1_000)})


if __name__ == "__main__":
    main()
