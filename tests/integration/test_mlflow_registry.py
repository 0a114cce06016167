"""The retraining loop against a real MLflow server (SQLite backend, artifacts in a temporary folder, 127.0.0.1).

The click flow with retraining and the drift flow feed each other chunk by chunk, as in
tests/unit/test_retraining.py, but the registry is the MLflow server's: drift -> challenger trained and
logged as a run -> registered -> promoted by moving the champion alias -> `eddyline models rollback`
moves it back and the running processor follows; a replay from a checkpoint registers nothing twice;
with the server down, scoring goes on, the registration waits in the checkpointed queue, and lands
exactly once when the server is back.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest

from connectors.movielens import Rating, click_events, load
from models.registry.mlflow_store import MlflowRegistry
from streams.flows import drift, retraining
from streams.flows.clicks import MODEL_NAME
from streams.processor import Emit, Event, run_local
from streams.state import decode_processor, encode_processor

POLICY = {"train_window": 1000, "min_fresh": 1000, "shadow_events": 1000, "margin": 0.01, "cooldown": 100_000,
          "quality_drop": 10.0}
BEFORE, AFTER, EXTRA = 4000, 4000, 1000
ROOT = Path(__file__).resolve().parents[2]
STARTED: list = []  # processors whose registry threads the test stops


@pytest.fixture
def on_server(mlflow_server, monkeypatch):
    monkeypatch.setenv("EDDYLINE_MLFLOW_TRACKING_URI", mlflow_server.url)
    monkeypatch.setenv("EDDYLINE_MLFLOW_POLL_S", "0.2")
    monkeypatch.setenv("EDDYLINE_MLFLOW_RETRY_S", "0.5")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "30")
    yield mlflow_server
    for proc in STARTED:
        proc.outbox.close()
    STARTED.clear()


@pytest.fixture(scope="module")
def events() -> list[Event]:
    ratings: list[Rating] = load(limit=BEFORE + AFTER)  # the sample of tests/unit/test_retraining.py
    later = load(limit=BEFORE + AFTER + 2 * EXTRA)[-EXTRA:]  # events after those, for the rollback and the outage
    turned = ratings[:BEFORE] + [replace(r, rating=1.0 if r.liked else 5.0) for r in ratings[BEFORE:] + later]
    return [Event("clicks", e["user_id"], e) for e in click_events(turned)]


def concept_drift(at: Event) -> Event:
    """A concept drift event for the click model, as the drift flow emits them (when it sees the change
    later than this, this one starts the trial; the drift flow's own timing is tested elsewhere)."""
    return Event("drift", MODEL_NAME, {
        "event_id": "injected-concept-drift", "event_time": at.record["event_time"], "producer": "test",
        "model_name": MODEL_NAME, "feature": None, "kind": "CONCEPT", "detector": "ours", "statistic": 1.0,
        "threshold": 1.0, "window_start": 0, "window_end": at.record["event_time"], "reference_size": 0,
        "window_size": 0})


def with_drift(events: list[Event], at: int) -> list[Event]:
    return events[:at] + [concept_drift(events[at])] + events[at:]


def new_state() -> dict:
    return {"procs": {}, "dprocs": {}, "pending": []}


def checkpoint(state: dict) -> dict:
    """What an engine keeps: each processor as versioned plain bytes (never pickled), and the events in flight."""
    return {"procs": {k: encode_processor(p, k) for k, p in state["procs"].items()},
            "dprocs": {k: encode_processor(p, k) for k, p in state["dprocs"].items()}, "pending": list(state["pending"])}


def restart(saved: dict) -> dict:
    """Processors rebuilt from a checkpoint, as an engine does at start: new registry clients, the queues loaded."""
    retrain_spec, drift_spec = retraining.flow(policy=POLICY), drift.flow()
    return {"procs": {k: decode_processor(b, retrain_spec.make_processor(k)) for k, b in saved["procs"].items()},
            "dprocs": {k: decode_processor(b, drift_spec.make_processor(k)) for k, b in saved["dprocs"].items()},
            "pending": list(saved["pending"])}


def settle(state: dict, timeout: float = 90.0) -> None:
    """Wait until the processor's registry changes were applied and a later read of the registry arrived,
    as time passing between batches gives them live."""
    proc = state["procs"].get(MODEL_NAME)
    deadline = time.monotonic() + timeout
    while proc is not None and proc.outbox.settled() is None:
        assert time.monotonic() < deadline, f"registry changes still pending: {proc.outbox.state()['pending']}"
        time.sleep(0.1)


def closed_loop(events: list[Event], state: dict, chunk: int = 500, wait: bool = True) -> dict[str, list[Emit]]:
    retrain_spec, drift_spec = retraining.flow(policy=POLICY), drift.flow()
    out: dict[str, list[Emit]] = {"clicks": [], "drift": []}
    for start in range(0, len(events), chunk):
        emitted = run_local(retrain_spec, state["pending"] + events[start : start + chunk], state["procs"])
        out["clicks"] += emitted
        found = run_local(drift_spec, [Event(e.topic, e.key, e.record) for e in emitted], state["dprocs"])
        out["drift"] += found
        state["pending"] = [Event(e.topic, e.key, e.record) for e in found if e.topic == "drift"]
        STARTED.extend(p for p in state["procs"].values() if p not in STARTED)
        if wait:
            settle(state)
    return out


def served(out: dict[str, list[Emit]]) -> list[str]:
    return [e.record["model_version"] for e in out["clicks"] if e.topic == "predictions"]


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "streams.cli", "models", *args], capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=180, cwd=ROOT)


