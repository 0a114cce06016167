"""What a model registry does, whatever keeps it: the calls the flows, the outbox and ``eddyline models`` make,
what they return (``ModelVersion``) and raise (``RegistryError``), and the names and lineage entries every
registry keeps alike.

``ModelRegistry`` (a local folder) and ``MlflowRegistry`` (MLflow's model registry) both implement ``Registry``;
its methods carry the documentation, so an implementation documents only what it does differently, and a
new one is checked by the same conformance tests (tests/unit/test_registry.py).
"""

from __future__ import annotations

import re
import time
from abc import ABC, abstractmethod
from collections.abc import Hashable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
STATUSES = ("candidate", "champion", "retired", "rejected", "rolled_back")
# How many champions back a rollback can go: the chain is kept to this length (MLflow holds it in one tag).
ROLLBACK_DEPTH = 100
# Versions out of service (neither serving nor on trial, out of a rollback's reach) that keep their artifacts, newest
# first: their records stay for ever, but a flow that retrains every hour for months would fill the disk.
ARTIFACTS_KEPT = 10


class RegistryError(ValueError):
    """A registry request that cannot be honoured; the message says why."""


@dataclass(frozen=True)
class ModelVersion:
    """One registered version of a model, as the registry keeps it.

    Parameters
    ----------
    model
        The model's name.
    version
        ``1``, ``2``, ... in order of registration.
    status
        ``candidate``, ``champion``, ``retired``, ``rejected`` or ``rolled_back``.
    parent
        The champion it was trained to replace, if any.
    reason
        Why it exists (the trigger of its training).
    created_ms
        When it was registered, ms since the epoch.
    metrics
        The numbers that decided its fate (log loss, AUC, ...).
    info
        Anything else worth keeping: training window, trigger, the action id.
    """

    model: str
    version: str
    status: str
    parent: str | None  # the champion it was trained to replace
    reason: str
    created_ms: int
    metrics: dict[str, float] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)  # training window, trigger, anything else worth keeping


def now_ms() -> int:
    """Unix milliseconds now: the registries' clock for ``created_ms`` and the lineage's ``time_ms``."""
    return int(time.time() * 1000)


def check_name(model: str) -> str:
    """``model`` if it is a name every registry can store (a folder name, an MLflow name); else ``RegistryError``.

    Parameters
    ----------
    model
        The model's name: letters, digits, ``.``, ``_`` and ``-``.
    """
    if not _NAME.match(model):
        raise RegistryError(f"bad model name {model!r}: letters, digits, '.', '_' and '-' only")
    return model


def history_entry(action: str, version: str, replaced: str | None, reason: str, action_id: str | None,
                  time_ms: int | None = None) -> dict[str, Any]:
    """One lineage entry, in the one shape every registry keeps, so that a migration copies it as it is.

    Parameters
    ----------
    action
        What happened: ``registered``, ``promoted``, ``rejected`` or ``rolled_back``.
    version
        The version the action registered, promoted, rejected or rolled back to.
    replaced
        The version it replaced, if any.
    reason
        Why, as the caller gave it.
    action_id
        The caller's id for the action, so that a retried action is recorded once.
    time_ms
        When, in Unix milliseconds (now if not given).
    """
    return {"action": action, "version": version, "replaced": replaced, "reason": reason,
            "time_ms": time_ms or now_ms(), "action_id": action_id}


def out_of_service(statuses: dict[str, str], chain: list[str], champion: str | None) -> list[str]:
    """The versions whose artifacts go: out of service, and older than the newest ``ARTIFACTS_KEPT`` such.

    Parameters
    ----------
    statuses
        Every version of a model and its status.
    chain
        The champions a rollback can go back to.
    champion
        The version serving now.
    """
    keep = {*chain, champion}
    idle = sorted((v for v, status in statuses.items() if v not in keep and status != "candidate"), key=int)
    return idle[: max(len(idle) - ARTIFACTS_KEPT, 0)]


def dropped(model: str, version: str) -> RegistryError:
    """Why a version's artifact cannot be loaded any more, for ``load_artifact`` to raise.

    Parameters
    ----------
    model, version
        The version out of service.
    """
    return RegistryError(f"version {version} of {model!r} is out of service and its artifact was dropped: only the "
                         f"champion, challengers on trial, the champions a rollback can reach and the newest "
                         f"{ARTIFACTS_KEPT} other versions keep theirs (its record, metrics and lineage stay)")


