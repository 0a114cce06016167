"""The model registry on MLflow: the same calls as the local registry, kept where MLOps teams look.

How the local registry's ideas map onto MLflow's model registry:

- a version is an MLflow model version; its run (experiment ``eddyline/<model>``) holds its parameters,
  metrics and ``model/artifact.json`` (plain data, never a pickle), and ``model/latest.json`` once it
  stopped serving;
- the champion and the challenger are the aliases ``champion`` and ``challenger``, so a flow follows
  ``models:/NAME@champion`` and a rollback is an alias move;
- a version's status, parent, reason, metrics and action id are its tags (``eddyline.*``);
- the lineage (every registration, promotion, rejection and rollback: which version replaced which and
  why) is kept as the registered model's tags ``eddyline.history.NNNNNN``, the order of champions as
  ``eddyline.champions``;
- exactly once under replays: a change carrying an ``action_id`` is recorded as the tag
  ``eddyline.action.<id>``; a registration is found again by its version's ``eddyline.action_id`` tag;
- a version out of service (``base.out_of_service``) loses its run's ``model/`` artifacts as a local version
  loses its folder, and is tagged ``eddyline.artifact = dropped``.

Two writers at the same moment (a flow and ``eddyline models rollback``) are not serialised as the
local registry's lock file serialises them; the history keeps both entries.
"""

from __future__ import annotations

import json
from types import SimpleNamespace
from typing import Any

from models import tracking
from models.registry.base import (
    ROLLBACK_DEPTH,
    ModelVersion,
    Registry,
    RegistryError,
    check_name,
    dropped,
    history_entry,
    out_of_service,
)

CHAMPION, CHALLENGER = "champion", "challenger"
_HISTORY = "eddyline.history."
_DROPPED = "eddyline.artifact"


def _missing(exc: Exception) -> bool:
    return getattr(exc, "error_code", "") == "RESOURCE_DOES_NOT_EXIST"


def _every(search: Any, *args: Any) -> list[Any]:
    """All that an MLflow search finds, page after page: a page holds 10,000 versions (the newest: the champions a
    rollback reaches go first) or 100 models, and a flow that retrains every hour registers 10,000 in 14 months."""
    found, token = [], None
    while True:
        page = search(*args, page_token=token)
        found.extend(page)
        token = page.token
        if not token:
            return found


