"""Tracking on MLflow's embedded store: runs with params, metrics per step, datasets and artifacts; an
unreachable store never stops a training; the edge model build is recorded where mlflow is installed."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from connectors.broker import free_port
from models import tracking

ROOT = Path(__file__).resolve().parents[2]


def test_a_training_run_keeps_params_metrics_per_step_datasets_and_artifacts(tmp_path: Path) -> None:
    uri = tracking.embedded_uri(tmp_path / "store")
    card = tmp_path / "MODEL_CARD.md"
    card.write_text("# a card\n")
    tracking.configure(uri)
    try:
        run_id = tracking.log_training(
            "eddyline/test", "fit", params={"model": {"dim": 32}, "epochs": 2},
            metrics={"test": {"accuracy": {"movie": 0.8}, "note": "text is skipped",
                              "accuracy_by_length": {"<=32": {"texts": 3960}, ">128": {"texts": 42}}}},
            series={"train_loss": [0.9, 0.5]}, datasets=[("sentences", "pkg:file", "train", 100)],
            artifacts=[card, tmp_path / "missing.onnx"])
    finally:
        tracking.configure(None)
    client = tracking.client(uri)
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    assert run.data.params["model.dim"] == "32" and run.data.params["data.train.rows"] == "100"
    assert run.data.metrics["test.accuracy.movie"] == 0.8
    assert run.data.metrics["test.accuracy_by_length.le32.texts"] == 3960  # MLflow refuses "<" in a name
    assert run.data.metrics["test.accuracy_by_length.gt128.texts"] == 42
    assert [m.value for m in client.get_metric_history(run_id, "train_loss")] == [0.9, 0.5]
    assert [m.step for m in client.get_metric_history(run_id, "train_loss")] == [1, 2]
    assert run.inputs.dataset_inputs[0].dataset.name == "sentences"
    assert run.inputs.dataset_inputs[0].tags[0].value == "train"
    assert [f.path for f in client.list_artifacts(run_id)] == ["MODEL_CARD.md"]
    assert (tmp_path / "store" / "artifacts").is_dir()  # beside the database, not in the working directory


def test_an_unreachable_server_skips_the_run_and_the_training_goes_on(monkeypatch, caplog) -> None:
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    caplog.set_level(logging.WARNING, logger=tracking.log.name)  # a training run earlier may have quietened the root
    uri = f"http://127.0.0.1:{free_port()}"
    with tracking.run("eddyline/test", "offline", uri=uri) as r:
        r.params({"a": 1})
        r.metrics({"loss": 1.0}, step=1)
    assert not r.active
    assert "carrying on without it" in caplog.text


@pytest.mark.integration
def test_each_outage_of_the_store_is_warned_of_once(mlflow_server, monkeypatch, caplog) -> None:
    """Warned of once per process, a second outage weeks after the first was silent: each one is heard, once."""
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    caplog.set_level(logging.WARNING, logger=tracking.log.name)

    def train() -> bool:
        with tracking.run("eddyline/outages", "fit", uri=mlflow_server.url) as r:
            r.metrics({"loss": 1.0})
        return r.active

    mlflow_server.stop()
    assert not train() and not train()
    mlflow_server.start()
    assert train()
    mlflow_server.stop()
    try:
        assert not train() and not train()
    finally:
        mlflow_server.start()
    said = [r.getMessage() for r in caplog.records if r.name == tracking.log.name]
    assert [("down" if "start a run failed" in m else "back" if "answers again" in m else m) for m in said] == [
        "down", "back", "down"]


def test_the_edge_model_build_is_recorded(tmp_path: Path) -> None:
    pytest.importorskip("onnx")
    uri = tracking.embedded_uri(tmp_path / "store")
    done = subprocess.run([sys.executable, "-m", "edge_agent.cli", "build-model", "--out", str(tmp_path / "m.onnx")],
                          capture_output=True, text=True, cwd=tmp_path, timeout=300,
                          env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT), "MLFLOW_TRACKING_URI": uri})
    assert done.returncode == 0, done.stderr
    client = tracking.client(uri)
    runs = client.search_runs([client.get_experiment_by_name("eddyline/edge-model").experiment_id])
    assert len(runs) == 1 and runs[0].data.params["window"] == "16"
    assert [f.path for f in client.list_artifacts(runs[0].info.run_id)] == ["m.onnx"]
    assert not (tmp_path / "mlruns").exists()
    assert runs[0].data.metrics["m_bytes"] == (tmp_path / "m.onnx").stat().st_size


QUIET = """
import sys
from models import tracking
from streams import logs
logs.setup()
tracking.client(tracking.embedded_uri(sys.argv[1])).search_experiments()  # a new store: MLflow creates its tables
"""


@pytest.mark.parametrize("level, said", [("WARNING", False), ("INFO", True)])
def test_a_new_store_is_created_quietly_unless_the_log_level_asks(tmp_path: Path, level: str, said: bool) -> None:
    """MLflow logs at INFO on its own handler; a command follows EDDYLINE_LOG_LEVEL (quiet by default)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    env["EDDYLINE_LOG_LEVEL"] = level
    done = subprocess.run([sys.executable, "-c", QUIET, str(tmp_path / "store")], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert ("Creating initial MLflow database tables" in done.stderr) is said, done.stderr
