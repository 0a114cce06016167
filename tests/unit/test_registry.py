"""Registry conformance: the local registry and MLflow's (the real server the tests start) pass the same checks
of versions, lineage, champion changes, idempotent actions, rollback and errors, through ``Registry``'s calls."""

from __future__ import annotations

import pytest

from models.registry import ModelRegistry, Registry, RegistryError


@pytest.fixture(params=["local", pytest.param("mlflow", marks=pytest.mark.integration)])
def reg(request, tmp_path) -> Registry:
    """A new, empty registry of each kind: a folder, or the session's MLflow server (emptied after each test)."""
    if request.param == "local":
        return ModelRegistry(tmp_path)
    from models.registry.mlflow_store import MlflowRegistry

    return MlflowRegistry(request.getfixturevalue("mlflow_server").url)


def test_both_registries_are_a_registry(reg) -> None:
    assert isinstance(reg, Registry) and reg.models() == [] and str(reg.root)


def test_register_promote_reject_and_lineage(reg) -> None:
    first = reg.register("m", {"w": [1]}, reason="initial", champion=True)
    assert (first.version, first.status) == ("1", "champion")
    challenger = reg.register("m", {"w": [2]}, reason="drift d1", parent="1", info={"window": 100})
    assert challenger.status == "candidate" and reg.champion("m").version == "1"
    reg.promote("m", "2", reason="log loss 0.50 vs 0.60", metrics={"log_loss": 0.5}, outgoing_state={"w": [1.5]})
    assert reg.champion("m").version == "2" and reg.get("m", "1").status == "retired"
    assert reg.load_artifact("m", "1") == {"w": [1.5]}  # what it had learned when it stopped serving
    loser = reg.register("m", {"w": [3]}, reason="drift d2", parent="2")
    reg.reject("m", loser.version, reason="not better", metrics={"log_loss": 0.9})
    assert reg.get("m", "3").status == "rejected" and reg.get("m", "3").metrics == {"log_loss": 0.9}
    actions = [(h["action"], h["version"], h["replaced"]) for h in reg.history("m")]
    assert actions == [("registered", "1", None), ("promoted", "1", None), ("registered", "2", None),
                       ("promoted", "2", "1"), ("registered", "3", None), ("rejected", "3", None)]
    assert reg.models() == ["m"]


def test_replayed_actions_change_nothing(reg) -> None:
    reg.register("m", {}, reason="initial", champion=True, action_id="a0")
    again = reg.register("m", {}, reason="initial", champion=True, action_id="a0")
    assert again.version == "1" and len(reg.versions("m")) == 1
    reg.register("m", {}, reason="c", parent="1", action_id="a1")
    reg.promote("m", "2", reason="better", action_id="a2")
    reg.promote("m", "2", reason="better", action_id="a2")
    assert [h["action"] for h in reg.history("m")].count("promoted") == 2  # the initial one and one for v2


def test_rollback_restores_the_previous_champion_and_refuses_when_there_is_none(reg) -> None:
    reg.register("m", {"v": 1}, reason="initial", champion=True)
    with pytest.raises(RegistryError, match="nothing to roll back"):
        reg.rollback("m", reason="oops")
    reg.register("m", {"v": 2}, reason="c", parent="1")
    reg.promote("m", "2", reason="better")
    reg.register("m", {"v": 3}, reason="c", parent="2")
    reg.promote("m", "3", reason="better")
    back = reg.rollback("m", reason="bad in production", outgoing_state={"v": 3.5})
    assert back.version == "2" and reg.get("m", "3").status == "rolled_back"
    assert reg.rollback("m", reason="again").version == "1"
    assert reg.history("m")[-1] | {"time_ms": 0} == {"action": "rolled_back", "version": "1", "replaced": "2",
                                                      "reason": "again", "time_ms": 0, "action_id": None}
    assert reg.load_artifact("m", "3") == {"v": 3.5}


