"""Detector throughput: readings per second on one core, ours beside river's HalfSpaceTrees in the same run.

The baseline is ``hst-river``: river's own ``MinMaxScaler() | HalfSpaceTrees``, one reading at a time. ``hst``
is our compiled reimplementation that gives river's scores exactly (``models/anomaly/hst.py``).

Each detector scores the same synthetic sensor series (5-minute readings with a daily cycle, noise and
spikes, so that ``seasonal`` runs its time-of-day models) in the batch sizes the sensor flow sees (1, 10 and 200 readings per call), after a warm-up call so numba's compile is not timed.

Beside speed, what one series costs in memory (``state_bytes``): after 7,000 readings sampled every second
(no usable daily cycle) and every 5 minutes (daily and weekly tables), the live state arrays, the snapshot
as plain data, and the Python heap one detector object takes in all (tracemalloc over 100 of them, each
after 100 readings: buffers are sized by then).
"""

from __future__ import annotations

import json
import os
import platform
import time
import tracemalloc
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import typer

from models.anomaly import DETECTORS, make_detector
from models.checkpoint import plain_nbytes

BATCHES = (1, 10, 200)
BASELINE = "hst-river"


def _series(n: int, seed: int = 11) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    t = 1_700_000_000_000 + np.arange(n, dtype=np.int64) * 300_000
    v = 20 + 5 * np.sin(np.arange(n) * 2 * np.pi / 288) + rng.normal(0, 0.5, n)
    v[rng.integers(0, n, n // 500)] += 15
    return v, t


def _rate(name: str, batch: int, budget_s: float, max_readings: int) -> float:
    v, t = _series(max_readings)
    det = make_detector(name)
    det.score_learn(v[:batch], t[:batch])  # compile / warm up
    det = make_detector(name)
    done, start = 0, time.perf_counter()
    while done + batch <= max_readings:
        det.score_learn(v[done : done + batch], t[done : done + batch])
        done += batch
        if time.perf_counter() - start > budget_s:
            break
    return done / (time.perf_counter() - start)


def state_bytes(name: str, step_ms: int, readings: int = 7_000, copies: int = 100) -> dict[str, int | None]:
    """Bytes one series keeps with detector ``name`` at sampling step ``step_ms`` (see the module docstring)."""
    v, t = _series(readings)
    t = t[0] + np.arange(readings, dtype=np.int64) * step_ms
    det = make_detector(name)
    det.score_learn(v, t)
    live = det.state_nbytes() if hasattr(det, "state_nbytes") else None
    tracemalloc.start()
    try:
        base, kept = tracemalloc.get_traced_memory()[0], []
        for _ in range(copies):
            d = make_detector(name)
            d.score_learn(v[:100], t[:100])
            kept.append(d)
        heap = (tracemalloc.get_traced_memory()[0] - base) // copies
    finally:
        tracemalloc.stop()
    return {"live": live, "snapshot": plain_nbytes(det.snapshot()), "heap": heap}


def run(json_path: Path | None = None, *, budget_s: float = 2.0, max_readings: int = 400_000) -> dict[str, Any]:
    """readings/s per detector and batch size (single thread, so per core)."""
    rates = {
        name: {str(b): round(_rate(name, b, budget_s, max_readings if name != BASELINE else 20_000)) for b in BATCHES}
        for name in sorted(DETECTORS)
    }
    summary = {
        "unit": "readings per second, one core",
        "batches": list(BATCHES),
        "detectors": rates,
        "baseline": BASELINE,
        "speedup_vs_river_hst_at_200": {
            n: round(r["200"] / rates[BASELINE]["200"], 1) for n, r in rates.items() if n != BASELINE
        },
        "state_bytes": {
            n: {"no_cycle_1s": state_bytes(n, 1_000), "cycle_5min": state_bytes(n, 300_000)}
            for n in sorted(DETECTORS)
            if n != BASELINE
        },
        "machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(), "python": platform.python_version()},
    }
    if json_path is not None:
        Path(json_path).write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def command(
    json_path: Annotated[Path | None, typer.Option("--json", help="write the results as JSON")] = None,
    seconds: Annotated[float, typer.Option("--seconds", help="time budget per detector and batch size")] = 2.0,
) -> None:
    """Measure each detector's readings/s beside river's HalfSpaceTrees."""
    from rich.console import Console
    from rich.table import Table

    summary = run(json_path, budget_s=seconds)
    table = Table(title="Detector throughput (readings/s, one core)")
    table.add_column("detector")
    for b in BATCHES:
        table.add_column(f"batch {b}", justify="right")
    table.add_column(f"x {BASELINE} (batch 200)", justify="right")
    for name, r in summary["detectors"].items():
        x = summary["speedup_vs_river_hst_at_200"].get(name)
        table.add_row(name, *(f"{r[str(b)]:,}" for b in BATCHES), "1.0 (baseline)" if name == BASELINE else f"{x:,}")
    Console().print(table)
    sizes = Table(title="State per series (bytes): live arrays / snapshot / Python heap")
    sizes.add_column("detector")
    sizes.add_column("no cycle (1 s step)", justify="right")
    sizes.add_column("daily + weekly cycle (5 min step)", justify="right")
    for name, row in summary["state_bytes"].items():
        sizes.add_row(name, *(f"{r['live']:,} / {r['snapshot']:,} / {r['heap']:,}" for r in row.values()))
    Console().print(sizes)


if __name__ == "__main__":
    typer.run(command)
