"""Writes ``hst_v1_river.npz``: a snapshot of ``hst`` in state version 1 as the code before the compiled
``hst`` wrote it (``hst`` was river's pipeline then; main at 36a07e9), for the restore test.

Kept for the record of how the fixture was made; it only reproduces the fixture on that older code.
``hst`` with default parameters scores the first 1,130 readings of ``series`` (mid-window: 1,130 is not a
multiple of the window of 250), its snapshot is stored field by field (``scalars/<name>``, ``masses``), and
``expected`` holds the scores the same detector then gave for the remaining 870.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from models.anomaly import make_detector
from models.checkpoint import unpack_array

CUT = 1_130


def series(n: int = 2_000, seed: int = 13) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    t = np.arange(n, dtype=np.int64) * 60_000 + 1_700_000_000_000
    v = 10 + 3 * np.sin(np.arange(n) * 2 * np.pi / 144) + rng.normal(0, 0.3, n)
    v[rng.integers(0, n, 20)] += 8.0
    return v, t


def main() -> None:
    v, t = series()
    det = make_detector("hst")
    det.score_learn(v[:CUT], t[:CUT])
    snap = det.snapshot()
    arrays = {f"scalars/{k}": np.float64(x) for k, x in snap["scalars"].items()}
    arrays["masses"] = unpack_array(snap["buffers"]["masses"], "masses")
    arrays["expected"] = det.score_learn(v[CUT:], t[CUT:])
    np.savez_compressed(Path(__file__).with_name("hst_v1_river.npz"), **arrays)


if __name__ == "__main__":
    main()
