"""The synthetic suite of issue 14's series kinds (benchmarks/nab_synthetic.py): reproducible, NAB's layout and
labelling, and scored by our NAB scorer."""

from __future__ import annotations

import filecmp
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from benchmarks import nab_synthetic
from benchmarks.nab import _epoch_ms, data_files, read_series, series_root
from models.evaluation import nab


def test_the_same_seed_writes_the_same_suite_and_another_seed_does_not(tmp_path: Path) -> None:
    a = nab_synthetic.write_suite(tmp_path / "a", seed=1, files_per_kind=2)
    b = nab_synthetic.write_suite(tmp_path / "b", seed=1, files_per_kind=2)
    c = nab_synthetic.write_suite(tmp_path / "c", seed=2, files_per_kind=2)
    files = data_files(a)
    assert len(files) == 2 * len(nab_synthetic.KINDS)
    assert files == data_files(b) == data_files(c)
    for rel in [*files, "../labels/combined_windows.json"]:
        assert filecmp.cmp(series_root(a) / rel, series_root(b) / rel, shallow=False)
    assert not all(filecmp.cmp(series_root(a) / rel, series_root(c) / rel, shallow=False) for rel in files)


def test_every_file_has_one_nab_window_around_its_anomaly_and_time_moves_forward(tmp_path: Path) -> None:
    suite = nab_synthetic.write_suite(tmp_path / "s", seed=0, files_per_kind=4)
    windows = nab.load_windows(suite / "labels" / "combined_windows.json")
    for rel in data_files(suite):
        stamps, values = read_series(series_root(suite) / rel)
        ts = nab.parse_timestamps(stamps)
        (lo, hi), = nab.window_indices(ts, windows[rel])
        assert hi - lo == 2 * (len(values) // 20)  # 10% of the file, centred
        assert lo >= nab.probation_length(len(values))  # the anomaly is scored, not in NAB's probation
        assert np.all(np.diff(_epoch_ms(stamps)) > 0)
    irregular = [np.diff(_epoch_ms(read_series(series_root(suite) / rel)[0])) for rel in data_files(suite)
                 if rel.startswith("irregularSampling/")]
    assert any(gaps[:5].max() == 1_000 for gaps in irregular)  # a reconnect burst
    assert all(gaps.max() > gaps.min() * 10 for gaps in irregular)


ALL_KINDS = {**nab_synthetic.KINDS, **nab_synthetic.FLEET_KINDS}


@pytest.mark.parametrize("kind", list(ALL_KINDS))
def test_each_kind_puts_its_anomaly_in_the_scored_part_of_the_file(kind: str) -> None:
    make = ALL_KINDS[kind]
    for i in range(4):
        _, x, at = make(np.random.default_rng([9, 0, i]), i)
        assert 0.55 * nab_synthetic.N <= at <= 0.85 * nab_synthetic.N
        assert np.isfinite(x).all()


def test_the_fleet_suite_is_its_own_directory_and_irregular_where_it_says(tmp_path: Path) -> None:
    fleet = nab_synthetic.write_suite(tmp_path / "f", seed=0, files_per_kind=2, kinds=nab_synthetic.FLEET_KINDS)
    files = data_files(fleet)
    assert {rel.split("/")[0] for rel in files} == set(nab_synthetic.FLEET_KINDS)
    windows = nab.load_windows(fleet / "labels" / "combined_windows.json")
    for rel in files:
        stamps, values = read_series(series_root(fleet) / rel)
        (lo, hi), = nab.window_indices(nab.parse_timestamps(stamps), windows[rel])
        assert lo >= nab.probation_length(len(values))
        gaps = np.diff(_epoch_ms(stamps))
        assert np.all(gaps > 0)
        if rel.startswith("trafficIrregular/"):
            assert gaps.max() >= 3_600_000  # a missing stretch
            early, late = np.median(gaps[: len(gaps) // 4]), np.median(gaps[-len(gaps) // 4 :])
            assert max(early, late) / min(early, late) > 2  # the rate changed
        if rel.startswith("heavyTailedCounts/"):
            assert np.all(values == np.floor(values)) and values.min() >= 0


def test_scores_per_kind_for_every_detector(tmp_path: Path) -> None:
    suite = nab_synthetic.write_suite(tmp_path / "s", seed=0, files_per_kind=1)
    out = nab_synthetic.score_suite(suite, ("seasonal@stuck=16", "seasonal"))
    assert out["files"] == len(nab_synthetic.KINDS)
    for row in out["detectors"].values():
        assert set(row["kinds"]) == set(nab_synthetic.KINDS)
        assert set(row["profiles"]) == set(nab.PROFILES)
    # the stuck-sensor file of seed 0 is a frozen reading: only the stuck rule sees it there
    stuck = {d: r["kinds"]["stuckSensor"]["score"] for d, r in out["detectors"].items()}
    assert stuck["seasonal@stuck=16"] > stuck["seasonal"]


def test_a_label_carries_constructor_overrides() -> None:
    assert nab_synthetic.label_params("seasonal@stuck=0,ratio=0.5") == {"stuck": 0, "ratio": 0.5}
    assert nab_synthetic.label_params("seasonal") == {}
    with pytest.raises(ValueError, match="NAME=VALUE"):
        nab_synthetic.label_params("seasonal@stuck")


def test_cli_writes_json_and_an_unknown_detector_exits_2(tmp_path: Path) -> None:
    import typer

    app = typer.Typer()
    app.command()(nab_synthetic.command)
    ok = CliRunner().invoke(app, ["--out", str(tmp_path / "s"), "--seed", "0", "--files-per-kind", "1",
                                  "--detector", "likelihood", "--json", str(tmp_path / "s.json")])
    assert ok.exit_code == 0, ok.output
    assert (tmp_path / "s.json").is_file()
    bad = CliRunner().invoke(app, ["--out", str(tmp_path / "s"), "--seed", "0", "--files-per-kind", "1",
                                   "--detector", "nope"])
    assert bad.exit_code == 2 and "DETECTORS" in bad.output
    suite = CliRunner().invoke(app, ["--out", str(tmp_path / "s"), "--suite", "nope"])
    assert suite.exit_code == 2 and "fleet" in suite.output