class MlflowRegistry(Registry):
    """Model versions, champion and challenger aliases, lineage and rollback on an MLflow model registry.

    Parameters
    ----------
    tracking_uri
        The MLflow tracking/registry URI (default: ``models.tracking.tracking_uri()``: the configured
        server, ``MLFLOW_TRACKING_URI`` or the embedded store).

    Examples
    --------
    >>> import tempfile
    >>> from models import tracking
    >>> from models.registry.mlflow_store import MlflowRegistry
    >>> registry = MlflowRegistry(tracking.embedded_uri(tempfile.mkdtemp()))
    >>> first = registry.register("clicks", {"w": [0.0]}, reason="first model", champion=True)
    >>> second = registry.register("clicks", {"w": [0.5]}, reason="drift", parent="1", action_id="drift-7")
    >>> registry.register("clicks", {"w": [0.5]}, reason="drift", parent="1", action_id="drift-7").version
    '2'
    >>> registry.promote("clicks", "2", reason="better log loss").status
    'champion'
    >>> registry.rollback("clicks", reason="manual").version
    '1'
    >>> [(v.version, v.status) for v in registry.versions("clicks")]
    [('1', 'champion'), ('2', 'rolled_back')]
    """

    def __init__(self, tracking_uri: str | None = None) -> None:
        self.uri = tracking_uri or tracking.tracking_uri()
        self._client: Any = None

    def __getstate__(self) -> dict[str, Any]:
        return {"uri": self.uri, "_client": None}

    @property
    def root(self) -> str:
        return self.uri

    @property
    def client(self) -> Any:
        if self._client is None:
            self._client = tracking.client(self.uri)
        return self._client

    # reading

    def _registered(self, model: str) -> SimpleNamespace | None:
        """The registered model's name, tags and aliases as one plain, writable snapshot (None if new)."""
        check_name(model)
        from mlflow.exceptions import MlflowException

        try:
            rm = self.client.get_registered_model(model)
        except MlflowException as exc:
            if _missing(exc):
                return None
            raise
        return SimpleNamespace(name=rm.name, tags=dict(rm.tags or {}), aliases={k: str(v) for k, v in (rm.aliases or {}).items()})

    @staticmethod
    def _as_version(model: str, mv: Any) -> ModelVersion:
        tags = mv.tags
        return ModelVersion(
            model=model, version=str(mv.version), status=tags.get("eddyline.status", "candidate"),
            parent=tags.get("eddyline.parent") or None, reason=tags.get("eddyline.reason", mv.description or ""),
            created_ms=int(mv.creation_timestamp or 0), metrics=json.loads(tags.get("eddyline.metrics", "{}")),
            info=json.loads(tags.get("eddyline.info", "{}")))

    def models(self) -> list[str]:
        return sorted(m.name for m in _every(self.client.search_registered_models))

    def versions(self, model: str) -> list[ModelVersion]:
        check_name(model)
        return sorted((self._as_version(model, mv) for mv in self._all(model)), key=lambda v: int(v.version))

    def _all(self, model: str) -> list[Any]:
        return _every(self.client.search_model_versions, f"name = '{model}'")

    def _mv(self, model: str, version: str) -> Any:
        check_name(model)
        from mlflow.exceptions import MlflowException

        try:
            return self.client.get_model_version(model, version)
        except MlflowException as exc:
            if _missing(exc):
                raise RegistryError(f"model {model!r} has no version {version!r}") from None
            raise

    def get(self, model: str, version: str) -> ModelVersion:
        return self._as_version(model, self._mv(model, version))

    def champion(self, model: str) -> ModelVersion | None:
        """The version the ``champion`` alias points at, or None."""
        rm = self._registered(model)
        version = None if rm is None else (rm.aliases or {}).get(CHAMPION)
        return None if version is None else self.get(model, str(version))

    @staticmethod
    def _history(rm: Any) -> list[dict[str, Any]]:
        tags = rm.tags or {}
        return [json.loads(tags[k]) for k in sorted(k for k in tags if k.startswith(_HISTORY))]

    def history(self, model: str) -> list[dict[str, Any]]:
        rm = self._registered(model)
        return [] if rm is None else self._history(rm)

    def view(self, model: str) -> dict[str, Any]:
        rm = self._registered(model)
        if rm is None:
            return {"champion": None, "history": []}
        version = (rm.aliases or {}).get(CHAMPION)
        return {"champion": None if version is None else self.get(model, str(version)), "history": self._history(rm)}

    def stamp(self, model: str) -> tuple[int, str]:
        """Changes whenever the lineage grows or the champion alias moves."""
        rm = self._registered(model)
        if rm is None:
            return (0, "")
        return (sum(k.startswith(_HISTORY) for k in rm.tags or {}), str((rm.aliases or {}).get(CHAMPION, "")))

    def load_artifact(self, model: str, version: str) -> dict[str, Any]:
        mv = self._mv(model, version)
        from mlflow.exceptions import MlflowException

        names = {f.path for f in self.client.list_artifacts(mv.run_id, "model")}
        for name in ("model/latest.json", "model/artifact.json"):
            if name in names:
                try:
                    path = self.client.download_artifacts(mv.run_id, name)
                except (MlflowException, OSError) as exc:
                    raise RegistryError(f"artifact {name} of {model} version {version} cannot be read: {exc}") from None
                with open(path) as f:
                    return json.load(f)
        if mv.tags.get(_DROPPED) == "dropped":
            raise dropped(model, version)
        raise RegistryError(f"artifact of {model} version {version} is missing from run {mv.run_id}")

    # changing

    def _ensure(self, model: str) -> Any:
        rm = self._registered(model)
        if rm is not None:
            return rm
        from mlflow.exceptions import MlflowException

        try:
            self.client.create_registered_model(model, description="Registered by eddyline.")
        except MlflowException as exc:
            if getattr(exc, "error_code", "") != "RESOURCE_ALREADY_EXISTS":
                raise
        return self._registered(model)

    def _done(self, rm: Any, action_id: str | None) -> bool:
        return action_id is not None and f"eddyline.action.{action_id}" in (rm.tags or {})

    def _log(self, rm: Any, action: str, version: str, replaced: str | None, reason: str, action_id: str | None,
             time_ms: int | None = None) -> None:
        n = sum(k.startswith(_HISTORY) for k in rm.tags or {})
        entry = history_entry(action, version, replaced, reason, action_id, time_ms)
        self.client.set_registered_model_tag(rm.name, f"{_HISTORY}{n:06d}", json.dumps(entry, sort_keys=True))
        rm.tags[f"{_HISTORY}{n:06d}"] = json.dumps(entry)
        if action_id is not None:
            self.client.set_registered_model_tag(rm.name, f"eddyline.action.{action_id}", action)
            rm.tags[f"eddyline.action.{action_id}"] = action

    def _set_status(self, model: str, version: str, status: str) -> None:
        self.client.set_model_version_tag(model, version, "eddyline.status", status)

    def _add_metrics(self, model: str, mv: Any, metrics: dict[str, float] | None) -> None:
        if not metrics:
            return
        merged = {**json.loads(mv.tags.get("eddyline.metrics", "{}")), **metrics}
        self.client.set_model_version_tag(model, str(mv.version), "eddyline.metrics", json.dumps(merged, sort_keys=True))
        run = tracking.Run(self.client, mv.run_id)
        run.metrics(metrics)

    def _save_latest(self, model: str, version: str, state: dict[str, Any]) -> None:
        mv = self._mv(model, version)
        self.client.log_dict(mv.run_id, state, "model/latest.json")

    def _drop_out_of_service(self, model: str, rm: Any, champion: str | None) -> None:
        """Drop the artifacts of versions out of service (``base.out_of_service``), after the change that
        put them there; a store that refuses one is warned about and asked again at the next change, and the others
        still go. A run purged by hand (``mlflow gc``) took its artifacts along: nothing is left to ask for."""
        from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

        versions = {str(mv.version): mv for mv in self._all(model)}
        statuses = {v: mv.tags.get("eddyline.status", "candidate") for v, mv in versions.items()}
        chain = json.loads((rm.tags or {}).get("eddyline.champions", "[]"))
        for version in out_of_service(statuses, chain, champion):
            mv = versions[version]
            if mv.tags.get(_DROPPED) == "dropped":
                continue
            try:
                uri = self.client.get_run(mv.run_id).info.artifact_uri
                get_artifact_repository(uri, tracking_uri=self.uri).delete_artifacts("model")
            except Exception as exc:
                if not _missing(exc):
                    tracking.warn_once(f"drop the artifacts of {model} versions out of service", exc, self.uri)
                    continue
            self.client.set_model_version_tag(model, version, _DROPPED, "dropped")

    def register(self, model: str, artifact: dict[str, Any], *, reason: str, parent: str | None = None,
                 metrics: dict[str, float] | None = None, info: dict[str, Any] | None = None,
                 champion: bool = False, action_id: str | None = None) -> ModelVersion:
        """A run with its parameters, metrics and artifact, and a model version on it; the ``challenger``
        alias points at it (``champion`` when ``champion`` is set)."""
        rm = self._ensure(model)
        if action_id is not None:
            found = self.client.search_model_versions(f"name = '{model}' and tags.`eddyline.action_id` = '{action_id}'")
            if found:
                return self._as_version(model, found[0])
        if parent is not None:
            self._mv(model, parent)
        info = {**(info or {}), **({"action_id": action_id} if action_id else {})}
        mv = self._create_version(model, artifact, reason=reason, parent=parent, metrics=metrics or {}, info=info,
                                  status="candidate", action_id=action_id)
        version = str(mv.version)
        self._log(rm, "registered", version, None, reason, action_id)
        if champion:
            self._promote(rm, model, version, reason, None, action_id)
        else:
            self.client.set_registered_model_alias(model, CHALLENGER, version)
        return self.get(model, version)

    def _create_version(self, model: str, artifact: dict[str, Any] | None, *, reason: str, parent: str | None,
                        metrics: dict[str, float], info: dict[str, Any], status: str, action_id: str | None,
                        extra_tags: dict[str, str] | None = None) -> Any:
        """A run holding the artifact (unless None), parameters and metrics, and a model version on it."""
        with tracking.run(f"eddyline/{model}", f"{model} {reason}"[:250], uri=self.uri,
                          tags={"eddyline.model": model, "eddyline.parent": parent or ""}) as run:
            if not run.active:
                raise ConnectionError(f"cannot reach the MLflow registry at {self.uri}")
            run.params(info)
            run.metrics(metrics)
            if artifact is not None:
                self.client.log_dict(run.run_id, artifact, "model/artifact.json")
            source = f"{self.client.get_run(run.run_id).info.artifact_uri}/model"
        tags = {"eddyline.status": status, "eddyline.parent": parent or "", "eddyline.reason": reason[:5000],
                "eddyline.metrics": json.dumps(metrics, sort_keys=True),
                "eddyline.info": json.dumps(info, sort_keys=True, default=str), **(extra_tags or {})}
        if action_id is not None:
            tags["eddyline.action_id"] = action_id
        return self.client.create_model_version(model, source, run_id=run.run_id, tags=tags, description=reason[:5000])

    def import_local(self, source: Any, model: str) -> dict[str, str]:
        """Copy one model of a local registry (``ModelRegistry``) here: versions with their artifacts, newest
        states, statuses, metrics and action ids (so replays stay exactly-once), the lineage, the order of
        champions and the champion alias. Running it again copies nothing twice.

        Parameters
        ----------
        source
            The local registry.
        model
            The model to copy.

        Returns
        -------
        dict
            Local version number to MLflow version number.
        """
        rm = self._ensure(model)
        mapping = {str(mv.tags["eddyline.migrated_from"]): str(mv.version)
                   for mv in self._all(model)
                   if "eddyline.migrated_from" in mv.tags}
        folder = source.root / model / "versions"
        for v in source.versions(model):
            if v.version in mapping:
                continue
            kept = (folder / v.version / "artifact.json").exists()  # not when out of service long enough
            artifact = json.loads((folder / v.version / "artifact.json").read_text()) if kept else None
            mv = self._create_version(
                model, artifact, reason=v.reason, parent=mapping.get(v.parent) if v.parent else None,
                metrics=v.metrics, info=v.info, status=v.status, action_id=v.info.get("action_id"),
                extra_tags={"eddyline.migrated_from": v.version, "eddyline.migrated_from_dir": str(source.root),
                            **({} if kept else {_DROPPED: "dropped"})})
            mapping[v.version] = str(mv.version)
            if (folder / v.version / "latest.json").exists():
                self._save_latest(model, str(mv.version), json.loads((folder / v.version / "latest.json").read_text()))
        if "eddyline.migrated" not in (rm.tags or {}):
            for h in source.history(model):
                replaced = mapping.get(h["replaced"]) if h.get("replaced") else None
                self._log(rm, h["action"], mapping[h["version"]], replaced, h["reason"], h.get("action_id"),
                          time_ms=h.get("time_ms"))
            chain = json.loads((rm.tags or {}).get("eddyline.champions", "[]"))
            chain = [*chain, *(mapping[v] for v in source._load(model)["champions"])][-ROLLBACK_DEPTH:]
            self.client.set_registered_model_tag(model, "eddyline.champions", json.dumps(chain))
            champ = source.champion(model)
            if champ is not None:
                self.client.set_registered_model_alias(model, CHAMPION, mapping[champ.version])
            self.client.set_registered_model_tag(model, "eddyline.migrated", str(source.root))
        return mapping

    def _promote(self, rm: Any, model: str, version: str, reason: str, outgoing_state: dict[str, Any] | None,
                 action_id: str | None) -> None:
        old = (rm.aliases or {}).get(CHAMPION)
        old = None if old is None else str(old)
        if old == version:  # already serving: a second link in the chain would make a rollback restore it to itself
            return
        if old is not None:
            self._set_status(model, old, "retired")
            if outgoing_state is not None:
                self._save_latest(model, old, outgoing_state)
        self._set_status(model, version, CHAMPION)
        self.client.set_registered_model_alias(model, CHAMPION, version)
        if (rm.aliases or {}).get(CHALLENGER) is not None and str(rm.aliases[CHALLENGER]) == version:
            self.client.delete_registered_model_alias(model, CHALLENGER)
        chain = [*json.loads((rm.tags or {}).get("eddyline.champions", "[]")), version][-ROLLBACK_DEPTH:]
        self.client.set_registered_model_tag(model, "eddyline.champions", json.dumps(chain))
        rm.tags["eddyline.champions"] = json.dumps(chain)
        self._log(rm, "promoted", version, old, reason, action_id)
        self._drop_out_of_service(model, rm, version)

    def promote(self, model: str, version: str, *, reason: str, metrics: dict[str, float] | None = None,
                outgoing_state: dict[str, Any] | None = None, action_id: str | None = None) -> ModelVersion:
        """Move the ``champion`` alias to ``version``; ``outgoing_state`` keeps what the replaced one learned."""
        mv = self._mv(model, version)
        rm = self._ensure(model)
        if not self._done(rm, action_id):
            self._add_metrics(model, mv, metrics)
            self._promote(rm, model, version, reason, outgoing_state, action_id)
        return self.get(model, version)

    def reject(self, model: str, version: str, *, reason: str, metrics: dict[str, float] | None = None,
               action_id: str | None = None) -> ModelVersion:
        mv = self._mv(model, version)
        rm = self._ensure(model)
        if self._done(rm, action_id):
            return self.get(model, version)
        if str((rm.aliases or {}).get(CHAMPION, "")) == version:
            raise RegistryError(f"version {version} of {model!r} is the champion; roll back instead")
        self._set_status(model, version, "rejected")
        self._add_metrics(model, mv, metrics)
        if str((rm.aliases or {}).get(CHALLENGER, "")) == version:
            self.client.delete_registered_model_alias(model, CHALLENGER)
        self._log(rm, "rejected", version, None, reason, action_id)
        self._drop_out_of_service(model, rm, (rm.aliases or {}).get(CHAMPION))
        return self.get(model, version)

    def rollback(self, model: str, *, reason: str, outgoing_state: dict[str, Any] | None = None,
                 action_id: str | None = None) -> ModelVersion:
        """Move the ``champion`` alias back to the champion the current one replaced."""
        rm = self._registered(model)
        current = None if rm is None else (rm.aliases or {}).get(CHAMPION)
        if current is None:
            raise RegistryError(f"model {model!r} has no champion to roll back")
        current = str(current)
        if self._done(rm, action_id):
            return self.get(model, current)
        chain = json.loads((rm.tags or {}).get("eddyline.champions", "[]"))
        if chain and chain[-1] != current:  # the alias was moved by hand (MLflow UI): follow it
            chain.append(current)
        if len(chain) < 2:
            raise RegistryError(f"version {current} of {model!r} replaced no earlier champion; nothing to roll back to")
        chain.pop()
        previous = chain[-1]
        if outgoing_state is not None:
            self._save_latest(model, current, outgoing_state)
        self._set_status(model, current, "rolled_back")
        self._set_status(model, previous, CHAMPION)
        self.client.set_registered_model_alias(model, CHAMPION, previous)
        self.client.set_registered_model_tag(model, "eddyline.champions", json.dumps(chain))
        rm.tags["eddyline.champions"] = json.dumps(chain)
        self._log(rm, "rolled_back", previous, current, reason, action_id)
        self._drop_out_of_service(model, rm, previous)
        return self.get(model, previous)

    def save_state(self, model: str, version: str, state: dict[str, Any]) -> None:
        self._save_latest(model, version, state)