def test_drift_challenger_promoted_by_alias_then_rolled_back(on_server, events) -> None:
    state = new_state()
    first = closed_loop(events[:2000], state)
    saved = checkpoint(state)
    rest = closed_loop(with_drift(events[2000 : BEFORE + AFTER], BEFORE + 300 - 2000), state)
    reg = MlflowRegistry(on_server.url)
    champ = reg.champion(MODEL_NAME)
    proc = state["procs"][MODEL_NAME]
    kinds = [e.record["kind"] for e in first["drift"] + rest["drift"] if e.topic == "drift"]
    assert champ is not None and champ.version == "2" and champ.parent == "1" and champ.status == "champion", (
        proc.phase, proc.version, proc.ignored, proc.trigger, kinds, reg.history(MODEL_NAME))
    concept = [e.record["event_id"] for e in rest["drift"] if e.topic == "drift" and e.record["kind"] == "CONCEPT"]
    assert champ.info["trigger_id"] in ["injected-concept-drift", *concept]
    assert champ.metrics["shadow_log_loss"] + POLICY["margin"] <= champ.metrics["champion_log_loss"]
    assert reg.get(MODEL_NAME, "1").status == "retired"
    assert [(h["action"], h["version"], h["replaced"]) for h in reg.history(MODEL_NAME)] == [
        ("registered", "1", None), ("promoted", "1", None), ("registered", "2", None), ("promoted", "2", "1")]
    versions = served(first) + served(rest)
    flip = versions.index("2")
    assert set(versions[:flip]) == {"1"} and set(versions[flip:]) == {"2"}

    # the challenger's training is an MLflow run with its parameters, metrics and artifact
    client = reg.client
    mv = client.get_model_version(MODEL_NAME, "2")
    run = client.get_run(mv.run_id)
    assert run.data.params["trained_on"] == str(POLICY["train_window"]) and "shadow_log_loss" in run.data.metrics
    assert {f.path for f in client.list_artifacts(mv.run_id, "model")} >= {"model/artifact.json"}
    assert client.get_model_version_by_alias(MODEL_NAME, "champion").version == "2"
    assert reg.load_artifact(MODEL_NAME, "1")["logit"]  # the retired champion's last state, for a rollback

    # a replay from the checkpoint at event 2000 registers and promotes nothing twice
    replayed = restart(saved)
    for proc in state["procs"].values():
        proc.outbox.close()  # the first run "crashed"
    closed_loop(with_drift(events[2000 : BEFORE + AFTER], BEFORE + 300 - 2000), replayed)
    assert len(reg.versions(MODEL_NAME)) == 2
    assert [h["action"] for h in reg.history(MODEL_NAME)] == ["registered", "promoted", "registered", "promoted"]
    assert replayed["procs"][MODEL_NAME].version == "2"

    # `eddyline models rollback` moves the alias back; the running processor follows without a restart
    done = cli("rollback", MODEL_NAME, "--reason", "test rollback")
    assert done.returncode == 0, done.stderr
    assert "champion is version 1 again (was 2)" in done.stdout
    assert client.get_model_version_by_alias(MODEL_NAME, "champion").version == "1"
    proc = replayed["procs"][MODEL_NAME]
    deadline = time.monotonic() + 60
    after: list[str] = []
    while proc.version != "1":
        assert time.monotonic() < deadline, "the processor did not follow the champion alias"
        after += served(closed_loop(events[BEFORE + AFTER : BEFORE + AFTER + 10], replayed))
        time.sleep(0.2)
    tail = served(closed_loop(events[BEFORE + AFTER + 10 : BEFORE + AFTER + 100], replayed))
    assert set(tail) == {"1"}
    assert reg.get(MODEL_NAME, "2").status == "rolled_back"
    assert reg.history(MODEL_NAME)[-1]["action"] == "rolled_back"
    listed = cli("list", MODEL_NAME)
    assert listed.returncode == 0, listed.stderr
    lines = listed.stdout.splitlines()
    assert lines[0].split()[:2] == ["1", "champion"] and lines[1].split()[:2] == ["2", "rolled_back"]
    proc.outbox.close()


def test_server_down_delays_registration_and_loses_nothing(on_server, events) -> None:
    state = new_state()
    closed_loop(events[:3000], state)
    reg = MlflowRegistry(on_server.url)
    assert reg.champion(MODEL_NAME).version == "1"

    on_server.stop()
    out = closed_loop(with_drift(events[3000 : BEFORE + AFTER], BEFORE + 300 - 3000), state, wait=False)  # drift, a challenger trained: no registry
    proc = state["procs"][MODEL_NAME]
    impressions = sum(e.record["action"] == "IMPRESSION" for e in events[3000 : BEFORE + AFTER])
    assert len(served(out)) == impressions and set(served(out)) == {"1"}  # scoring never stopped
    assert proc.phase == "registering" and proc.outbox.pending >= 1
    saved = checkpoint(state)  # the durable pending record: the queue is in the processor's checkpoint
    proc.outbox.close()  # ... and the process dies

    restarted = restart(saved)
    on_server.start()
    closed_loop(events[BEFORE + AFTER : BEFORE + AFTER + 500], restarted)
    versions = reg.versions(MODEL_NAME)
    assert [v.version for v in versions] == ["1", "2"]
    assert versions[1].parent == "1" and versions[1].status in ("candidate", "champion", "rejected")
    assert versions[1].info["trigger_id"] == proc.trigger["id"]
    assert [h["action"] for h in reg.history(MODEL_NAME)][:3] == ["registered", "promoted", "registered"]
    restarted["procs"][MODEL_NAME].outbox.close()
