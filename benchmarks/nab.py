"""NAB benchmark: stream every series of a NAB-layout directory through a detector, then score it NAB's way.

Records go through the sensor flow's own processor (``streams.flows.sensor_anomaly.SensorAnomalyProcessor``) one
reading per event, in order, with no labels and no look-ahead: the number we report is what the flow would
have emitted. Labels are read only afterwards, by the scorer and to write the ``label`` column.

``--cv`` is the honest estimate: leave-one-category-out cross-validation (``models.evaluation.cv``) over a
small parameter grid per detector (``GRIDS``), where each fold chooses the parameter set and NAB's threshold
on the other categories and is scored on the held-out one. Grid scores come from the detector's own
``score_learn`` over each whole series (the processor path gives exactly these scores; tests/unit/test_nab_bench.py)
and are cached per file and parameter set, keyed by the detector's source, so reruns and folds reuse them.
"""

from __future__ import annotations

import csv
import hashlib
import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import typer

import models.anomaly
from models.anomaly import DEFAULT_DETECTOR, DETECTORS, make_detector
from models.evaluation import cv, nab

PUBLISHED_41 = {  # ../shared/data/nab/README.md: NAB's own scorer, these 41 files
    "ARTime": (69.08, 59.57, 74.55),
    "numenta (HTM)": (68.58, 62.21, 72.77),
    "contextOSE": (63.78, 59.84, 67.64),
    "randomCutForest": (52.64, 42.24, 60.07),
    "windowedGaussian": (29.06, 14.79, 35.80),
}


LAYOUT = ("data/<category>/<name>.csv (columns timestamp,value), labels/combined_windows.json and "
          "config/profiles.json, as in a checkout of NAB")


def read_series(path: Path) -> tuple[list[str], np.ndarray]:
    """A data file's raw timestamp strings and values; a file that is not NAB's CSV is a ``ValueError`` naming it."""
    with open(path, newline="") as f:
        reader = csv.reader(f)
        header = [h.strip() for h in next(reader, [])]
        if header[:2] != ["timestamp", "value"]:
            raise ValueError(f"{path}: expected columns timestamp,value; got {header}")
        rows = [r for r in reader if r]
    try:
        values = np.array([float(r[1]) for r in rows], dtype=np.float64)
    except (ValueError, IndexError):
        line, row = next((i + 2, r) for i, r in enumerate(rows) if not _is_reading(r))
        raise ValueError(f"{path}, line {line}: expected timestamp,value; got {row}") from None
    return [r[0] for r in rows], values


def _is_reading(row: list[str]) -> bool:
    try:
        float(row[1])
    except (ValueError, IndexError):
        return False
    return True


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
    if not data_dir.is_dir():
        raise ValueError(f"{data_dir} is not a directory; pass a NAB-layout one: {LAYOUT}")
    for cand in (data_dir, data_dir.parent):
        if (cand / "labels" / "combined_windows.json").is_file():
            if not (cand / "config" / "profiles.json").is_file():
                raise ValueError(f"{cand} has no config/profiles.json (NAB's cost profiles); a NAB layout has {LAYOUT}")
            return cand
    raise ValueError(f"no labels/combined_windows.json in or beside {data_dir}; a NAB layout has {LAYOUT}")


def _epoch_ms(stamps: list[str]) -> np.ndarray:
    return nab.parse_timestamps(stamps).astype("datetime64[ms]").astype(np.int64)


Corpus = dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]
Windows = dict[str, list[tuple[np.datetime64, np.datetime64]]]


def load_corpus(data_dir: Path) -> tuple[Corpus, Windows, dict[str, nab.CostMatrix]]:
    """Every series of a NAB-layout directory as ``rel -> (timestamps as datetime64, epoch ms, values)``, with
    its labelled windows and NAB's cost profiles.

    Parameters
    ----------
    data_dir
        A NAB-layout directory (``data/``, ``labels/``, ``config/``).
    """
    data_dir = Path(data_dir)
    label_root = labels_dir(data_dir)
    windows = nab.load_windows(label_root / "labels" / "combined_windows.json")
    profiles = nab.load_profiles(label_root / "config" / "profiles.json")
    series = {}
    for rel in data_files(data_dir):
        stamps, values = read_series(series_root(data_dir) / rel)
        series[rel] = (nab.parse_timestamps(stamps), _epoch_ms(stamps), values)
    return series, windows, profiles


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


# Cross-validation grids: the defaults first (they win ties), then one parameter at a time around them, sized
# so that every detector's grid streams the 41 dev files in ~10 minutes on 2 shared cores (BENCHMARKS-nab.md).
GRIDS: dict[str, list[dict[str, Any]]] = {
    "gauss": [{}, {"alpha": 0.003}, {"alpha": 0.03}, {"alpha": 0.1}, {"warmup": 300}],
    "likelihood": [{}, {"alpha": 0.003}, {"alpha": 0.03}, {"short": 5}, {"short": 20}, {"history": 2000},
                   {"hold": 0}, {"hold": 150}],
    "robust": [{}, {"alpha": 0.003}, {"alpha": 0.03}, {"short": 5}, {"short": 20}, {"spike": 6.0},
               {"spike": 1e9}, {"hold": 150}],
    "seasonal": [{}, {"alpha": 0.003}, {"alpha": 0.03}, {"short": 5}, {"short": 20}, {"spike": 6.0},
                 {"spike": 1e9}, {"hold": 150}, {"ratio": 0.1}, {"ratio": 0.6}],
    "hst": [{}, {"window_size": 1000}],
}


