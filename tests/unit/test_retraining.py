"""Retraining in memory: a concept drift leads to a challenger, a shadow trial, a promotion and registry entries;
a challenger that is not better stays out; a rollback in the registry reaches the running processor."""

from __future__ import annotations

import pickle
import shutil
from dataclasses import replace

import pytest

from connectors.movielens import Rating, click_events, load
from models.registry import ModelRegistry
from streams.cli import models as models_cli
from streams.flows import drift, retraining
from streams.flows.clicks import MODEL_NAME
from streams.flows.names import QUARANTINE_TOPIC
from streams.processor import Emit, Event, run_local

POLICY = {"train_window": 1000, "min_fresh": 1000, "shadow_events": 1000, "margin": 0.01, "cooldown": 100_000,
          "quality_drop": 10.0}
BEFORE, AFTER = 4000, 4000


def inverted(r: Rating) -> Rating:
    """Tastes turn around: what was liked is disliked and the other way round (a concept drift)."""
    return replace(r, rating=1.0 if r.liked else 5.0)


@pytest.fixture(scope="module")
def ratings() -> list[Rating]:
    return load(limit=BEFORE + AFTER)


def clicks_of(ratings: list[Rating]) -> list[Event]:
    return [Event("clicks", e["user_id"], e) for e in click_events(ratings)]


def closed_loop(events: list[Event], registry_dir, state: dict | None = None, chunk: int = 500,
                policy: dict = POLICY) -> dict[str, list[Emit]]:
    """The click flow with retraining and the drift flow feeding each other, chunk by chunk, as they do live.
    ``state`` (processors and drift events not yet delivered) carries over between calls, like a checkpoint."""
    retrain_spec, drift_spec = retraining.flow(registry_dir=registry_dir, policy=policy), drift.flow()
    state = state if state is not None else new_state()
    out: dict[str, list[Emit]] = {"clicks": [], "drift": []}
    for start in range(0, len(events), chunk):
        emitted = run_local(retrain_spec, state["pending"] + events[start : start + chunk], state["procs"])
        out["clicks"] += emitted
        found = run_local(drift_spec, [Event(e.topic, e.key, e.record) for e in emitted], state["dprocs"])
        out["drift"] += found
        state["pending"] = [Event(e.topic, e.key, e.record) for e in found if e.topic == "drift"]
    return out


def new_state() -> dict:
    return {"procs": {}, "dprocs": {}, "pending": []}


@pytest.fixture(scope="module")
def drifted(ratings, tmp_path_factory) -> dict:
    """Tastes invert after BEFORE events; the state is checkpointed (pickled) at event 2000 on the way."""
    folder = tmp_path_factory.mktemp("registry")
    events = clicks_of(ratings[:BEFORE] + [inverted(r) for r in ratings[BEFORE:]])
    state = new_state()
    first = closed_loop(events[:2000], folder, state)
    checkpoint = pickle.dumps(state)
    rest = closed_loop(events[2000:], folder, state)
    out = {k: first[k] + rest[k] for k in first}
    return {"events": events, "registry": folder, "out": out, "checkpoint": checkpoint,
            "history": list(ModelRegistry(folder).history(MODEL_NAME))}


def test_concept_drift_retrains_shadows_and_promotes_a_better_challenger(ratings, drifted) -> None:
    out = drifted["out"]
    concept = [e.record for e in out["drift"] if e.topic == "drift" and e.record["kind"] == "CONCEPT"]
    assert concept, "the inverted tastes were not detected"
    switch_time = ratings[BEFORE].time_ms
    assert concept[0]["window_end"] >= switch_time
    reg = ModelRegistry(drifted["registry"])
    champ = reg.champion(MODEL_NAME)
    assert champ is not None and champ.version == "2" and champ.parent == "1"
    assert champ.info["trigger_id"] == concept[0]["event_id"]
    assert champ.metrics["shadow_log_loss"] + 0.01 <= champ.metrics["champion_log_loss"]
    assert reg.get(MODEL_NAME, "1").status == "retired"
    promoted = [h for h in drifted["history"] if h["action"] == "promoted"][-1]
    assert promoted["version"] == "2" and promoted["replaced"] == "1" and "concept drift" in promoted["reason"]
    versions = [e.record["model_version"] for e in out["clicks"] if e.topic == "predictions"]
    flip = versions.index("2")
    assert set(versions[:flip]) == {"1"} and set(versions[flip:]) == {"2"}
    assert reg.load_artifact(MODEL_NAME, "1")["logit"]  # the retired champion's last state, for a rollback


