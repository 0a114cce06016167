"""A local model registry: a directory that accounts for every model version.

Layout, one folder per model::

    ROOT/<model>/registry.json              versions, champion, history (the lineage)
    ROOT/<model>/versions/<v>/artifact.json the model's state when it was registered
    ROOT/<model>/versions/<v>/latest.json   its state when it last stopped serving (if it served)

Every change is an entry in ``history`` saying what happened, to which version, replacing which, and
why; versions are never deleted, so a rollback always has something to go back to, but the folder of a
version out of service goes once ``ARTIFACTS_KEPT`` newer ones are (``base.out_of_service``). Each call that
changes the registry may carry an ``action_id`` derived from the stream event that caused it: a replay
after a crash repeats the id and the registry does nothing the second time (at-least-once delivery,
exactly-once registry entries). Writes are atomic (temp file + rename) and serialised by a lock file,
so the running flow and ``eddyline models rollback`` can both write.

Artifacts are JSON (plain data from a model's ``snapshot()``), never pickles: loading one cannot run code.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from models.registry.base import (
    ROLLBACK_DEPTH,
    ModelVersion,
    Registry,
    RegistryError,
    check_name,
    dropped,
    history_entry,
    now_ms,
    out_of_service,
)


def _write_json(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(data, f, indent=1, sort_keys=True)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class ModelRegistry(Registry):
    """A local model registry: every version of every model under ``root``, its lineage, champion and states.

    Changes are atomic and serialised by a lock file, so a running flow and ``eddyline models rollback``
    can both write; a change carrying an ``action_id`` already seen does nothing (replays are safe).

    Parameters
    ----------
    root
        The registry's folder (created on first write).

    Examples
    --------
    >>> from models.registry.store import ModelRegistry
    >>> registry = ModelRegistry("registry")
    >>> first = registry.register("clicks", {"w": [0.0]}, reason="first model", champion=True)
    >>> second = registry.register("clicks", {"w": [0.5]}, reason="drift", parent="1", action_id="drift-7")
    >>> registry.register("clicks", {"w": [0.5]}, reason="drift", parent="1", action_id="drift-7").version  # replayed
    '2'
    >>> registry.promote("clicks", "2", reason="better log loss").status
    'champion'
    >>> registry.rollback("clicks", reason="manual").version
    '1'
    >>> [(v.version, v.status) for v in registry.versions("clicks")]
    [('1', 'champion'), ('2', 'rolled_back')]
    """

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root)

    # reading

    def _folder(self, model: str) -> Path:
        return self.root / check_name(model)

    def _load(self, model: str) -> dict[str, Any]:
        path = self._folder(model) / "registry.json"
        if not path.exists():
            return {"model": model, "champion": None, "champions": [], "versions": {}, "history": [], "actions": []}
        return json.loads(path.read_text())

    def models(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir() if (p / "registry.json").exists())

    def versions(self, model: str) -> list[ModelVersion]:
        data = self._load(model)
        return [ModelVersion(model=model, **v) for _, v in sorted(data["versions"].items(), key=lambda kv: int(kv[0]))]

    def get(self, model: str, version: str) -> ModelVersion:
        data = self._load(model)
        if version not in data["versions"]:
            raise RegistryError(f"model {model!r} has no version {version!r}")
        return ModelVersion(model=model, **data["versions"][version])

    def champion(self, model: str) -> ModelVersion | None:
        data = self._load(model)
        v = data["champion"]
        return None if v is None else ModelVersion(model=model, **data["versions"][v])

    def history(self, model: str) -> list[dict[str, Any]]:
        return self._load(model)["history"]

    def view(self, model: str) -> dict[str, Any]:
        data = self._load(model)
        v = data["champion"]
        return {"champion": None if v is None else ModelVersion(model=model, **data["versions"][v]),
                "history": data["history"]}

    def stamp(self, model: str) -> tuple[int, int, int]:
        try:
            st = (self._folder(model) / "registry.json").stat()
        except FileNotFoundError:
            return (0, 0, 0)
        return (st.st_ino, st.st_mtime_ns, st.st_size)

    def load_artifact(self, model: str, version: str) -> dict[str, Any]:
        self.get(model, version)
        folder = self._folder(model) / "versions" / version
        for name in ("latest.json", "artifact.json"):
            if (folder / name).exists():
                return json.loads((folder / name).read_text())
        if version in self._out_of_service(self._load(model)):
            raise dropped(model, version)
        raise RegistryError(f"artifact of {model} version {version} is missing from {folder}")

    # changing

    @contextmanager
    def _change(self, model: str) -> Iterator[dict[str, Any]]:
        folder = self._folder(model)
        folder.mkdir(parents=True, exist_ok=True)
        with open(folder / ".lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            data = self._load(model)
            yield data
            _write_json(folder / "registry.json", data)
            for version in self._out_of_service(data):  # after the change is recorded: a crash leaves only files
                shutil.rmtree(folder / "versions" / version, ignore_errors=True)

    @staticmethod
    def _out_of_service(data: dict[str, Any]) -> list[str]:
        statuses = {v: rec["status"] for v, rec in data["versions"].items()}
        return out_of_service(statuses, data["champions"], data["champion"])

    @staticmethod
    def _done(data: dict[str, Any], action_id: str | None) -> bool:
        if action_id is None:
            return False
        if action_id in data["actions"]:
            return True
        data["actions"].append(action_id)
        return False

    @staticmethod
    def _log(data: dict[str, Any], action: str, version: str, replaced: str | None, reason: str,
             action_id: str | None) -> None:
        data["history"].append(history_entry(action, version, replaced, reason, action_id))

    def register(self, model: str, artifact: dict[str, Any], *, reason: str, parent: str | None = None,
                 metrics: dict[str, float] | None = None, info: dict[str, Any] | None = None,
                 champion: bool = False, action_id: str | None = None) -> ModelVersion:
        with self._change(model) as data:
            if action_id is not None and action_id in data["actions"]:
                for v, rec in data["versions"].items():
                    if rec["info"].get("action_id") == action_id:
                        return ModelVersion(model=model, **rec)
            self._done(data, action_id)
            version = str(max((int(v) for v in data["versions"]), default=0) + 1)
            if parent is not None and parent not in data["versions"]:
                raise RegistryError(f"parent version {parent!r} of {model!r} is not registered")
            _write_json(self._folder(model) / "versions" / version / "artifact.json", artifact)
            rec = {"version": version, "status": "candidate", "parent": parent, "reason": reason,
                   "created_ms": now_ms(), "metrics": dict(metrics or {}),
                   "info": {**(info or {}), **({"action_id": action_id} if action_id else {})}}
            data["versions"][version] = rec
            self._log(data, "registered", version, None, reason, action_id)
            if champion:
                self._promote(data, model, version, reason, None, action_id)
            return ModelVersion(model=model, **data["versions"][version])

    def _promote(self, data: dict[str, Any], model: str, version: str, reason: str,
                 outgoing_state: dict[str, Any] | None, action_id: str | None) -> None:
        old = data["champion"]
        if old == version:  # already serving: a second link in the chain would make a rollback restore it to itself
            return
        if old is not None:
            data["versions"][old]["status"] = "retired"
            if outgoing_state is not None:
                _write_json(self._folder(model) / "versions" / old / "latest.json", outgoing_state)
        data["versions"][version]["status"] = "champion"
        data["champion"] = version
        data["champions"] = [*data["champions"], version][-ROLLBACK_DEPTH:]
        self._log(data, "promoted", version, old, reason, action_id)

    def promote(self, model: str, version: str, *, reason: str, metrics: dict[str, float] | None = None,
                outgoing_state: dict[str, Any] | None = None, action_id: str | None = None) -> ModelVersion:
        with self._change(model) as data:
            if version not in data["versions"]:
                raise RegistryError(f"model {model!r} has no version {version!r}")
            if not self._done(data, action_id):
                data["versions"][version]["metrics"].update(metrics or {})
                self._promote(data, model, version, reason, outgoing_state, action_id)
            return ModelVersion(model=model, **data["versions"][version])

    def reject(self, model: str, version: str, *, reason: str, metrics: dict[str, float] | None = None,
               action_id: str | None = None) -> ModelVersion:
        with self._change(model) as data:
            if version not in data["versions"]:
                raise RegistryError(f"model {model!r} has no version {version!r}")
            if self._done(data, action_id):
                return ModelVersion(model=model, **data["versions"][version])
            if data["champion"] == version:
                raise RegistryError(f"version {version} of {model!r} is the champion; roll back instead")
            data["versions"][version]["status"] = "rejected"
            data["versions"][version]["metrics"].update(metrics or {})
            self._log(data, "rejected", version, None, reason, action_id)
            return ModelVersion(model=model, **data["versions"][version])

    def rollback(self, model: str, *, reason: str, outgoing_state: dict[str, Any] | None = None,
                 action_id: str | None = None) -> ModelVersion:
        with self._change(model) as data:
            current = data["champion"]
            if current is None:
                raise RegistryError(f"model {model!r} has no champion to roll back")
            if self._done(data, action_id):
                return ModelVersion(model=model, **data["versions"][current])
            chain = data["champions"]  # champions in the order they took over; the current one last
            if len(chain) < 2:
                raise RegistryError(f"version {current} of {model!r} replaced no earlier champion; nothing to roll back to")
            chain.pop()
            previous = chain[-1]
            if outgoing_state is not None:
                _write_json(self._folder(model) / "versions" / current / "latest.json", outgoing_state)
            data["versions"][current]["status"] = "rolled_back"
            data["versions"][previous]["status"] = "champion"
            data["champion"] = previous
            self._log(data, "rolled_back", previous, current, reason, action_id)
            return ModelVersion(model=model, **data["versions"][previous])

    def save_state(self, model: str, version: str, state: dict[str, Any]) -> None:
        self.get(model, version)
        _write_json(self._folder(model) / "versions" / version / "latest.json", state)