def candidate_name(params: dict[str, Any]) -> str:
    """A parameter set's label: ``defaults`` or ``name=value,...``."""
    return ",".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in sorted(params.items())) or "defaults"


def _source_digest() -> str:
    """A digest of the detectors' code, so cached scores never outlive a change to a detector."""
    h = hashlib.sha256()
    for f in sorted(Path(models.anomaly.__file__).parent.glob("*.py")):
        h.update(f.name.encode() + b"\0" + f.read_bytes())
    return h.hexdigest()[:16]


def grid_scores(
    detector: str,
    grid: list[dict[str, Any]],
    series: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]],
    cache_dir: Path | None,
    advance: Callable[[str, int], None] = lambda _d, _n: None,
) -> dict[str, dict[str, tuple[np.ndarray, np.ndarray]]]:
    """Every file's scores for every parameter set in ``grid``, read from ``cache_dir`` when already computed.

    Parameters
    ----------
    detector
        A name from ``models.anomaly.DETECTORS``.
    grid
        Constructor overrides, one dict per candidate (``{}`` is the defaults).
    series
        ``rel -> (timestamps as datetime64, epoch ms, values)``.
    cache_dir
        Where ``<digest>.npy`` score files are kept; None computes everything.
    advance
        Progress callback (description, records done).
    """
    source = _source_digest()
    out: dict[str, dict[str, tuple[np.ndarray, np.ndarray]]] = {}
    for params in grid:
        try:
            make_detector(detector, **params)
        except TypeError as e:
            raise ValueError(f"grid for {detector!r} has a parameter the detector does not take: {params} ({e})") from e
        label = candidate_name(params)
        files: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        for rel, (ts, ms, values) in series.items():
            key = json.dumps([source, detector, sorted(params.items()), rel, hashlib.sha256(values.tobytes()).hexdigest()])
            path = cache_dir / f"{hashlib.sha256(key.encode()).hexdigest()[:32]}.npy" if cache_dir else None
            if path is not None and path.is_file():
                scores = np.load(path)
            else:
                scores = make_detector(detector, **params).score_learn(values, ms)
                if path is not None:
                    path.parent.mkdir(parents=True, exist_ok=True)
                    np.save(path, scores)
            files[rel] = (ts, scores)
            advance(f"{detector} {label}", len(values))
        out[label] = files
    return out


def run_cv(
    data_dir: Path,
    detectors: list[str] | None = None,
    *,
    cache_dir: Path | None = None,
    json_path: Path | None = None,
    progress: bool = True,
    grids: dict[str, list[dict[str, Any]]] | None = None,
) -> dict[str, Any]:
    """Leave-one-category-out cross-validated NAB scores per detector, beside its in-sample ones.

    Parameters
    ----------
    data_dir
        A NAB-layout directory; its categories are the subfolders of ``data/``.
    detectors
        Which detectors (default: every one with a grid).
    cache_dir
        Per-file score cache (see ``grid_scores``).
    json_path
        Where to write the summary.
    progress
        Show a progress bar.
    grids
        Parameter grids per detector (default ``GRIDS``).
    """
    grids = GRIDS if grids is None else grids
    detectors = list(detectors or grids)
    unknown = [d for d in detectors if d not in DETECTORS or d not in grids]
    if unknown:
        raise ValueError(f"no detector or no grid for {unknown}; known: {', '.join(sorted(set(DETECTORS) & set(grids)))}")
    data_dir = Path(data_dir)
    series, windows, profiles = load_corpus(data_dir)
    folds = cv.leave_one_category_out(series)
    records = sum(len(v) for _, _, v in series.values())
    summary: dict[str, Any] = {
        "files": len(series),
        "records": records,
        "categories": [f.held_out for f in folds],
        "detectors": {},
    }
    with _progress(progress, records * sum(len(grids[d]) for d in detectors)) as advance:
        for det in detectors:
            cands = grid_scores(det, grids[det], series, cache_dir, advance)
            in_sample = {n: nab.score_corpus(c, windows, profiles) for n, c in cands.items()}
            chosen = cv.cross_validate(cands, windows, profiles)
            defaults = next(iter(cands))
            summary["detectors"][det] = {
                "grid": list(cands),
                "in_sample_defaults": {p: round(in_sample[defaults][p].normalized, 2) for p in nab.PROFILES},
                "in_sample_best": {
                    p: dict(zip(("score", "candidate"), max((round(r[p].normalized, 2), n) for n, r in in_sample.items())))
                    for p in nab.PROFILES
                },
                "cv": {p: round(cv.pooled(chosen[p]), 2) for p in nab.PROFILES},
                "folds": {
                    p: [
                        {"held_out": f.held_out, "candidate": f.candidate, "threshold": f.threshold,
                         "train_score": round(f.train_score, 2),
                         "score": None if f.score is None else round(f.score, 2), "raw": round(f.raw, 3),
                         "fp": f.fp, "files": f.files}
                        for f in chosen[p]
                    ]
                    for p in nab.PROFILES
                },
            }
            track_cv_choices(det, summary["detectors"][det], data_dir)
    summary["best_cv_standard"] = max(summary["detectors"], key=lambda d: summary["detectors"][d]["cv"]["standard"])
    if json_path is not None:
        Path(json_path).write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def track_cv_choices(detector: str, result: dict[str, Any], data_dir: Path) -> None:
    """One MLflow run per fold: the parameters cross-validation chose without the held-out category, per
    profile, and the scores they got on it (experiment ``eddyline/nab-cv``)."""
    from models.tracking import log_training

    for i, held_out in enumerate(f["held_out"] for f in result["folds"]["standard"]):
        folds = {p: result["folds"][p][i] for p in nab.PROFILES}
        files = folds["standard"]["files"]
        total = sum(f["files"] for f in result["folds"]["standard"])
        log_training(
            "eddyline/nab-cv", f"{detector} without {held_out}", tags={"detector": detector, "held_out": held_out},
            params={"detector": detector, "held_out": held_out, "grid_size": len(result["grid"]),
                    "chosen": {p: {"candidate": f["candidate"], "threshold": f["threshold"]} for p, f in folds.items()}},
            metrics={p: {k: f[k] for k in ("train_score", "score", "raw", "fp")} for p, f in folds.items()},
            datasets=[("nab", str(data_dir), "train: the other categories", total - files),
                      ("nab", f"{data_dir}/data/{held_out}", "test: held-out category", files)])


