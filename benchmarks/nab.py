"""NAB benchmark: stream every series of a NAB-layout directory through a detector, then score it NAB's way.

Records go through the sensor flow's own processor (``streams.flows.sensor_anomaly.SensorAnomalyProcessor``) one
reading per event, in order, with no labels and no look-ahead: the number we report is what the flow would
have emitted. Labels are read only afterwards, by the scorer and to write the ``label`` column.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import typer

from models.anomaly import DEFAULT_DETECTOR, DETECTORS
from models.evaluation import nab

PUBLISHED_41 = {  # ../shared/data/nab/README.md: NAB's own scorer, these 41 files
    "ARTime": (69.08, 59.57, 74.55),
    "numenta (HTM)": (68.58, 62.21, 72.77),
    "contextOSE": (63.78, 59.84, 67.64),
    "randomCutForest": (52.64, 42.24, 60.07),
    "windowedGaussian": (29.06, 14.79, 35.80),
}


def read_series(path: Path) -> tuple[list[str], np.ndarray]:
    """A data file's raw timestamp strings and values."""
    with open(path, newline="") as f:
        reader = csv.reader(f)
        header = [h.strip() for h in next(reader)]
        if header[:2] != ["timestamp", "value"]:
            raise ValueError(f"{path}: expected columns timestamp,value; got {header}")
        rows = [r for r in reader if r]
    return [r[0] for r in rows], np.array([float(r[1]) for r in rows], dtype=np.float64)


def data_files(data_dir: Path) -> list[str]:
    """``<category>/<file>.csv`` for every series under ``data_dir/data`` (or ``data_dir`` itself)."""
    root = series_root(data_dir)
    files = sorted(str(p.relative_to(root)) for p in root.glob("*/*.csv"))
    if not files:
        raise ValueError(f"no NAB series under {root}/<category>/*.csv")
    return files


def series_root(data_dir: Path) -> Path:
    return data_dir / "data" if (data_dir / "data").is_dir() else data_dir


def labels_dir(data_dir: Path) -> Path:
    for cand in (data_dir, data_dir.parent):
        if (cand / "labels" / "combined_windows.json").is_file():
            return cand
    raise ValueError(f"no labels/combined_windows.json beside {data_dir}")


def _epoch_ms(stamps: list[str]) -> np.ndarray:
    return nab.parse_timestamps(stamps).astype("datetime64[ms]").astype(np.int64)


def make_streamer(detector: str, detector_params: dict[str, Any] | None = None) -> Callable[[str, np.ndarray, np.ndarray], np.ndarray]:
    """A function that streams one series through the sensor flow's processor and returns its raw scores."""
    from streams.processor import Event
    from streams.flows.sensor_anomaly import SCORES_TOPIC, SOURCE_TOPIC, SensorAnomalyProcessor

    def stream(name: str, values: np.ndarray, stamps_ms: np.ndarray) -> np.ndarray:
        device = f"nab/{name}"
        proc = SensorAnomalyProcessor(device, detector=detector, detector_params=detector_params)
        out = np.empty(len(values), dtype=np.float64)
        vals, stamps = values.tolist(), stamps_ms.tolist()
        for i in range(len(vals)):
            record = {
                "event_id": f"{device}/{i}",
                "event_time": stamps[i],
                "producer": "eddyline/bench-nab",
                "device_id": device,
                "seq": i,
                "series": [{"sensor": "value", "unit": None, "timestamps": [stamps[i]], "values": [vals[i]]}],
            }
            emits = proc.process([Event(topic=SOURCE_TOPIC, key=device, record=record)])
            scores = [e for e in emits if e.topic == SCORES_TOPIC]
            if len(scores) != 1:
                raise RuntimeError(f"{name}: record {i} gave {len(scores)} score events, expected 1")
            out[i] = scores[0].record["series"][0]["scores"][0]
        return out

    return stream


@contextmanager
def _progress(enabled: bool, total: int) -> Iterator[Callable[[str, int], None]]:
    if not enabled:
        yield lambda _desc, _n: None
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    with Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(), transient=False
    ) as bar:
        task = bar.add_task("NAB", total=total)
        yield lambda desc, n: bar.update(task, advance=n, description=desc)


def _write_result(out_dir: Path, detector: str, rel: str, stamps: list[str], values: np.ndarray, scores: np.ndarray,
                  windows: list[tuple[np.datetime64, np.datetime64]]) -> None:
    category, fname = rel.split("/", 1)
    label = np.zeros(len(stamps), dtype=np.int64)
    ts = nab.parse_timestamps(stamps)
    for a, b in nab.window_indices(ts, windows):
        label[a : b + 1] = 1
    target = out_dir / detector / category / f"{detector}_{fname}"
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["timestamp", "value", "anomaly_score", "label"])
        for row in zip(stamps, values.tolist(), scores.tolist(), label.tolist()):
            w.writerow(row)


