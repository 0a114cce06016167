"""`eddyline models migrate-registry DIR`: a local registry folder copied into MLflow's registry (embedded
store) with versions, artifacts, newest states, statuses, lineage, champion alias and action ids; twice
copies nothing twice, and a replayed registration still finds its version."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from models import tracking
from models.registry import ModelRegistry, RegistryError
from models.registry.mlflow_store import MlflowRegistry

ROOT = Path(__file__).resolve().parents[2]


def local_registry(folder: Path) -> ModelRegistry:
    reg = ModelRegistry(folder)
    reg.register("clicks", {"w": [0.0]}, reason="initial model", champion=True, action_id="init")
    reg.register("clicks", {"w": [0.5]}, reason="drift d-7", parent="1", action_id="reg-d7",
                 metrics={"trained_on": 300.0}, info={"trigger_id": "d-7"})
    reg.promote("clicks", "2", reason="better log loss", metrics={"shadow_log_loss": 0.4},
                outgoing_state={"w": [0.1]}, action_id="decide-d7")
    reg.register("clicks", {"w": [0.9]}, reason="drift d-9", parent="2", action_id="reg-d9")
    reg.reject("clicks", "3", reason="worse", action_id="decide-d9")
    return reg


def migrate(folder: Path, store: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "streams.cli", "models", "migrate-registry", str(folder)],
                          capture_output=True, text=True, timeout=300, cwd=store.parent,
                          env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT),
                               "MLFLOW_TRACKING_URI": tracking.embedded_uri(store)})


def test_a_local_registry_moves_to_mlflow_once(tmp_path: Path) -> None:
    local = local_registry(tmp_path / "registry")
    done = migrate(local.root, tmp_path / "store")
    assert done.returncode == 0, done.stderr
    assert "clicks: 3 versions" in done.stdout and "champion 2" in done.stdout
    target = MlflowRegistry(tracking.embedded_uri(tmp_path / "store"))
    assert [(v.version, v.status, v.parent) for v in target.versions("clicks")] == [
        ("1", "retired", None), ("2", "champion", "1"), ("3", "rejected", "2")]
    assert target.get("clicks", "2").metrics == {"trained_on": 300.0, "shadow_log_loss": 0.4}
    assert str(target.client.get_model_version_by_alias("clicks", "champion").version) == "2"
    assert target.load_artifact("clicks", "1") == {"w": [0.1]}  # the state it stopped serving with
    assert target.load_artifact("clicks", "3") == {"w": [0.9]}
    assert [(h["action"], h["version"], h["replaced"]) for h in target.history("clicks")] == [
        (h["action"], h["version"], h["replaced"]) for h in local.history("clicks")]
    assert target.rollback("clicks", reason="after migration").version == "1"

    again = migrate(local.root, tmp_path / "store")
    assert again.returncode == 0, again.stderr
    assert len(target.versions("clicks")) == 3
    replayed = target.register("clicks", {"w": [0.5]}, reason="drift d-7", parent="1", action_id="reg-d7")
    assert replayed.version == "2" and len(target.versions("clicks")) == 3
    assert target.promote("clicks", "3", reason="replayed decision", action_id="decide-d9").status == "rejected"


def test_a_folder_without_a_registry_is_refused_with_what_to_do(tmp_path: Path) -> None:
    done = migrate(tmp_path / "nothing", tmp_path / "store")
    assert done.returncode == 2
    assert "holds no local registry" in done.stderr and "registry_dir" in done.stderr


def test_a_version_that_lost_its_artifact_moves_without_it(tmp_path: Path, monkeypatch) -> None:
    import models.registry.base

    monkeypatch.setattr(models.registry.base, "ARTIFACTS_KEPT", 0)
    local = local_registry(tmp_path / "registry")  # version 3, rejected, is out of service at once
    assert not (local.root / "clicks" / "versions" / "3").exists()
    target = MlflowRegistry(tracking.embedded_uri(tmp_path / "store"))
    target.import_local(local, "clicks")
    assert [(v.version, v.status) for v in target.versions("clicks")] == [
        ("1", "retired"), ("2", "champion"), ("3", "rejected")]
    assert target.load_artifact("clicks", "1") == {"w": [0.1]}
    with pytest.raises(RegistryError, match="out of service and its artifact was dropped"):
        target.load_artifact("clicks", "3")