def test_a_challenger_that_is_not_better_is_not_promoted(ratings, tmp_path) -> None:
    """A false alarm: a drift event with no change behind it. The challenger, trained on a short recent
    window, loses to the champion that learned from everything, and is kept only as a rejected version."""
    events = clicks_of(ratings[:6000] if len(ratings) >= 6000 else ratings)
    fake = Event("drift", MODEL_NAME, {
        "event_id": "false-alarm", "event_time": events[3000].record["event_time"], "producer": "t",
        "model_name": MODEL_NAME, "feature": None, "kind": "CONCEPT", "detector": "ours", "statistic": 1.0,
        "threshold": 1.0, "window_start": 0, "window_end": 0, "reference_size": 0, "window_size": 0})
    spec = retraining.flow(registry_dir=tmp_path, policy=POLICY | {"train_window": 300, "min_fresh": 300})
    out = run_local(spec, events[:3000] + [fake] + events[3000:])
    reg = ModelRegistry(tmp_path)
    assert reg.champion(MODEL_NAME).version == "1"
    loser = reg.get(MODEL_NAME, "2")
    assert loser.status == "rejected" and loser.parent == "1" and "false-alarm" in loser.reason
    assert loser.metrics["shadow_log_loss"] > loser.metrics["champion_log_loss"] - 0.01
    assert {e.record["model_version"] for e in out if e.topic == "predictions"} == {"1"}


def test_drift_of_other_kinds_or_models_is_ignored_and_counted(tmp_path) -> None:
    proc = retraining.RetrainingClickProcessor(registry_dir=str(tmp_path), policy=POLICY)
    base = {"event_id": "d", "event_time": 1, "producer": "t", "feature": "x", "detector": "psi+ks",
            "statistic": 1.0, "threshold": 0.25, "window_start": 0, "window_end": 1, "reference_size": 0, "window_size": 0}
    proc.process([Event("drift", "m", {**base, "model_name": MODEL_NAME, "kind": "DATA"}),
                  Event("drift", "x", {**base, "model_name": "another", "kind": "CONCEPT"})])
    assert proc.phase == "serving" and proc.ignored == {"other_model": 1, "kind": 1, "busy": 0}


def test_a_replay_from_a_checkpoint_registers_nothing_twice_and_a_rollback_reaches_the_processor(drifted, tmp_path) -> None:
    shutil.copytree(drifted["registry"], tmp_path, dirs_exist_ok=True)
    reg = ModelRegistry(tmp_path)
    n_versions = len(reg.versions(MODEL_NAME))
    state = pickle.loads(drifted["checkpoint"])  # a crash after event 2000: state from there, input replayed
    for proc in state["procs"].values():  # against a copy of the registry, so that other tests see the original
        proc.registry_dir, proc.outbox.registry = str(tmp_path), ModelRegistry(tmp_path)
    again = closed_loop(drifted["events"][2000:], tmp_path, state)
    assert again["clicks"] and len(reg.versions(MODEL_NAME)) == n_versions
    assert reg.champion(MODEL_NAME).version == "2"
    assert [h["action"] for h in reg.history(MODEL_NAME)] == [h["action"] for h in drifted["history"]]
    proc = state["procs"][MODEL_NAME]
    assert proc.version == "2"
    models_cli.rollback_command(MODEL_NAME, reason="test", registry_dir=tmp_path)
    spec = retraining.flow(registry_dir=tmp_path, policy=POLICY)
    emitted = run_local(spec, drifted["events"][:10], state["procs"])
    assert proc.version == "1" and {e.record["model_version"] for e in emitted if e.topic == "predictions"} == {"1"}
    assert reg.history(MODEL_NAME)[-1]["action"] == "rolled_back"
    restored = pickle.loads(pickle.dumps(proc))
    assert restored.version == "1" and restored.model.snapshot() == proc.model.snapshot()


