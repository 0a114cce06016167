"""Registry changes and champion checks off a flow's hot path, in order, retried until the registry takes them.

A scoring flow must not wait for a registry server, nor lose a change when the server is down. The
flow hands each change (register, promote, reject, save a state) to the outbox; it is applied in
order, and a failure leaves it at the head of the queue to be retried ``retry_s`` later. The queue is
plain data in the flow's checkpoint (``state()``/``load()``), so a change waiting when the process
dies is retried after the restart: that is the durable pending record. Changes carry action ids, so
retrying one that did reach the registry does nothing twice. A change the registry refuses
(``RegistryError``, e.g. for a version a folder restored from a backup does not know) would be refused
at every retry and hold up every change after it: it is logged with the reason and dropped.

The outbox also reads what the flow follows (the champion, the lineage and, when the champion is not
what the flow serves, its artifact) every ``poll_s``; the flow only looks at the latest read, and
only at one taken after all its own changes were applied (``settled()``).

``background=False`` does everything inline at ``step()`` (a local registry folder: fast, and
deterministic for tests); ``background=True`` uses one daemon thread (a registry server).
"""

from __future__ import annotations

import dataclasses
import logging
import threading
from typing import Any

from models.registry.base import ModelVersion, Registry, RegistryError

log = logging.getLogger(__name__)
OPS = ("register", "promote", "reject", "save_state")


class RegistryOutbox:
    """Ordered, retried registry changes and a polled view of the champion for one model.

    Parameters
    ----------
    registry
        Where the changes go: a ``Registry`` (``ModelRegistry``, ``MlflowRegistry``).
    model
        The model's name.
    background
        Apply changes and poll in a thread (True) or inline at ``step()`` (False).
    poll_s
        Seconds between reads of the champion (background).
    retry_s
        Seconds before a change that failed is tried again (background).
    """

    def __init__(self, registry: Registry, model: str, *, background: bool = False, poll_s: float = 5.0,
                 retry_s: float = 10.0) -> None:
        self.registry, self.model = registry, model
        self.background, self.poll_s, self.retry_s = background, poll_s, retry_s
        self.serving: str | None = None  # the version the flow serves; its champion's artifact is read when it differs
        self._init_runtime()
        self._pending: list[dict[str, Any]] = []
        self._results: dict[str, dict[str, Any]] = {}
        self._submitted = 0

    def _init_runtime(self) -> None:
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._view: dict[str, Any] | None = None
        self._stamp: Any = None
        self._closed = False

    def __reduce__(self) -> Any:
        raise TypeError("a RegistryOutbox holds a registry client and is never pickled; checkpoint its queue with "
                        "state() and load() it into a new outbox (the flow's processor snapshot does)")

    # the flow's side

    def submit(self, op: str, **kwargs: Any) -> None:
        """Queue a change: ``register``, ``promote``, ``reject`` or ``save_state`` with that call's arguments.

        Parameters
        ----------
        op
            The registry call.
        kwargs
            Its arguments except the model (plain data: they go into checkpoints).
        """
        if op not in OPS:
            raise ValueError(f"unknown registry change {op!r}; one of {OPS}")
        with self._lock:
            self._pending.append({"op": op, "kwargs": kwargs})
            self._submitted += 1
        self._wake.set()

    def result(self, action_id: str) -> ModelVersion | None:
        """The version a queued ``register`` with ``action_id`` got, once applied (then forgotten); ``RegistryError``
        if the registry refused it, so that the caller stops waiting for a version that will never come.

        Parameters
        ----------
        action_id
            The registration's action id.
        """
        with self._lock:
            rec = self._results.pop(action_id, None)
        if rec is not None and "refused" in rec:
            raise RegistryError(rec["refused"])
        return None if rec is None else ModelVersion(**rec)

    @property
    def pending(self) -> int:
        with self._lock:
            return len(self._pending)

    def settled(self) -> dict[str, Any] | None:
        """The latest read of the registry (``champion``, ``history``, ``artifact``), if it was taken after
        every change queued so far had been applied; else None."""
        with self._lock:
            view = self._view
            if self._pending or view is None or view["submitted"] != self._submitted:
                return None
            return view

    def step(self) -> None:
        """Inline: apply the queue and read the registry now (errors other than a refusal raise). Background: start
        the thread."""
        if self.background:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._loop, name=f"registry-{self.model}", daemon=True)
                self._thread.start()
            return
        applied = self._drain()
        stamp = self.registry.stamp(self.model)
        if applied or stamp != self._stamp or self._view is None:
            self._refresh()
            self._stamp = stamp

    def close(self) -> None:
        """Stop the background thread (what is still queued stays in ``state()``)."""
        self._closed = True
        self._wake.set()

    def state(self) -> dict[str, Any]:
        """The queue and unread results as plain data, for the flow's checkpoint."""
        with self._lock:
            return {"pending": [dict(p) for p in self._pending], "results": dict(self._results),
                    "submitted": self._submitted}

    def load(self, state: dict[str, Any]) -> None:
        """Take the queue back from a checkpoint; its changes are applied (again: they are idempotent).

        Parameters
        ----------
        state
            From ``state()``.
        """
        with self._lock:
            self._pending = [dict(p) for p in state["pending"]]
            self._results = dict(state["results"])
            self._submitted = int(state["submitted"])
            self._view = None
        self._wake.set()

    # the registry's side

    def _apply(self, change: dict[str, Any]) -> None:
        op, kwargs = change["op"], change["kwargs"]
        if op == "save_state":
            self.registry.save_state(self.model, kwargs["version"], kwargs["state"])
            return
        version = getattr(self.registry, op)(self.model, **kwargs)
        if op == "register" and kwargs.get("action_id"):
            with self._lock:
                self._results[kwargs["action_id"]] = dataclasses.asdict(version)

    def _drain(self) -> int:
        applied = 0
        while not self._closed:
            with self._lock:
                if not self._pending:
                    return applied
                change = self._pending[0]
            try:
                self._apply(change)
            except RegistryError as exc:  # refused for good: retrying would fail every batch, at every restart
                log.error("registry change %s of %s refused, dropped: %s", change["op"], self.model, exc)
                refused = {"refused": str(exc)}
            else:
                refused = None
            with self._lock:
                if self._pending and self._pending[0] is change:
                    self._pending.pop(0)
                if refused is not None and change["op"] == "register" and change["kwargs"].get("action_id"):
                    self._results[change["kwargs"]["action_id"]] = refused
            applied += 1
        return applied

    def _refresh(self) -> None:
        with self._lock:  # what this read can show: the changes applied, not those queued since the drain
            submitted = self._submitted - len(self._pending)
            old = self._view
        view = self.registry.view(self.model)
        champ = view["champion"]
        artifact = None
        if champ is not None and champ.version != self.serving:
            same = old is not None and old["champion"] == champ and len(old["history"]) == len(view["history"])
            artifact = old["artifact"] if same and old["artifact"] is not None else \
                self.registry.load_artifact(self.model, champ.version)
        with self._lock:
            self._view = {**view, "artifact": artifact, "submitted": submitted}

    def _loop(self) -> None:
        from models.tracking import answered, warn_once

        while not self._closed:
            try:
                self._drain()
                self._refresh()
            except Exception as exc:  # the registry is unreachable: keep the queue, try again later
                warn_once(f"registry changes of {self.model}", exc, str(self.registry.root))
                wait = self.retry_s
            else:
                answered(str(self.registry.root))
                wait = self.poll_s
            self._wake.wait(wait)
            self._wake.clear()
