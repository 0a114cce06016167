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
   by ``margin``; otherwise it is rejected. Either way the registry keeps the numbers and the reason.

A promoted challenger serves at once: predictions carry its version. Every registry change carries an
id derived from the trigger, so a replay after a crash does not register or promote twice. The
registry is also watched: when ``eddyline models rollback`` changes the champion, the processor
switches to it at its next batch and keeps the state the outgoing model had learned.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any, ClassVar

import numpy as np
import typer
from pydantic import Field
from pydantic_settings import SettingsConfigDict

from connectors.config import Section
from models.metrics import auc, log_loss
from models.online import ClickModel
from models.registry import ModelRegistry, RegistryError
from schemas import CLICK, DRIFT, FEEDBACK, PREDICTION, QUARANTINE, derive_id
from streams.flows.clicks import MODEL_NAME, QUARANTINE_TOPIC, ClickProcessor
from streams.processor import Emit, Event, FlowSpec


class RetrainingSettings(Section):
    """``[retraining]`` / ``EDDYLINE_RETRAINING_*``: the registry and when a challenger replaces a champion."""

    toml_table: ClassVar[str] = "retraining"
    model_config = SettingsConfigDict(env_prefix="EDDYLINE_RETRAINING_", extra="forbid")

    registry_dir: Path = Field(Path(".eddyline/registry"), description="The local model registry.")
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
        The model registry's folder.
    policy
        ``RetrainingSettings`` fields that differ from the defaults (triggers, windows, margin).
    """

    def __init__(self, model_name: str = MODEL_NAME, version: str = "1", click_wait_ms: int = 30 * 60_000,
                 registry_dir: str = ".eddyline/registry", policy: dict[str, Any] | None = None) -> None:
        super().__init__(model_name, version, click_wait_ms)
        self.registry_dir = str(registry_dir)
        self.registry = ModelRegistry(registry_dir)
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
        self._stamp: tuple[int, int, int] | None = None
        self.seen: int | None = None  # registry history entries already taken into account

    def params(self) -> dict[str, Any]:
        return {**super().params(), "registry_dir": self.registry_dir, "policy": self.policy.policy()}

    # registry

    def _sync(self) -> None:
        """Serve the registry's champion when someone else chose it: at a fresh start (registering this
        model if it is new) and after ``eddyline models rollback``. Registry entries this processor made
        itself (they carry action ids) are left alone: a processor restored from a checkpoint replays
        its input and redoes them, arriving at the same champion with the same state."""
        stamp = self.registry.stamp(self.model_name)
        if stamp == self._stamp:
            return
        champ = self.registry.champion(self.model_name)
        if champ is None:
            champ = self.registry.register(self.model_name, self.model.snapshot(), reason="initial model",
                                           champion=True, action_id=derive_id(self.model_name, "initial"))
        history = self.registry.history(self.model_name)
        external = self.seen is None or any(h.get("action_id") is None for h in history[self.seen :])
        if external and champ.version != self.version:
            if self.seen is not None:  # a change while serving: keep what the outgoing model learned
                try:
                    self.registry.save_state(self.model_name, self.version, self.model.snapshot())
                except RegistryError:
                    pass  # the outgoing version is not in this registry (a checkpoint from another one)
            model = ClickModel(**self.model.params())
            model.restore(self.registry.load_artifact(self.model_name, champ.version))
            self.model, self.version = model, champ.version
            self._abandon()
        self._seen_registry()

    def _seen_registry(self) -> None:
        self._stamp = self.registry.stamp(self.model_name)
        self.seen = len(self.registry.history(self.model_name))

    def _abandon(self) -> None:
        self.phase, self.trigger, self.challenger, self.challenger_version = "serving", None, None, None
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
        example = {"user": entry["user"], "item": entry["item"], "genres": entry["genres"], "rating": entry["rating"],
                   "label": label}
        self.recent.append(example)
        self._watch_quality(float(entry["p"]), label)
        if self.phase == "collecting":
            self.fresh += 1
            if self.fresh >= self.policy.min_fresh:
                self._train()
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
        registered = self.registry.register(
            self.model_name, challenger.snapshot(), reason=self.trigger["reason"], parent=self.version,
            info={"trigger_id": self.trigger["id"], "trained_on": len(window), "fresh_outcomes": self.fresh,
                  "shadow_events": self.policy.shadow_events, "margin": self.policy.margin, "metric": self.policy.metric},
            action_id=derive_id(self.model_name, "register", self.trigger["id"]))
        self._seen_registry()
        if registered.status == "rolled_back":  # a replay of a trial whose winner was rolled back since
            self._abandon()
            self.quiet_until = self.outcomes + self.policy.cooldown
            return
        self.challenger, self.challenger_version = challenger, registered.version
        self.phase = "shadow"
        self.shadow = {"labels": [], "champion": [], "challenger": []}

    def _score(self, probs: list[float]) -> float:
        y = np.asarray(self.shadow["labels"])
        if self.policy.metric == "auc":
            value = auc(y, np.asarray(probs))
            return 0.5 if value is None else value
        return log_loss(y, np.asarray(probs))

    def _decide(self) -> None:
        assert self.trigger is not None and self.challenger is not None and self.challenger_version is not None
        champ, chall = self._score(self.shadow["champion"]), self._score(self.shadow["challenger"])
        better = (champ - chall) if self.policy.metric == "log_loss" else (chall - champ)
        n, metric = len(self.shadow["labels"]), self.policy.metric
        metrics = {f"shadow_{metric}": chall, f"champion_{metric}": champ, "shadow_events": float(n)}
        verdict = (f"{metric} {chall:.4f} vs champion {self.version}'s {champ:.4f} on the same {n} events "
                   f"(needs {self.policy.margin} better); trigger: {self.trigger['reason']}")
        tid = self.trigger["id"]
        if better >= self.policy.margin:
            self.registry.promote(self.model_name, self.challenger_version, reason=f"promoted: {verdict}",
                                  metrics=metrics, outgoing_state=self.model.snapshot(),
                                  action_id=derive_id(self.model_name, "decide", tid))
            self.model, self.version = self.challenger, self.challenger_version
        else:
            self.registry.reject(self.model_name, self.challenger_version, reason=f"rejected: {verdict}",
                                 metrics=metrics, action_id=derive_id(self.model_name, "decide", tid))
        self._seen_registry()
        self._abandon()
        self.quiet_until = self.outcomes + self.policy.cooldown

    # state

    def snapshot(self) -> dict[str, Any]:
        return {
            **super().snapshot(), "recent": list(self.recent), "phase": self.phase, "trigger": self.trigger,
            "fresh": self.fresh, "challenger": None if self.challenger is None else self.challenger.snapshot(),
            "challenger_version": self.challenger_version, "shadow": self.shadow, "outcomes": self.outcomes,
            "quiet_until": self.quiet_until, "block": self.block, "best_block": self.best_block,
            "ignored": self.ignored, "seen": self.seen,
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
        self.seen = state["seen"]


def flow(model_name: str = MODEL_NAME, click_wait_ms: int = 30 * 60_000, registry_dir: Path | str | None = None,
         policy: dict[str, Any] | None = None) -> FlowSpec:
    """The click flow with retraining: clicks and drift events in; predictions and feedback out. With
    ``[recommend] port`` set, this process also serves top-k recommendations from the live model.

    Parameters
    ----------
    model_name, click_wait_ms
        As for ``ClickProcessor``.
    registry_dir
        The registry's folder (default: ``[retraining] registry_dir``).
    policy
        ``RetrainingSettings`` fields that win over the settings.
    """
    from streams.apps.recommend import serve_from_settings

    serve_from_settings()
    settings = RetrainingSettings()
    folder = str(registry_dir if registry_dir is not None else settings.registry_dir)
    merged = settings.policy() | (policy or {})
    return FlowSpec(
        name="clicks",
        inputs={"clicks": CLICK, "drift": DRIFT, QUARANTINE_TOPIC: QUARANTINE},
        make_processor=lambda _key: RetrainingClickProcessor(model_name, click_wait_ms=click_wait_ms,
                                                             registry_dir=folder, policy=merged),
        outputs={"predictions": PREDICTION, "feedback": FEEDBACK},
        key=lambda _event: model_name,
    )


def _registry(registry_dir: Path | None) -> ModelRegistry:
    return ModelRegistry(registry_dir if registry_dir is not None else RetrainingSettings().registry_dir)


def rollback_command(
    model: Annotated[str, typer.Argument(help="The model to roll back.")] = MODEL_NAME,
    reason: Annotated[str, typer.Option(help="Why; kept in the registry's lineage.")] = "manual rollback",
    registry_dir: Annotated[Path | None, typer.Option(help="Registry folder (default: [retraining] registry_dir).")] = None,
) -> None:
    """Restore the previous champion of MODEL; a running click flow switches to it at its next batch."""
    reg = _registry(registry_dir)
    current = reg.champion(model)
    try:
        restored = reg.rollback(model, reason=reason)
    except RegistryError as exc:
        typer.secho(f"error: {exc}", fg="red", err=True)
        raise typer.Exit(2) from None
    typer.echo(f"{model}: champion is version {restored.version} again (was {current.version if current else '-'})")


def list_command(
    model: Annotated[str, typer.Argument(help="The model.")] = MODEL_NAME,
    registry_dir: Annotated[Path | None, typer.Option(help="Registry folder (default: [retraining] registry_dir).")] = None,
) -> None:
    """Every registered version of MODEL: status, parent, metrics and why it exists."""
    reg = _registry(registry_dir)
    versions = reg.versions(model)
    if not versions:
        typer.secho(f"error: no versions of {model!r} in {reg.root}", fg="red", err=True)
        raise typer.Exit(2)
    for v in versions:
        metrics = " ".join(f"{k}={x:.4g}" for k, x in sorted(v.metrics.items()))
        typer.echo(f"{v.version:>4} {v.status:<11} parent={v.parent or '-':<4} {metrics}  {v.reason}")