def _imp(i: int, rating: float) -> Event:
    return Event("clicks", "u", {"event_id": f"i-{i}", "event_time": 1000 * i, "producer": "p", "user_id": f"u{i % 7}",
                                 "item_id": f"m{i % 11}", "action": "IMPRESSION", "impression_id": None,
                                 "position": None, "rating": rating, "context": {"genres": "Drama"}})


def _in_shadow(tmp_path, outcomes: list[float]) -> retraining.RetrainingClickProcessor:
    """A trial by AUC with no margin (both allowed), its shadow events liked or not as ``outcomes`` says."""
    policy = {"train_window": 20, "min_fresh": 10, "shadow_events": len(outcomes), "metric": "auc", "margin": 0.0,
              "cooldown": 1000, "quality_drop": 100.0}
    proc = retraining.RetrainingClickProcessor("clicks-trial", registry_dir=str(tmp_path), policy=policy)
    proc.process([_imp(i, 5.0 if i % 3 == 0 else 1.0) for i in range(20)])  # history of both classes
    proc.process([Event("drift", "clicks-trial", {"event_id": "d-1", "model_name": "clicks-trial", "kind": "CONCEPT",
                                                  "detector": "ours", "statistic": 0.5})])
    proc.process([_imp(20 + i, 1.0) for i in range(10)])  # collect, then train and register
    assert proc.phase == "shadow"
    return proc


def test_a_trial_whose_outcomes_are_one_class_promotes_nobody(tmp_path) -> None:
    """No click in the whole trial (common at low click-through rates): AUC is undefined for both models."""
    proc = _in_shadow(tmp_path, [0.0] * 30)
    proc.process([_imp(30 + i, 1.0) for i in range(30)])
    reg = ModelRegistry(tmp_path)
    decision = reg.history("clicks-trial")[-1]
    assert (decision["action"], decision["version"]) == ("rejected", "2")
    assert "auc is undefined on the 30 events of the trial (0 positive)" in decision["reason"]
    assert proc.version == "1" and "shadow_auc" not in reg.get("clicks-trial", "2").metrics


def test_a_tie_promotes_nobody_even_with_no_margin(tmp_path) -> None:
    proc = _in_shadow(tmp_path, [0.0] * 4)
    proc.shadow = {"labels": [1.0, 0.0, 1.0, 0.0], "champion": [0.9, 0.1, 0.6, 0.4], "challenger": [0.8, 0.2, 0.7, 0.3]}
    proc._decide()  # the same ranking: the same AUC
    decision = ModelRegistry(tmp_path).history("clicks-trial")[-1]
    assert (decision["action"], decision["version"]) == ("rejected", "2") and proc.version == "1"
    assert "auc 1.0000 vs champion 1's 1.0000" in decision["reason"] and "a tie is no evidence" in decision["reason"]


def _pushed(start: int, n: int) -> list[Event]:
    """A bot's producer pushing one item with top ratings (caught by the model-security flow, a little late)."""
    return [Event("clicks", "fake", {**_imp(start + i, 5.0).record, "producer": "bot", "user_id": "fake",
                                     "item_id": "m-pushed"}) for i in range(n)]


_BOT_QUARANTINED = Event(QUARANTINE_TOPIC, "producer:bot", {"action": "QUARANTINE", "source": "producer:bot",
                                                            "reason": "one_item"})


