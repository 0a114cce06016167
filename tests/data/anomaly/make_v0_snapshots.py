"""Writes ``snapshots_v0.npz``: detector snapshots in the format of state version 0 (a flat float64 ``state``
vector; ``hst``: a pickled river pipeline), taken with the code before compact state, for the restore tests.

Kept for the record of how the fixture was made; it only reproduces the fixture on that older code.
Each detector scores the conformance series' first 400 readings with default parameters; ``<name>/expected``
holds the scores that the same detector then gave for the remaining 500. ``<name>/long_state`` and
``<name>/long_expected`` (robust, seasonal) do the same at reading 7,000 of a 9,000-reading series
(``long_series``), past the likelihood history of 6,000, where version 0 no longer holds every value that
version 1's block sums were made of.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from models.anomaly import DETECTORS, make_detector


def series(n: int = 900, seed: int = 7) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    t = np.arange(n, dtype=np.int64) * 60_000 + 1_700_000_000_000
    v = 10 + 3 * np.sin(np.arange(n) * 2 * np.pi / 144) + rng.normal(0, 0.3, n)
    v[n // 2 : n // 2 + 5] += 8.0
    v[3 * n // 4 :] += 4.0
    return v, t


def long_series(n: int = 9_000, seed: int = 5) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    t = np.arange(n, dtype=np.int64) * 300_000 + 1_700_000_000_000
    v = 20 + 5 * np.sin(2 * np.pi * t / 86_400_000) + rng.normal(0, 0.5, n)
    v[rng.integers(0, n, n // 300)] += 15
    return v, t


def main() -> None:
    v, t = series()
    arrays: dict[str, np.ndarray] = {}
    for name in sorted(DETECTORS):
        det = make_detector(name)
        det.score_learn(v[:400], t[:400])
        snap = det.snapshot()
        if "state" in snap:
            arrays[f"{name}/state"] = np.asarray(snap["state"], dtype=np.float64)
        else:
            arrays[f"{name}/model"] = np.frombuffer(snap["model"], dtype=np.uint8)
        arrays[f"{name}/expected"] = det.score_learn(v[400:], t[400:])
    lv, lt = long_series()
    for name in ("robust", "seasonal"):
        det = make_detector(name)
        det.score_learn(lv[:7_000], lt[:7_000])
        arrays[f"{name}/long_state"] = np.asarray(det.snapshot()["state"], dtype=np.float64)
        arrays[f"{name}/long_expected"] = det.score_learn(lv[7_000:], lt[7_000:])
    np.savez_compressed(Path(__file__).with_name("snapshots_v0.npz"), **arrays)


if __name__ == "__main__":
    main()