class Registry(ABC):
    """Every version of every model, its lineage, champion and newest states.

    Versions are numbered ``"1"``, ``"2"``, ... per model and never deleted, so a rollback always has something
    to go back to; those out of service (neither serving nor on trial, out of a rollback's reach) keep their
    artifacts only while among the newest ``ARTIFACTS_KEPT`` such. A change carrying an ``action_id`` already
    seen does nothing (a replay after a crash is safe). Unknown versions and bad names raise ``RegistryError``.
    ``root`` says where the registry is kept (a folder, a tracking URI), for messages.
    """

    root: Path | str

    # reading

    @abstractmethod
    def models(self) -> list[str]:
        """The names of the registered models, sorted."""

    @abstractmethod
    def versions(self, model: str) -> list[ModelVersion]:
        """Every registered version of ``model``, oldest first (none for an unknown model).

        Parameters
        ----------
        model
            The model's name: letters, digits, ``.``, ``_`` and ``-``.
        """

    @abstractmethod
    def get(self, model: str, version: str) -> ModelVersion:
        """One version; ``RegistryError`` if it is not registered.

        Parameters
        ----------
        model, version
            Which one.
        """

    @abstractmethod
    def champion(self, model: str) -> ModelVersion | None:
        """The version serving now, or None before the first promotion.

        Parameters
        ----------
        model
            The model's name.
        """

    @abstractmethod
    def history(self, model: str) -> list[dict[str, Any]]:
        """The lineage: every registration, promotion, rejection and rollback, oldest first.

        Parameters
        ----------
        model
            The model's name.
        """

    @abstractmethod
    def view(self, model: str) -> dict[str, Any]:
        """One read of what a flow watches: ``{"champion": ModelVersion | None, "history": [...]}``.

        Parameters
        ----------
        model
            The model's name.
        """

    @abstractmethod
    def stamp(self, model: str) -> Hashable:
        """Changes whenever the champion or the lineage of ``model`` changes: cheap to poll, unlike ``view``.

        Parameters
        ----------
        model
            The model's name.
        """

    @abstractmethod
    def load_artifact(self, model: str, version: str) -> dict[str, Any]:
        """The version's newest state: where it stopped serving if it served, else as registered.

        Parameters
        ----------
        model, version
            Which one; ``RegistryError`` if it is not registered or out of service long enough to have lost it.
        """

    # changing

    @abstractmethod
    def register(self, model: str, artifact: dict[str, Any], *, reason: str, parent: str | None = None,
                 metrics: dict[str, float] | None = None, info: dict[str, Any] | None = None,
                 champion: bool = False, action_id: str | None = None) -> ModelVersion:
        """Add a version (numbered 1, 2, ...); ``champion`` makes it the champion at once (a first model).

        Parameters
        ----------
        model
            The model's name: letters, digits, ``.``, ``_`` and ``-``.
        artifact
            The model's state as plain data (its ``snapshot()``), stored as JSON, never a pickle.
        reason
            Why it exists, kept in the lineage.
        parent
            The registered version it was trained to replace.
        metrics
            Numbers worth keeping with it.
        info
            Anything else worth keeping (training window, trigger).
        champion
            Promote it at once.
        action_id
            Derived from the event that caused this; a repeat returns the version already registered.
        """

    @abstractmethod
    def promote(self, model: str, version: str, *, reason: str, metrics: dict[str, float] | None = None,
                outgoing_state: dict[str, Any] | None = None, action_id: str | None = None) -> ModelVersion:
        """Make ``version`` the champion; ``outgoing_state`` keeps what the replaced champion had learned.

        Promoting the serving champion again only adds ``metrics``: the lineage and the chain a rollback
        follows stay as they are, so a rollback still restores the champion it replaced.

        Parameters
        ----------
        model, version
            Which one; ``RegistryError`` if it is not registered.
        reason, metrics, action_id
            As for ``register``.
        outgoing_state
            The replaced champion's newest state, so that a rollback to it resumes from there.
        """

    @abstractmethod
    def reject(self, model: str, version: str, *, reason: str, metrics: dict[str, float] | None = None,
               action_id: str | None = None) -> ModelVersion:
        """Record that a challenger lost; it stays registered, with the numbers that decided it.

        Parameters
        ----------
        model, version
            Which one; ``RegistryError`` if it is the champion (roll back instead).
        reason, metrics, action_id
            As for ``register``.
        """

    @abstractmethod
    def rollback(self, model: str, *, reason: str, outgoing_state: dict[str, Any] | None = None,
                 action_id: str | None = None) -> ModelVersion:
        """Restore the champion that the current one replaced; the current one is marked rolled back.

        Parameters
        ----------
        model
            The model's name; ``RegistryError`` when there is nothing to go back to.
        reason, action_id
            As for ``register``.
        outgoing_state
            As for ``promote``.
        """

    @abstractmethod
    def save_state(self, model: str, version: str, state: dict[str, Any]) -> None:
        """Keep a serving version's newest state (it learns online), so a rollback to it resumes from here.

        Parameters
        ----------
        model, version
            Which one.
        state
            Its state as plain data.
        """
