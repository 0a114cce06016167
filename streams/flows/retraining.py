"""Automatic retraining for the click model: challengers trained on recent events, tried in shadow.

The click flow's processor, with a champion and at most one challenger. A trigger starts a trial:
a ``drift`` event for this model (of a kind in ``retrain_on``; the drift flow makes them from the
model's own predictions and feedback) or a quality drop (the champion's log loss over the latest
``quality_window`` outcomes worse than its best window by ``quality_drop``, relatively). Then:

1. collect: wait for ``min_fresh`` outcomes after the trigger, so the window holds the new regime;
2. train: a fresh model learns the latest ``train_window`` outcomes, in order; it is registered
   (status candidate, parent = the champion, reason = the trigger);
3. shadow: for the next ``shadow_events`` outcomes both models predict each impression before it is
   learned (only the champion's prediction is emitted), and both learn it;
4. decide: the challenger is promoted only if its metric on those same events beats the champion's
   by ``margin`` (and by more than nothing: a tie is no evidence, even with ``margin = 0``); otherwise it is
   rejected. AUC is undefined when the trial's outcomes are all one class (no click at all is common at low
   click-through rates): the challenger is then rejected with that reason, never promoted on no evidence.
   Either way the registry keeps the numbers and the reason.

A source quarantined by the model-security flow (``security.quarantine``) is usually caught after some of its
outcomes were learned, and its poisoning is often what set off the trigger: its outcomes then leave the
training window, and a challenger in its trial that learned some of those still in the window is rejected at
its decision.

A promoted challenger serves at once: predictions carry its version. Every registry change carries an
id derived from the trigger, so a replay after a crash does not register or promote twice. The
registry is also watched: when ``eddyline models rollback`` (or anyone, e.g. in MLflow's UI) moves the
champion, the processor switches to it at a following batch and keeps the state the outgoing model had
learned.

The registry is MLflow's (``[mlflow]``: the embedded store by default, or a team's server): the flow
follows ``models:/clicks@champion``. Registry calls run off the hot path (``models.registry.outbox``):
changes wait in the checkpointed queue while the server is down and are applied when it is back,
and the champion alias is read every ``[mlflow] poll_s``. ``[retraining] registry_dir`` selects a local
registry folder instead (applied inline).
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from pydantic import Field
from pydantic_settings import SettingsConfigDict

from connectors.config import Section
from models import tracking
from models.metrics import auc, log_loss
from models.online import ClickModel
from models.registry import ModelRegistry, RegistryError, RegistryOutbox
from schemas import CLICK, DRIFT, FEEDBACK, PREDICTION, QUARANTINE, derive_id
from streams.flows.clicks import MODEL_NAME, QUARANTINE_TOPIC, ClickProcessor
from streams.processor import Emit, Event, FlowSpec


class RetrainingSettings(Section):
    """``[retraining]`` / ``EDDYLINE_RETRAINING_*``: the registry and when a challenger replaces a champion."""

    toml_table: ClassVar[str] = "retraining"
    model_config = SettingsConfigDict(env_prefix="EDDYLINE_RETRAINING_", extra="forbid")

    registry_dir: Path | None = Field(None, description="A local registry folder instead of MLflow's registry "
                                      "([mlflow]); `eddyline models migrate-registry` moves one to MLflow.")
    retrain_on: list[str] = Field(["CONCEPT"], description="Drift kinds that start a retraining (CONCEPT, DATA).")
    train_window: int = Field(3000, gt=0, description="Latest outcomes a challenger is trained on.")
    min_fresh: int = Field(1500, ge=0, description="Outcomes after the trigger before training starts.")
    shadow_events: int = Field(2000, gt=0, description="Outcomes both models predict before the decision.")
    metric: str = Field("log_loss", pattern="^(log_loss|auc)$", description="What decides: log_loss or auc.")
    margin: float = Field(0.01, ge=0, description="How much better the challenger must be (metric units).")
    quality_window: int = Field(2000, gt=0, description="Outcomes per quality check of the champion.")
    quality_drop: float = Field(0.25, gt=0, description="Relative log-loss rise over the best window that triggers.")
    cooldown: int = Field(3000, ge=0, description="Outcomes after a decision before another trigger counts.")

    def policy(self) -> dict[str, Any]:
        return self.model_dump(exclude={"registry_dir"})


class RetrainingClickProcessor(ClickProcessor):
    """The click model with a champion, at most one challenger in shadow, and the registry behind them.

    Parameters
    ----------
    model_name, version, click_wait_ms
        As for ``ClickProcessor``.
    registry_dir
        A local model registry folder; None: MLflow's registry at ``tracking_uri``.
    policy
        ``RetrainingSettings`` fields that differ from the defaults (triggers, windows, margin).
    tracking_uri
        The MLflow registry (when ``registry_dir`` is None); None: ``models.tracking.tracking_uri()``.
    poll_s, retry_s
        How often the MLflow registry's champion alias is read, and a refused change retried.
    """

    def __init__(self, model_name: str = MODEL_NAME, version: str = "1", click_wait_ms: int = 30 * 60_000,
                 registry_dir: str | None = None, policy: dict[str, Any] | None = None,
                 tracking_uri: str | None = None, poll_s: float = 5.0, retry_s: float = 10.0) -> None:
        super().__init__(model_name, version, click_wait_ms)
        self.registry_dir = None if registry_dir is None else str(registry_dir)
        self.tracking_uri, self.poll_s, self.retry_s = tracking_uri, poll_s, retry_s
        if registry_dir is None:
            from models.registry.mlflow_store import MlflowRegistry

            self.outbox = RegistryOutbox(MlflowRegistry(tracking_uri), model_name, background=True, poll_s=poll_s,
                                         retry_s=retry_s)
        else:
            self.outbox = RegistryOutbox(ModelRegistry(registry_dir), model_name)
        self.policy = RetrainingSettings(**(policy or {}))
        self.recent: deque[dict[str, Any]] = deque(maxlen=self.policy.train_window)
        self.phase = "serving"  # serving, collecting, shadow
        self.trigger: dict[str, str] | None = None
        self.fresh = 0
        self.challenger: ClickModel | None = None
        self.challenger_version: str | None = None
        self.shadow: dict[str, list[float]] = {"labels": [], "champion": [], "challenger": []}
        self.outcomes = 0
        self.quiet_until = 0
        self.block: list[float] = []
        self.best_block: float | None = None
        self.ignored = {"other_model": 0, "kind": 0, "busy": 0}
        self._view: dict[str, Any] | None = None
        self.seen: int | None = None  # registry history entries already taken into account
        self.initial_sent = False
        self.tainted: str | None = None  # a quarantined source whose outcomes the challenger learned

    @property
    def registry(self) -> Any:
        return self.outbox.registry

    def params(self) -> dict[str, Any]:
        return {**super().params(), "registry_dir": self.registry_dir, "tracking_uri": self.tracking_uri,
                "poll_s": self.poll_s, "retry_s": self.retry_s, "policy": self.policy.policy()}

    # registry

    def _sync(self) -> None:
        """Serve the registry's champion when someone else chose it: at a fresh start (registering this
        model if it is new) and after ``eddyline models rollback`` or an alias moved by hand. Registry
        entries this processor made itself (they carry action ids) are left alone: a processor restored
        from a checkpoint replays its input and redoes them, arriving at the same champion and state.
        Only a read of the registry taken after all of this processor's own changes counts."""
        self.outbox.serving = self.version
        self.outbox.step()
        self._registration()
        view = self.outbox.settled()
        if view is None or view is self._view:
            return
        champ, history = view["champion"], view["history"]
        if champ is None:
            if not self.initial_sent:
                self.initial_sent = True
                self.outbox.submit("register", artifact=self.model.snapshot(), reason="initial model", champion=True,
                                   action_id=derive_id(self.model_name, "initial"))
                self.outbox.step()
                self._sync()
            return
        recorded = next((h["version"] for h in reversed(history) if h["action"] in ("promoted", "rolled_back")), None)
        external = (self.seen is None or champ.version != recorded  # an alias moved by hand
                    or any(h.get("action_id") is None for h in history[self.seen :]))
        if external and champ.version != self.version:
            if view["artifact"] is None:
                return  # read again at the next poll
            if self.seen is not None:  # a change while serving: keep what the outgoing model learned
                self.outbox.submit("save_state", version=self.version, state=self.model.snapshot())
            model = ClickModel(**self.model.params())
            model.restore(view["artifact"])
            self.model, self.version = model, champ.version
            self._abandon()
        self._view, self.seen = view, len(history)

    def _registration(self) -> None:
        """A challenger waiting for its version number: start its shadow trial once the registry gave one."""
        if self.phase != "registering" or self.trigger is None:
            return
        try:
            registered = self.outbox.result(derive_id(self.model_name, "register", self.trigger["id"]))
        except RegistryError:  # refused (the outbox logged why): a trial without a version could never be decided
            self._abandon()
            self.quiet_until = self.outcomes + self.policy.cooldown
            self.seen = None  # the registry does not know what we serve (restored from a backup): take its champion
            return
        if registered is None:
            return
        if registered.status == "rolled_back":  # a replay of a trial whose winner was rolled back since
            self._abandon()
            self.quiet_until = self.outcomes + self.policy.cooldown
            return
        self.challenger_version, self.phase = registered.version, "shadow"
        self.shadow = {"labels": [], "champion": [], "challenger": []}

    def _abandon(self) -> None:
        self.phase, self.trigger, self.challenger, self.challenger_version = "serving", None, None, None
        self.tainted = None
        self.shadow = {"labels": [], "champion": [], "challenger": []}
        self.block, self.best_block = [], None

    # the stream

    def process(self, events: Sequence[Event]) -> list[Emit]:
        self._sync()
        out: list[Emit] = []
        for ev in events:
            if ev.topic == "drift":
                self._drift(ev.record)
            else:
                out.extend(super().process([ev]))
        return out

    def _drift(self, rec: dict[str, Any]) -> None:
        if rec["model_name"] != self.model_name:
            self.ignored["other_model"] += 1
        elif rec["kind"] not in self.policy.retrain_on:
            self.ignored["kind"] += 1
        else:
            self._start(f"{rec['kind'].lower()} drift {rec['event_id']} ({rec['detector']}, statistic "
                        f"{rec['statistic']:.4g})", rec["event_id"])

    def _standing(self, rec: dict[str, Any]) -> None:
        super()._standing(rec)
        if rec["action"] != "QUARANTINE":
            return
        kept = [ex for ex in self.recent if not self._kept_out(ex)]
        if len(kept) < len(self.recent):
            self.recent = deque(kept, maxlen=self.policy.train_window)
            if self.challenger is not None:
                self.tainted = rec["source"]

    def _start(self, reason: str, source_id: str) -> None:
        if self.phase != "serving" or self.outcomes < self.quiet_until:
            self.ignored["busy"] += 1
            return
        self.phase, self.fresh = "collecting", 0
        self.trigger = {"reason": reason, "id": source_id}

    def _predicted(self, entry: dict[str, Any]) -> None:
        if self.phase == "shadow" and self.challenger is not None:
            genres = [tuple(entry["genres"])] if entry["genres"] else None
            entry["shadow"] = [self.challenger_version, float(self.challenger.predict(entry["user"], [entry["item"]], genres)[0])]

    def _outcome(self, entry: dict[str, Any], label: float) -> list[Emit]:
        self.outcomes += 1
        example = {"user": entry["user"], "producer": entry.get("producer", ""), "item": entry["item"],
                   "genres": entry["genres"], "rating": entry["rating"], "label": label}
        self.recent.append(example)
        self._watch_quality(float(entry["p"]), label)
        if self.phase == "collecting":
            self.fresh += 1
            if self.fresh >= self.policy.min_fresh:
                self._train()
        elif self.phase == "registering" and self.challenger is not None:
            self._teach(self.challenger, example)
        elif self.phase == "shadow" and self.challenger is not None:
            shadow = entry.get("shadow")
            if shadow is not None and shadow[0] == self.challenger_version:
                self.shadow["labels"].append(label)
                self.shadow["champion"].append(float(entry["p"]))
                self.shadow["challenger"].append(float(shadow[1]))
            self._teach(self.challenger, example)
            if len(self.shadow["labels"]) >= self.policy.shadow_events:
                self._decide()
        return []

    @staticmethod
    def _teach(model: ClickModel, ex: dict[str, Any]) -> None:
        model.learn(ex["user"], ex["item"], ex["label"], tuple(ex["genres"]), ex["rating"])

    def _watch_quality(self, p: float, label: float) -> None:
        p = min(max(p, 1e-12), 1 - 1e-12)
        self.block.append(-(label * math.log(p) + (1 - label) * math.log(1 - p)))
        if len(self.block) < self.policy.quality_window:
            return
        loss = float(np.mean(self.block))
        self.block = []
        if self.best_block is not None and loss > self.best_block * (1 + self.policy.quality_drop):
            self._start(f"quality drop: champion log loss {loss:.4f} over the last {self.policy.quality_window} "
                        f"outcomes, best window {self.best_block:.4f}",
                        derive_id(self.model_name, self.version, "quality", self.outcomes))
        self.best_block = loss if self.best_block is None else min(self.best_block, loss)

    def _train(self) -> None:
        assert self.trigger is not None
        challenger = ClickModel(**self.model.params())
        window = list(self.recent)
        for ex in window:
            self._teach(challenger, ex)
        self.outbox.submit(
            "register", artifact=challenger.snapshot(), reason=self.trigger["reason"], parent=self.version,
            info={"trigger_id": self.trigger["id"], "trained_on": len(window), "fresh_outcomes": self.fresh,
                  "shadow_events": self.policy.shadow_events, "margin": self.policy.margin, "metric": self.policy.metric},
            action_id=derive_id(self.model_name, "register", self.trigger["id"]))
        self.challenger, self.challenger_version, self.phase = challenger, None, "registering"
        self.outbox.step()
        self._registration()

    def _score(self, probs: list[float]) -> float | None:
        """The trial's metric of one model's predictions; None where it is undefined (AUC of one class)."""
        y = np.asarray(self.shadow["labels"])
        if self.policy.metric == "auc":
            return auc(y, np.asarray(probs))
        return log_loss(y, np.asarray(probs))

    def _decide(self) -> None:
        assert self.trigger is not None and self.challenger is not None and self.challenger_version is not None
        champ, chall = self._score(self.shadow["champion"]), self._score(self.shadow["challenger"])
        n, metric = len(self.shadow["labels"]), self.policy.metric
        metrics = {"shadow_events": float(n)}
        if self.tainted is not None:
            better = None
            verdict = (f"it learned outcomes of {self.tainted}, quarantined since; "
                       f"trigger: {self.trigger['reason']}")
        elif champ is None or chall is None:
            clicks = int(sum(label >= 0.5 for label in self.shadow["labels"]))
            better = None
            verdict = (f"{metric} is undefined on the {n} events of the trial ({clicks} positive): no evidence "
                       f"either way; trigger: {self.trigger['reason']}")
        else:
            better = (champ - chall) if metric == "log_loss" else (chall - champ)
            metrics |= {f"shadow_{metric}": chall, f"champion_{metric}": champ}
            verdict = (f"{metric} {chall:.4f} vs champion {self.version}'s {champ:.4f} on the same {n} events "
                       f"(needs {self.policy.margin} better, and a tie is no evidence); "
                       f"trigger: {self.trigger['reason']}")
        tid = self.trigger["id"]
        if better is not None and better > 0 and better >= self.policy.margin:
            self.outbox.submit("promote", version=self.challenger_version, reason=f"promoted: {verdict}",
                               metrics=metrics, outgoing_state=self.model.snapshot(),
                               action_id=derive_id(self.model_name, "decide", tid))
            self.model, self.version = self.challenger, self.challenger_version
        else:
            self.outbox.submit("reject", version=self.challenger_version, reason=f"rejected: {verdict}",
                               metrics=metrics, action_id=derive_id(self.model_name, "decide", tid))
        self.outbox.serving = self.version
        self.outbox.step()
        self._abandon()
        self.quiet_until = self.outcomes + self.policy.cooldown

    # state

    def snapshot(self) -> dict[str, Any]:
        return {
            **super().snapshot(), "recent": list(self.recent), "phase": self.phase, "trigger": self.trigger,
            "fresh": self.fresh, "challenger": None if self.challenger is None else self.challenger.snapshot(),
            "challenger_version": self.challenger_version, "shadow": self.shadow, "outcomes": self.outcomes,
            "quiet_until": self.quiet_until, "block": self.block, "best_block": self.best_block,
            "ignored": self.ignored, "seen": self.seen, "initial_sent": self.initial_sent, "tainted": self.tainted,
            "registry_changes": self.outbox.state(),
        }

    def restore(self, state: dict[str, Any]) -> None:
        super().restore(state)
        self.recent.extend(state["recent"])
        self.phase, self.trigger, self.fresh = state["phase"], state["trigger"], int(state["fresh"])
        if state["challenger"] is not None:
            self.challenger = ClickModel(**self.model.params())
            self.challenger.restore(state["challenger"])
        self.challenger_version, self.shadow = state["challenger_version"], state["shadow"]
        self.outcomes, self.quiet_until = int(state["outcomes"]), int(state["quiet_until"])
        self.block, self.best_block, self.ignored = list(state["block"]), state["best_block"], dict(state["ignored"])
        self.seen, self.initial_sent = state["seen"], bool(state.get("initial_sent", False))
        self.tainted = state.get("tainted")
        if "registry_changes" in state:
            self.outbox.load(state["registry_changes"])