def test_promoting_the_serving_champion_again_leaves_the_rollback_chain_alone(reg) -> None:
    reg.register("m", {"v": 1}, reason="initial", champion=True)
    reg.register("m", {"v": 2}, reason="c", parent="1")
    reg.promote("m", "2", reason="better")
    reg.promote("m", "2", reason="promoted again", metrics={"auc": 0.7})
    assert reg.get("m", "2").metrics == {"auc": 0.7}
    assert reg.rollback("m", reason="bad").version == "1" and reg.get("m", "2").status == "rolled_back"
    reg.promote("m", "1", reason="promoted again")
    with pytest.raises(RegistryError, match="nothing to roll back"):
        reg.rollback("m", reason="once more")
    assert [(h["action"], h["version"], h["replaced"]) for h in reg.history("m")][3:] == [
        ("promoted", "2", "1"), ("rolled_back", "1", "2")]


def test_the_rollback_chain_keeps_only_the_newest_champions(reg, monkeypatch: pytest.MonkeyPatch) -> None:
    """A retraining flow promotes for months: the chain (one MLflow tag) must not grow with every promotion."""
    import models.registry.mlflow_store
    import models.registry.store

    for module in (models.registry.store, models.registry.mlflow_store):
        monkeypatch.setattr(module, "ROLLBACK_DEPTH", 3)
    reg.register("m", {"v": 1}, reason="initial", champion=True)
    for v in range(2, 7):
        reg.register("m", {"v": v}, reason="c")
        reg.promote("m", str(v), reason="better")
    assert [reg.rollback("m", reason="back").version for _ in range(2)] == ["5", "4"]
    with pytest.raises(RegistryError, match="nothing to roll back"):
        reg.rollback("m", reason="too far back")


def test_versions_out_of_service_keep_their_records_but_only_the_newest_keep_their_artifacts(
        reg, monkeypatch: pytest.MonkeyPatch) -> None:
    """A flow retrains for months and most challengers lose: their artifacts must not fill the disk, while the
    champion, the champions a rollback can reach and a challenger on trial keep theirs."""
    import models.registry.base

    monkeypatch.setattr(models.registry.base, "ARTIFACTS_KEPT", 2)
    reg.register("m", {"v": 1}, reason="initial", champion=True)
    reg.register("m", {"v": 2}, reason="c", parent="1")
    reg.promote("m", "2", reason="better")
    for v in range(3, 7):
        reg.register("m", {"v": v}, reason=f"trial {v}", parent="2")
        reg.reject("m", str(v), reason="worse", metrics={"log_loss": 0.9})
    reg.register("m", {"v": 7}, reason="on trial", parent="2")
    assert [reg.load_artifact("m", v)["v"] for v in ("1", "2", "5", "6", "7")] == [1, 2, 5, 6, 7]
    for v in ("3", "4"):
        with pytest.raises(RegistryError, match="out of service and its artifact was dropped"):
            reg.load_artifact("m", v)
    assert (reg.get("m", "3").status, reg.get("m", "3").reason, reg.get("m", "3").metrics) == (
        "rejected", "trial 3", {"log_loss": 0.9})
    if isinstance(reg, ModelRegistry):
        assert sorted(p.name for p in (reg.root / "m" / "versions").iterdir()) == ["1", "2", "5", "6", "7"]
    assert reg.rollback("m", reason="back").version == "1" and reg.load_artifact("m", "1") == {"v": 1}