def run(
    data_dir: Path,
    detector: str = DEFAULT_DETECTOR,
    *,
    results_dir: Path | None = None,
    scores_from: Path | None = None,
    json_path: Path | None = None,
    progress: bool = True,
    detector_params: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Run (or, with ``scores_from``, just score) a detector on a NAB-layout directory; return the summary."""
    data_dir = Path(data_dir)
    label_root = labels_dir(data_dir)
    windows = nab.load_windows(label_root / "labels" / "combined_windows.json")
    profiles = nab.load_profiles(label_root / "config" / "profiles.json")
    results: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    records = 0
    if scores_from is not None:
        results = nab.load_results_dir(Path(scores_from))
        records = sum(len(s) for _, s in results.values())
        name = Path(scores_from).name
    else:
        if detector not in DETECTORS:
            raise ValueError(f"unknown anomaly detector {detector!r}; known: {', '.join(sorted(DETECTORS))}")
        name = detector
        files = data_files(data_dir)
        loaded = {rel: read_series(series_root(data_dir) / rel) for rel in files}
        total = sum(len(v) for _, v in loaded.values())
        stream = make_streamer(detector, detector_params)
        with _progress(progress, total) as advance:
            for rel, (stamps, values) in loaded.items():
                scores = stream(rel, values, _epoch_ms(stamps))
                results[rel] = (nab.parse_timestamps(stamps), scores)
                records += len(values)
                if results_dir is not None:
                    _write_result(Path(results_dir), detector, rel, stamps, values, scores, windows.get(rel, []))
                advance(rel, len(values))
    scored = nab.score_corpus(results, windows, profiles)
    summary: dict[str, Any] = {
        "detector": name,
        "files": len(results),
        "records": records,
        "profiles": {p: round(r.normalized, 2) for p, r in scored.items()},
        "thresholds": {p: r.threshold for p, r in scored.items()},
        "categories": {
            p: {c: _round(v) for c, v in nab.category_table(r, profiles[p]).items()} for p, r in scored.items()
        },
    }
    if json_path is not None:
        Path(json_path).write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def _round(v: dict[str, Any]) -> dict[str, Any]:
    return {k: (round(x, 2) if isinstance(x, float) else x) for k, x in v.items()}


def print_tables(summary: dict[str, Any], console: Any = None) -> None:
    from rich.console import Console
    from rich.table import Table

    console = console or Console()
    t = Table(title=f"NAB scores: {summary['detector']} ({summary['files']} files, {summary['records']} records)")
    t.add_column("detector")
    for p in nab.PROFILES:
        t.add_column(p, justify="right")
    t.add_row(f"[bold]{summary['detector']}[/bold] (this run)", *(f"{summary['profiles'][p]:.2f}" for p in nab.PROFILES))
    if summary["files"] == 41:
        for det, row in PUBLISHED_41.items():
            t.add_row(f"{det} (published)", *(f"{x:.2f}" for x in row))
    console.print(t)
    c = Table(title="per category (corpus threshold; normalised like the corpus; FP count)")
    c.add_column("category")
    for p in nab.PROFILES:
        c.add_column(p, justify="right")
    for cat in summary["categories"]["standard"]:
        cells = []
        for p in nab.PROFILES:
            v = summary["categories"][p][cat]
            score = "n/a" if v["score"] is None else f"{v['score']:.2f}"
            cells.append(f"{score} (fp {v['fp']})")
        c.add_row(cat, *cells)
    console.print(c)


def command(
    data: Annotated[Path, typer.Option("--data", help="NAB-layout directory (data/, labels/, config/)")],
    detector: Annotated[str, typer.Option("--detector", help=f"one of: {', '.join(sorted(DETECTORS))}")] = DEFAULT_DETECTOR,
    results_dir: Annotated[Path | None, typer.Option("--results-dir", help="write NAB result files under OUT/<detector>/")] = None,
    scores_from: Annotated[Path | None, typer.Option("--scores-from", help="score existing result files instead of running")] = None,
    json_path: Annotated[Path | None, typer.Option("--json", help="write the summary as JSON")] = None,
) -> None:
    """Stream NAB through a detector (the sensor flow's code path) and print NAB's scores."""
    try:
        summary = run(data, detector, results_dir=results_dir, scores_from=scores_from, json_path=json_path, progress=True)
    except ValueError as e:
        raise typer.BadParameter(str(e)) from e
    print_tables(summary)


if __name__ == "__main__":
    typer.run(command)