def flow(model_name: str = MODEL_NAME, click_wait_ms: int = 30 * 60_000, registry_dir: Path | str | None = None,
         policy: dict[str, Any] | None = None) -> FlowSpec:
    """The click flow with retraining: clicks and drift events in; predictions and feedback out. With
    ``[recommend] port`` set, the process that runs it also serves top-k recommendations from the live model
    (from the engine's start on: building the spec starts nothing, so the live page can read its topics).

    Parameters
    ----------
    model_name, click_wait_ms
        As for ``ClickProcessor``.
    registry_dir
        A local registry folder (default: ``[retraining] registry_dir``; unset: MLflow's registry, ``[mlflow]``).
    policy
        ``RetrainingSettings`` fields that win over the settings.
    """
    from streams.apps.recommend import RecommendSettings, ServingSink
    from streams.tracking import configure

    settings = RetrainingSettings()
    mlflow = configure()
    chosen = registry_dir if registry_dir is not None else settings.registry_dir
    folder = None if chosen is None else str(chosen)
    uri = None if folder is not None else tracking.tracking_uri()
    merged = settings.policy() | (policy or {})

    def make(_key: str) -> RetrainingClickProcessor:
        return RetrainingClickProcessor(model_name, click_wait_ms=click_wait_ms, registry_dir=folder, policy=merged,
                                        tracking_uri=uri, poll_s=mlflow.poll_s, retry_s=mlflow.retry_s)

    return FlowSpec(
        name="clicks",
        inputs={"clicks": CLICK, "drift": DRIFT, QUARANTINE_TOPIC: QUARANTINE},
        make_processor=make,
        outputs={"predictions": PREDICTION, "feedback": FEEDBACK},
        key=lambda _event: model_name,
        sinks=[ServingSink] if RecommendSettings().port is not None else [],
    )
