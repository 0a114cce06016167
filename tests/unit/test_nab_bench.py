"""bench nab streams series through the sensor flow's processor, writes NAB result files, and re-scores them."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from benchmarks import detectors as bench_detectors
from benchmarks import nab as bench_nab
from models.anomaly import DEFAULT_DETECTOR, make_detector
from models.evaluation import nab

NAB_DIR = Path(__file__).resolve().parents[3] / "shared" / "data" / "nab"
FILES = ["realAdExchange/exchange-2_cpc_results.csv", "artificialNoAnomaly/art_flatline.csv"]


@pytest.fixture
def small_nab(tmp_path: Path) -> Path:
    if not NAB_DIR.is_dir():
        pytest.skip("NAB data not present")
    root = tmp_path / "nab"
    for rel in FILES:
        (root / "data" / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(NAB_DIR / "data" / rel, root / "data" / rel)
    labels = json.loads((NAB_DIR / "labels" / "combined_windows.json").read_text())
    (root / "labels").mkdir()
    (root / "labels" / "combined_windows.json").write_text(json.dumps({k: labels[k] for k in FILES}))
    shutil.copytree(NAB_DIR / "config", root / "config")
    return root


def test_run_writes_results_and_json_and_rescoring_agrees(small_nab: Path, tmp_path: Path) -> None:
    out, js = tmp_path / "out", tmp_path / "s.json"
    summary = bench_nab.run(small_nab, DEFAULT_DETECTOR, results_dir=out, scores_from=None, json_path=js, progress=False)
    assert json.loads(js.read_text()) == summary
    assert summary["detector"] == DEFAULT_DETECTOR and summary["files"] == 2
    assert set(summary["profiles"]) == {"standard", "reward_low_FP_rate", "reward_low_FN_rate"}
    assert set(summary["categories"]["standard"]) == {"realAdExchange", "artificialNoAnomaly"}
    result = out / DEFAULT_DETECTOR / "realAdExchange" / f"{DEFAULT_DETECTOR}_exchange-2_cpc_results.csv"
    with open(result) as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["timestamp", "value", "anomaly_score", "label"]
    assert {r["label"] for r in rows} == {"0", "1"}
    # The processor path gives exactly the detector's own scores on the whole series (no look-ahead, no labels).
    stamps, values = bench_nab.read_series(small_nab / "data" / FILES[0])
    direct = make_detector(DEFAULT_DETECTOR).score_learn(values, bench_nab._epoch_ms(stamps))
    np.testing.assert_allclose([float(r["anomaly_score"]) for r in rows], direct, atol=1e-12)
    again = bench_nab.run(small_nab, scores_from=out / DEFAULT_DETECTOR, results_dir=None, json_path=None, progress=False)
    assert again["profiles"] == summary["profiles"]


def test_unknown_detector_is_a_clear_error(small_nab: Path) -> None:
    with pytest.raises(ValueError, match="known:"):
        bench_nab.run(small_nab, "nope", results_dir=None, scores_from=None, json_path=None, progress=False)


def test_detector_throughput_reports_every_detector(tmp_path: Path) -> None:
    summary = bench_detectors.run(tmp_path / "d.json", budget_s=0.01, max_readings=400)
    assert set(summary["detectors"]) >= {"hst", DEFAULT_DETECTOR}
    assert all(r > 0 for rates in summary["detectors"].values() for r in rates.values())
    assert json.loads((tmp_path / "d.json").read_text()) == summary


def test_bench_nab_cv_writes_folds_and_reuses_its_cache(small_nab: Path, tmp_path: Path, monkeypatch) -> None:
    from models import tracking

    monkeypatch.setenv("MLFLOW_TRACKING_URI", tracking.embedded_uri(tmp_path / "mlflow"))
    grids = {"gauss": [{}, {"alpha": 0.03}]}
    cache, js = tmp_path / "cache", tmp_path / "s.json"
    summary = bench_nab.run_cv(small_nab, ["gauss"], cache_dir=cache, json_path=js, progress=False, grids=grids)
    client = tracking.client()
    runs = client.search_runs([client.get_experiment_by_name("eddyline/nab-cv").experiment_id])
    assert sorted(r.data.tags["held_out"] for r in runs) == summary["categories"]  # a run per fold's choice
    chosen = next(r for r in runs if r.data.tags["held_out"] == "realAdExchange")
    fold = summary["detectors"]["gauss"]["folds"]["standard"][1]
    assert chosen.data.params["chosen.standard.candidate"] == fold["candidate"]
    assert chosen.data.metrics["standard.train_score"] == fold["train_score"]
    assert json.loads(js.read_text()) == summary
    assert summary["categories"] == ["artificialNoAnomaly", "realAdExchange"]
    g = summary["detectors"]["gauss"]
    assert g["grid"] == ["defaults", "alpha=0.03"]
    for p in nab.PROFILES:
        assert [f["held_out"] for f in g["folds"][p]] == summary["categories"]
        assert all(f["candidate"] in g["grid"] for f in g["folds"][p])
    assert g["folds"]["standard"][0]["score"] is None  # no labelled window in artificialNoAnomaly
    assert summary["best_cv_standard"] == "gauss"
    assert len(list(cache.glob("*.npy"))) == 4  # 2 parameter sets x 2 files
    again = bench_nab.run_cv(small_nab, ["gauss"], cache_dir=cache, json_path=None, progress=False, grids=grids)
    assert again == summary and len(list(cache.glob("*.npy"))) == 4


def test_bench_nab_cv_refuses_a_grid_the_detector_does_not_take(small_nab: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="does not take"):
        bench_nab.run_cv(small_nab, ["gauss"], cache_dir=None, progress=False, grids={"gauss": [{"nope": 1}]})
    with pytest.raises(ValueError, match="no detector or no grid"):
        bench_nab.run_cv(small_nab, ["nope"], cache_dir=None, progress=False)


def test_a_folder_that_is_not_a_nab_layout_says_what_one_has(tmp_path: Path) -> None:
    """bench nab --data on the wrong folder: one line naming what is missing, never a traceback."""
    from typer.testing import CliRunner

    from streams.cli import app

    def said(data: Path) -> str:
        result = CliRunner().invoke(app, ["bench", "nab", "--data", str(data)])
        assert result.exit_code == 2 and "Traceback" not in result.output, result.output
        return " ".join(result.output.split())

    assert "is not a directory" in said(tmp_path / "missing") and "labels/combined_windows.json" in said(tmp_path)
    (tmp_path / "labels").mkdir()
    (tmp_path / "labels" / "combined_windows.json").write_text('{"cat/x.csv": []}')
    assert "has no config/profiles.json" in said(tmp_path)


def test_a_csv_that_is_not_nab_s_names_the_file_and_line(tmp_path: Path) -> None:
    (tmp_path / "x.csv").write_text("timestamp,value\n2020-01-01 00:00:00,1\n2020-01-01 00:05:00,abc\n")
    with pytest.raises(ValueError, match=r"x\.csv, line 3: expected timestamp,value; got \['2020-01-01 00:05:00', 'abc'\]"):
        bench_nab.read_series(tmp_path / "x.csv")
    (tmp_path / "empty.csv").write_text("")
    with pytest.raises(ValueError, match=r"empty\.csv: expected columns timestamp,value; got \[\]"):
        bench_nab.read_series(tmp_path / "empty.csv")
