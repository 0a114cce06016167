"""`eddyline models ui` serves MLflow's UI on loopback over the embedded store; headless Chromium finds the
trainings' runs and the click model's champion version there."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from connectors.broker import free_port
from models import tracking
from models.registry.mlflow_store import MlflowRegistry
from tests.fixtures.http import wait_healthy

ROOT = Path(__file__).resolve().parents[2]


def test_models_ui_shows_the_runs_and_the_champion(chromium, tmp_path: Path) -> None:
    store = tmp_path / "store"
    uri = tracking.embedded_uri(store)
    reg = MlflowRegistry(uri)
    reg.register("clicks-online", {"w": [0.0]}, reason="initial model", champion=True, action_id="a1")
    reg.register("clicks-online", {"w": [1.0]}, reason="concept drift d-1", parent="1", action_id="a2",
                 metrics={"shadow_log_loss": 0.41})
    reg.promote("clicks-online", "2", reason="promoted: better log loss", action_id="a3")
    tracking.configure(uri)
    try:
        tracking.log_training("eddyline/sentiment", "train-sentiment", params={"epochs": 2},
                              series={"train_loss": [0.7, 0.4]})
    finally:
        tracking.configure(None)

    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    env |= {"PYTHONPATH": str(ROOT), "EDDYLINE_MLFLOW_STORE_DIR": str(store)}
    ui = subprocess.Popen([sys.executable, "-m", "streams.cli", "models", "ui", "--port", str(port)], cwd=tmp_path,
                          env=env, stdout=subprocess.DEVNULL, stderr=open(tmp_path / "ui.log", "wb"),
                          start_new_session=True)
    try:
        wait_healthy(f"http://127.0.0.1:{port}/health", ui, tmp_path / "ui.log", "the MLflow UI", 120)
        page = chromium.new_page()
        page.goto(f"http://127.0.0.1:{port}/#/models/clicks-online", timeout=60_000)
        page.get_by_text("champion").first.wait_for(timeout=60_000)
        versions = page.locator("a", has_text="Version 2")
        versions.first.wait_for(timeout=60_000)
        row = page.locator("tr, [role=row]", has=page.locator("a", has_text="Version 2")).first
        assert "champion" in row.inner_text(timeout=30_000)

        experiment = tracking.client(uri).get_experiment_by_name("eddyline/sentiment").experiment_id
        page.goto(f"http://127.0.0.1:{port}/#/experiments/{experiment}/runs", timeout=60_000)
        try:
            page.get_by_text("train-sentiment").first.wait_for(timeout=60_000)
        finally:
            page.screenshot(path=str(tmp_path / "models_ui.png"))
    finally:
        os.killpg(ui.pid, 15)
        ui.wait(30)