def test_a_run_purged_by_hand_is_not_asked_for_its_artifacts_at_every_change(
        tmp_path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    """Old runs deleted in MLflow's UI and purged by ``mlflow gc`` took their artifacts along: their versions were
    asked for them again, and warned of as an outage, at every change of the registry for good."""
    import models.registry.base
    from models import tracking
    from models.registry.mlflow_store import MlflowRegistry

    monkeypatch.setattr(models.registry.base, "ARTIFACTS_KEPT", 1)
    reg = MlflowRegistry(tracking.embedded_uri(tmp_path))
    reg.register("m", {"v": 1}, reason="initial", champion=True)
    reg.register("m", {"v": 2}, reason="trial 2", parent="1")
    reg.reject("m", "2", reason="worse")
    run_id = reg.client.get_model_version("m", "2").run_id
    reg.client.delete_run(run_id)
    reg.client._tracking_client.store._hard_delete_run(run_id)  # what `mlflow gc` does
    for v in range(3, 6):
        reg.register("m", {"v": v}, reason=f"trial {v}", parent="1")
        reg.reject("m", str(v), reason="worse")
    assert "drop the artifacts" not in caplog.text
    assert [reg.client.get_model_version("m", v).tags.get("eddyline.artifact") for v in ("2", "3", "4")] == [
        "dropped"] * 3


def test_bad_names_and_unknown_versions_are_clear_errors(reg) -> None:
    for read in (reg.champion, reg.versions, reg.history):
        with pytest.raises(RegistryError, match="bad model name"):
            read("../etc")
    with pytest.raises(RegistryError, match="no version"):
        reg.get("m", "1")
    with pytest.raises(RegistryError, match="no version"):
        reg.promote("m", "7", reason="x")
    assert reg.champion("m") is None and reg.versions("m") == []


def test_the_view_and_stamp_follow_changes_and_a_saved_state_is_what_loads(reg) -> None:
    empty = reg.stamp("m")
    assert reg.view("m") == {"champion": None, "history": []}
    reg.register("m", {"w": [1]}, reason="initial", champion=True)
    first = reg.stamp("m")
    assert first != empty and reg.stamp("m") == first  # reading changes nothing
    reg.register("m", {"w": [2]}, reason="drift", parent="1")
    view = reg.view("m")
    assert view["champion"] == reg.champion("m") and view["champion"].version == "1"
    assert [h["action"] for h in view["history"]] == ["registered", "promoted", "registered"]
    assert reg.stamp("m") != first
    with pytest.raises(RegistryError, match="champion"):
        reg.reject("m", "1", reason="the champion cannot lose")
    assert reg.load_artifact("m", "1") == {"w": [1]}
    reg.save_state("m", "1", {"w": [1.25]})  # it learned online while serving
    assert reg.load_artifact("m", "1") == {"w": [1.25]} and reg.load_artifact("m", "2") == {"w": [2]}
    assert reg.models() == ["m"] and [v.version for v in reg.versions("m")] == ["1", "2"]


@pytest.mark.integration
def test_mlflow_reads_every_page_of_versions_and_models(mlflow_server, tmp_path, monkeypatch) -> None:
    """A search answers one page: 10,000 versions, newest first, so that a flow retraining every hour lost its oldest
    versions (the first champions among them) from ``versions()`` after 14 months, and a second migration copied
    them twice. The real server, with pages of 2."""
    from models.registry.mlflow_store import MlflowRegistry

    reg = MlflowRegistry(mlflow_server.url)
    for search in ("search_model_versions", "search_registered_models"):
        paged = getattr(reg.client, search)
        monkeypatch.setattr(reg.client, search,
                            lambda *a, _paged=paged, **kw: _paged(*a, **{**kw, "max_results": 2}))
    local = ModelRegistry(tmp_path)
    local.register("m", {"v": 1}, reason="initial", champion=True)
    for v in range(2, 6):
        local.register("m", {"v": v}, reason=f"trial {v}", parent="1")
        local.reject("m", str(v), reason="worse")
    assert reg.import_local(local, "m") == reg.import_local(local, "m") == {str(v): str(v) for v in range(1, 6)}
    assert [v.version for v in reg.versions("m")] == ["1", "2", "3", "4", "5"]
    for name in ("a", "b"):
        reg.register(name, {}, reason="initial", champion=True)
    assert reg.models() == ["a", "b", "m"]