SHORT = {"standard": "standard", "reward_low_FP_rate": "low FP", "reward_low_FN_rate": "low FN"}


def print_cv_tables(summary: dict[str, Any], console: Any = None) -> None:
    from rich.console import Console
    from rich.table import Table

    console = console or Console()
    t = Table(title=f"NAB, leave-one-category-out CV ({summary['files']} files, {len(summary['categories'])} folds)")
    t.add_column("detector")
    for p in nab.PROFILES:
        t.add_column(f"{SHORT[p]} in-sample", justify="right")
        t.add_column(f"{SHORT[p]} CV", justify="right")
    for det, r in summary["detectors"].items():
        t.add_row(det, *(x for p in nab.PROFILES for x in (f"{r['in_sample_defaults'][p]:.2f}", f"{r['cv'][p]:.2f}")))
    console.print(t)
    for det, r in summary["detectors"].items():
        f = Table(title=f"{det}: held-out score (false-positive records), chosen on the other categories")
        f.add_column("held out")
        f.add_column("standard chose")
        for p in nab.PROFILES:
            f.add_column(SHORT[p], justify="right")
        for i, cat in enumerate(summary["categories"]):
            rows = [r["folds"][p][i] for p in nab.PROFILES]
            cells = [("n/a" if x["score"] is None else f"{x['score']:.2f}") + f" ({x['fp']})" for x in rows]
            f.add_row(cat, rows[0]["candidate"], *cells)
        f.add_row("[bold]pooled[/bold]", "", *(f"{r['cv'][p]:.2f}" for p in nab.PROFILES))
        console.print(f)
    console.print(f"best cross-validated standard score: [bold]{summary['best_cv_standard']}[/bold]")


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
    detector: Annotated[str | None, typer.Option(
        "--detector", help=f"one of: {', '.join(sorted(DETECTORS))} (default {DEFAULT_DETECTOR}; with --cv, all)")] = None,
    results_dir: Annotated[Path | None, typer.Option("--results-dir", help="write NAB result files under OUT/<detector>/")] = None,
    scores_from: Annotated[Path | None, typer.Option("--scores-from", help="score existing result files instead of running")] = None,
    json_path: Annotated[Path | None, typer.Option("--json", help="write the summary as JSON")] = None,
    cross_validate: Annotated[bool, typer.Option(
        "--cv", help="leave-one-category-out cross-validation over each detector's parameter grid")] = False,
    cache: Annotated[Path, typer.Option("--cache", help="per-file score cache for --cv")] = Path(".eddyline/nab-cv"),
) -> None:
    """Stream NAB through a detector (the sensor flow's code path) and print NAB's scores; --cv for the honest estimate."""
    try:
        if cross_validate:
            if results_dir is not None or scores_from is not None:
                raise ValueError("--cv streams every grid point itself: drop --results-dir and --scores-from")
            print_cv_tables(run_cv(data, [detector] if detector else None, cache_dir=cache, json_path=json_path))
            return
        summary = run(data, detector or DEFAULT_DETECTOR, results_dir=results_dir, scores_from=scores_from,
                      json_path=json_path, progress=True)
    except ValueError as e:
        raise typer.BadParameter(str(e)) from e
    print_tables(summary)


if __name__ == "__main__":
    typer.run(command)