def test_a_challenger_is_not_trained_on_outcomes_of_a_source_quarantined_since(tmp_path) -> None:
    """The poisoning that set off the trigger is usually learned before its source is quarantined: the challenger
    meant to replace the poisoned champion must not learn it again from the training window."""
    policy = {"train_window": 100, "min_fresh": 10, "shadow_events": 50, "cooldown": 1000, "quality_drop": 100.0}
    proc = retraining.RetrainingClickProcessor("clicks-q", registry_dir=str(tmp_path), policy=policy)
    proc.process([_imp(i, 5.0 if i % 3 == 0 else 1.0) for i in range(20)] + _pushed(20, 30))
    proc.process([_BOT_QUARANTINED])
    proc.process([Event("drift", "clicks-q", {"event_id": "d-1", "model_name": "clicks-q", "kind": "CONCEPT",
                                              "detector": "ours", "statistic": 0.5})])
    proc.process([_imp(50 + i, 1.0) for i in range(10)])
    assert proc.phase == "shadow"
    challenger = ModelRegistry(tmp_path).load_artifact("clicks-q", proc.challenger_version)
    assert "m-pushed" not in challenger["items"]["n"] and "m-pushed" in proc.model.snapshot()["items"]["n"]


def test_a_challenger_that_learned_outcomes_of_a_source_quarantined_during_its_trial_is_rejected(tmp_path) -> None:
    proc = _in_shadow(tmp_path, [0.0, 1.0] * 10)
    proc.process(_pushed(30, 5))  # learned by both models in shadow
    proc.process([_BOT_QUARANTINED])
    proc.process([_imp(40 + i, 5.0 if i % 2 else 1.0) for i in range(20)])
    decision = ModelRegistry(tmp_path).history("clicks-trial")[-1]
    assert (decision["action"], decision["version"]) == ("rejected", "2") and proc.version == "1"
    assert "it learned outcomes of producer:bot, quarantined since" in decision["reason"]


def test_a_registry_folder_restored_from_a_backup_refuses_changes_and_the_flow_goes_on(tmp_path, caplog) -> None:
    """The registry's disk died and its folder came back from last night's backup, without the challenger on
    trial: its rejection is refused for good. Kept at the head of the queue it failed every batch (each one
    dead-lettered), at every restart; a refused registration left the flow waiting for a version for ever. The
    refusal says the registry does not know what the flow serves: it takes the registry's champion (it kept its own,
    and every later registration was refused)."""
    folder, backup = tmp_path / "registry", tmp_path / "backup"
    proc = _in_shadow(folder, [0.0, 1.0] * 5)
    assert proc.challenger_version == "2"
    first = ModelRegistry(folder).load_artifact("clicks-trial", "1")
    ModelRegistry(backup).register("clicks-trial", first, reason="initial model", champion=True)
    shutil.rmtree(folder)
    shutil.copytree(backup, folder)
    proc.process([_imp(30 + i, 5.0 if i % 2 else 1.0) for i in range(10)])  # the trial ends: "reject 2" refused
    assert proc.phase == "serving" and proc.outbox.pending == 0
    assert "registry change reject of clicks-trial refused, dropped: model 'clicks-trial' has no version '2'" \
        in caplog.text
    proc.quiet_until = 0
    proc.version = "7"  # serving a champion the backup does not know either: the next registration is refused
    proc.process([Event("drift", "clicks-trial", {"event_id": "d-2", "model_name": "clicks-trial", "kind": "CONCEPT",
                                                  "detector": "ours", "statistic": 0.5})])
    proc.process([_imp(40 + i, 1.0) for i in range(10)])
    assert proc.phase == "serving" and proc.outbox.pending == 0 and proc.challenger is None
    assert "registry change register of clicks-trial refused, dropped: parent version '7'" in caplog.text
    emitted = proc.process([_imp(50 + i, 1.0) for i in range(3)])
    assert [e.record["model_version"] for e in emitted if e.topic == "predictions"] == ["1"] * 3
    proc.quiet_until = 0  # serving the backup's champion, the next trigger is registered (it was refused for ever)
    proc.process([Event("drift", "clicks-trial", {"event_id": "d-3", "model_name": "clicks-trial", "kind": "CONCEPT",
                                                  "detector": "ours", "statistic": 0.5})])
    proc.process([_imp(60 + i, 5.0 if i % 2 else 1.0) for i in range(10)])
    assert proc.phase == "shadow" and proc.challenger_version == "2"
