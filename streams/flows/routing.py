"""Routing recommendations per conversation: keep, escalate to a supervisor, hand to a retention specialist, ...

``Router`` reads each scored segment (rolling sentiment, emotion, text) and keeps a short window of them; the
rules (``RoutingRule``, configured in ``[routing]`` / ``EDDYLINE_ROUTING_*``, never in code) are tried in order
and the first that matches gives the recommendation, else ``default_action``. A ``routing_recommendation`` event
goes out when the recommendation changes, with the rule and the reason in words; a rule with ``alert = true``
also opens an alert on the alerts topic (the notify flow delivers it), resolved when the recommendation moves
to a rule without one, or when the conversation ends (``end``): the agent's screen and the on-call incident must not
keep a call that is over. Ids derive from the conversation and segment, so a replay repeats them.

Like the sentiment alert, a recommendation has hysteresis (``open_after``, ``resolve_after``): a caller whose
rolling sentiment wobbles around a rule's bound would otherwise flip the recommendation on every segment (and
page, for an escalation), the agent told to offer support, then not, then again. A recommendation is taken at
once by default; giving one up for anything but an escalation takes ``resolve_after`` segments in a row.
"""

from __future__ import annotations

import string
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any, ClassVar

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from connectors.config import Section
from models.sentiment.emotion import EMOTIONS
from schemas import ALERT, ROUTING_RECOMMENDATION, derive_id
from streams.processor import Emit

ROUTING_TOPIC = "routing"
ALERTS_TOPIC = "alerts"
SOURCE = "audio-routing"
REASON_FIELDS = frozenset({"rolling", "trend", "emotion", "emotion_share", "emotion_count", "window", "segments",
                           "phrase", "words"})
SEVERITIES = ("INFO", "WARNING", "ERROR", "CRITICAL")
_SAMPLE_FACTS = {"rolling": 0.0, "trend": 0.0, "emotion": "anger", "emotion_share": 0.5, "emotion_count": 1,
                 "window": 4, "segments": 1, "phrase": "cancel my", "words": "furious"}  # the types routing fills in


@dataclass
class RoutingRule:
    """One routing rule: every condition given must hold over the routing window.

    Parameters
    ----------
    name
        What the rule is called in events and alerts.
    action
        The recommendation when it matches (``escalate_supervisor``, ``retention_specialist``, ...).
    reason
        Why, for people: a template with ``{rolling}``, ``{trend}``, ``{emotion}``, ``{emotion_share}``,
        ``{emotion_count}``, ``{window}``, ``{segments}``, ``{phrase}`` and ``{words}`` (the emotion words).
    rolling_below, rolling_above
        The rolling sentiment is below / above this.
    trend_below
        Rolling sentiment now minus the oldest in the window is below this (falling fast).
    emotions, emotion_share
        At least ``emotion_share`` of the window's segments carry one of ``emotions``.
    phrases
        One of these (lower case) was said in the window.
    min_segments
        The conversation has at least this many scored segments.
    alert, severity
        Open an alert of this severity while the recommendation stands.
    """

    name: str
    action: str
    reason: str
    rolling_below: float | None = None
    rolling_above: float | None = None
    trend_below: float | None = None
    emotions: list[str] = field(default_factory=list)
    emotion_share: float = 0.0
    phrases: list[str] = field(default_factory=list)
    min_segments: int = 1
    alert: bool = False
    severity: str = "WARNING"

    def __post_init__(self) -> None:
        unknown = sorted(set(self.emotions) - set(EMOTIONS))
        if unknown:
            raise ValueError(f"routing rule {self.name!r}: unknown emotions {unknown}; choose from {', '.join(EMOTIONS)}")
        used = {f for _, f, _, _ in string.Formatter().parse(self.reason) if f}
        if used - REASON_FIELDS:
            raise ValueError(f"routing rule {self.name!r}: reason uses {sorted(used - REASON_FIELDS)}; "
                             f"it may use {', '.join(sorted(REASON_FIELDS))}")
        try:  # a template that cannot be filled would fail in the flow at the rule's first match
            self.reason.format(**_SAMPLE_FACTS)
        except (ValueError, IndexError, KeyError, TypeError) as exc:
            raise ValueError(f"routing rule {self.name!r}: reason {self.reason!r} cannot be filled ({exc}); "
                             "name every field, e.g. {rolling:+.2f} or {words} (numbers: rolling, trend, "
                             "emotion_share, emotion_count, window, segments)") from None
        if self.severity not in SEVERITIES:
            raise ValueError(f"routing rule {self.name!r}: severity {self.severity!r}; choose from {', '.join(SEVERITIES)}")
        self.phrases = [p.lower() for p in self.phrases]
        # each of these is accepted by the types and makes the rule match never, or always, without a word
        if not 0 <= self.emotion_share <= 1:
            raise ValueError(f"routing rule {self.name!r}: emotion_share {self.emotion_share} is a share of the "
                             "window's segments, from 0 to 1 (0.5: half of them), not a percentage")
        if self.emotion_share and not self.emotions:
            raise ValueError(f"routing rule {self.name!r}: emotion_share without emotions; list the emotions it "
                             f"counts, e.g. emotions = [\"anger\"] (from {', '.join(EMOTIONS)})")
        if any(not p.strip() for p in self.phrases):
            raise ValueError(f"routing rule {self.name!r}: an empty phrase is in every transcript; remove it")
        for bound, lo in (("rolling_below", 1), ("rolling_above", 1), ("trend_below", 2)):
            value = getattr(self, bound)
            if value is not None and not -lo <= value <= lo:
                raise ValueError(f"routing rule {self.name!r}: {bound} {value} always or never holds: rolling "
                                 "sentiment runs from -1 to 1 (a trend, the difference of two, from -2 to 2)")
        if None not in (self.rolling_below, self.rolling_above) and self.rolling_above >= self.rolling_below:
            raise ValueError(f"routing rule {self.name!r}: no rolling sentiment is above {self.rolling_above} and "
                             f"below {self.rolling_below}; swap or drop one")


DEFAULT_RULES = [
    RoutingRule("angry", "escalate_supervisor",
                "anger in {emotion_count} of the last {window} segments ({words}), rolling sentiment {rolling:+.2f}",
                emotions=["anger"], emotion_share=0.5, rolling_below=-0.2, min_segments=2, alert=True),
    RoutingRule("wants-to-leave", "retention_specialist", 'the customer said "{phrase}"',
                phrases=["cancel my", "close my account", "switch provider", "switching provider", "leave you",
                         "terminate my contract", "end my contract"]),
    RoutingRule("falling-fast", "escalate_supervisor",
                "sentiment falling fast: {trend:+.2f} over {window} segments, rolling {rolling:+.2f}",
                trend_below=-0.8, rolling_below=-0.4, alert=True),
    RoutingRule("distressed", "offer_support",
                "{emotion} in {emotion_count} of the last {window} segments ({words}), rolling sentiment {rolling:+.2f}",
                emotions=["fear", "sadness"], emotion_share=0.5, rolling_below=0.0, min_segments=2),
]


@dataclass
class RoutingPolicy:
    """The rules and their window, as processors carry them (plain data).

    Parameters
    ----------
    window
        Segments the rules look back over.
    default_action
        The recommendation when no rule matches (and at a conversation's start).
    rules
        Tried in order; the first match wins.
    open_after
        Segments in a row the rules must give a new recommendation before it replaces the current one.
    resolve_after
        Segments in a row the rules must not give the current recommendation before it gives way to one without an
        alert (an escalation, a rule with ``alert``, needs only ``open_after``); an escalation's alert resolves then.
    """

    window: int = 4
    default_action: str = "keep"
    rules: list[RoutingRule] = field(default_factory=lambda: [RoutingRule(**asdict(r)) for r in DEFAULT_RULES])
    open_after: int = 1
    resolve_after: int = 2

    def __post_init__(self) -> None:
        if self.open_after < 1 or self.resolve_after < 1:
            raise ValueError(f"routing open_after and resolve_after must be at least 1, got {self.open_after} "
                             f"and {self.resolve_after}")

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RoutingPolicy:
        """The policy back from ``dataclasses.asdict``.

        Parameters
        ----------
        d
            What ``asdict`` gave.
        """
        return cls(window=d["window"], default_action=d["default_action"], rules=[RoutingRule(**r) for r in d["rules"]],
                   open_after=d.get("open_after", 1), resolve_after=d.get("resolve_after", 2))  # absent: older configs


class RoutingSettings(Section):
    """``[routing]`` / ``EDDYLINE_ROUTING_*``: the routing rules (``[[routing.rules]]`` tables in TOML)."""

    toml_table: ClassVar[str] = "routing"
    model_config = SettingsConfigDict(env_prefix="EDDYLINE_ROUTING_", extra="forbid")

    window: int = Field(4, ge=1, le=50, description="Segments the rules look back over.")
    default_action: str = Field("keep", description="The recommendation when no rule matches.")
    rules: list[RoutingRule] = Field(default_factory=lambda: list(RoutingPolicy().rules),
                                     description="Tried in order; the first match wins.")
    open_after: int = Field(1, ge=1, le=50, description="Segments in a row the rules must give a new "
                                                        "recommendation before it replaces the current one.")
    resolve_after: int = Field(2, ge=1, le=50, description="Segments in a row without the current recommendation "
                               "before it gives way to one that is no escalation (a rule with alert = true).")

    def policy(self) -> RoutingPolicy:
        return RoutingPolicy(window=self.window, default_action=self.default_action,
                             rules=[RoutingRule(**asdict(r)) for r in self.rules], open_after=self.open_after,
                             resolve_after=self.resolve_after)


class Router:
    """One conversation's routing: scored segments in, recommendation changes and escalation alerts out.

    Parameters
    ----------
    conversation_id
        The conversation.
    policy
        The rules.
    producer
        The ``producer`` of every output.
    """

    def __init__(self, conversation_id: str, policy: RoutingPolicy, producer: str) -> None:
        self.conversation_id = conversation_id
        self.policy = policy
        self.producer = producer
        self.recent: list[dict[str, Any]] = []  # the last window + 1 segments: rolling, emotion, words, phrase
        self.segments = 0
        self.action = policy.default_action
        self.alert_key: str | None = None
        self.away = 0  # segments in a row the rules have not given the current recommendation
        self.pending: str | None = None  # the recommendation they gave last time, if not the current one...
        self.pending_run = 0  # ...and for how many segments in a row

    def update(self, t: dict[str, Any], rolling: float, emotion: str, words: tuple[str, ...],
               emotion_model: str) -> list[Emit]:
        """Route after one scored segment.

        Parameters
        ----------
        t
            The segment's ``transcript`` record.
        rolling
            The conversation's rolling sentiment after it.
        emotion, words
            Its emotion label and the emotion words found.
        emotion_model
            The emotion backend's name, carried into the event.
        """
        pol = self.policy
        text = t["text"].lower()
        said = [p for r in pol.rules for p in r.phrases if p in text]
        self.recent = (self.recent + [{"rolling": rolling, "emotion": emotion, "words": list(words[:6]),
                                       "phrases": said}])[-(pol.window + 1):]
        self.segments += 1
        facts = self._facts()
        matched = next(((r, f) for r in pol.rules if (f := self._match(r, facts)) is not None), None)
        rule, used = matched if matched else (None, facts)
        action = rule.action if rule else pol.default_action
        if action == self.action:
            self.away, self.pending, self.pending_run = 0, None, 0
            return []
        self.away += 1
        self.pending_run = self.pending_run + 1 if action == self.pending else 1
        self.pending = action
        standing = self.alert_key is not None or self.action != pol.default_action  # a rule's recommendation
        escalates = rule is not None and rule.alert
        if self.pending_run < pol.open_after or (standing and not escalates and self.away < pol.resolve_after):
            return []
        reason = (rule.reason.format(**{k: used[k] for k in REASON_FIELDS}) if rule
                  else f"no rule matches: rolling sentiment {rolling:+.2f}, mostly {facts['emotion']}")
        return self._recommend(t, action, rule, reason, emotion_model)

    def end(self, t: dict[str, Any], why: str, emotion_model: str) -> list[Emit]:
        """Go back to the default recommendation, resolving an escalation's alert: the conversation is over.

        Called again, or for a conversation the default fitted to its end, it emits nothing.

        Parameters
        ----------
        t
            The conversation's last scored segment (``event_id``, ``event_time``, ``segment``).
        why
            How it ended, for the reason (``ended``: "the conversation ended").
        emotion_model
            The emotion backend's name, carried into the event.
        """
        if self.action == self.policy.default_action and self.alert_key is None:
            return []
        return self._recommend(t, self.policy.default_action, None, f"the conversation {why}", emotion_model, "end")

    def _recommend(self, t: dict[str, Any], action: str, rule: RoutingRule | None, reason: str, emotion_model: str,
                   *id_parts: str) -> list[Emit]:
        facts = self._facts()
        self.away, self.pending, self.pending_run = 0, None, 0
        previous, self.action = self.action, action
        record = {
            "event_id": derive_id(ROUTING_RECOMMENDATION, self.conversation_id, t["segment"], *id_parts),
            "event_time": t["event_time"],
            "producer": self.producer,
            "source_event_id": t["event_id"],
            "conversation_id": self.conversation_id,
            "segment": t["segment"],
            "action": action,
            "previous_action": previous,
            "rule": rule.name if rule else None,
            "reason": reason,
            "rolling_score": facts["rolling"],
            "trend": facts["trend"],
            "emotion": facts["emotion"],
            "emotion_share": facts["emotion_share"],
            "emotion_model": emotion_model,
        }
        out = [Emit(ROUTING_TOPIC, self.conversation_id, ROUTING_RECOMMENDATION, record)]
        return out + self._alerts(rule, record)

    def _facts(self) -> dict[str, Any]:
        window = self.recent[-self.policy.window :]
        counts = Counter(s["emotion"] for s in window)
        top = max(EMOTIONS, key=lambda e: (counts[e], e != "neutral"))  # ties: an emotion over neutral
        words = list(dict.fromkeys(w for s in window for w in s["words"]))
        return {"rolling": self.recent[-1]["rolling"], "window": len(window), "segments": self.segments,
                "trend": self.recent[-1]["rolling"] - self.recent[0]["rolling"] if len(self.recent) > 1 else None,
                "counts": counts, "emotion": top, "emotion_count": counts[top], "emotion_share": counts[top] / len(window),
                "words": ", ".join(words[:6]) or "no emotion words",
                "said": [p for s in window for p in s["phrases"]]}

    def _match(self, rule: RoutingRule, facts: dict[str, Any]) -> dict[str, Any] | None:
        """The facts as the rule reads them (its emotions, the phrase it heard) if it matches, else None."""
        rolling, trend = facts["rolling"], facts["trend"]
        if (self.segments < rule.min_segments
                or (rule.rolling_below is not None and not rolling < rule.rolling_below)
                or (rule.rolling_above is not None and not rolling > rule.rolling_above)
                or (rule.trend_below is not None and (trend is None or not trend < rule.trend_below))):
            return None
        used = dict(facts, phrase="", trend=trend if trend is not None else 0.0)  # a reason may name it
        if rule.emotions:
            counts = facts["counts"]
            count = sum(counts[e] for e in rule.emotions)
            if count == 0 or count / facts["window"] < rule.emotion_share:
                return None
            used.update(emotion=max(rule.emotions, key=lambda e: counts[e]), emotion_count=count,
                        emotion_share=count / facts["window"])
        if rule.phrases:
            heard = [p for p in facts["said"] if p in rule.phrases]
            if not heard:
                return None
            used["phrase"] = heard[-1]
        return used

    def _alerts(self, rule: RoutingRule | None, rec: dict[str, Any]) -> list[Emit]:
        if rule is not None and rule.alert:
            status = "UPDATED" if self.alert_key else "OPENED"
            self.alert_key = self.alert_key or derive_id("routing-alert", self.conversation_id, rec["segment"])
            return [self._alert(status, rule.severity, rec)]
        if self.alert_key is None:
            return []
        emit = self._alert("RESOLVED", "INFO", rec)
        self.alert_key = None
        return [emit]

    def _alert(self, status: str, severity: str, rec: dict[str, Any]) -> Emit:
        assert self.alert_key is not None
        record = {
            "event_id": derive_id(ALERT, self.alert_key, status, rec["segment"]),
            "event_time": rec["event_time"],
            "producer": self.producer,
            "alert_key": self.alert_key,
            "status": status,
            "severity": severity,
            "source": SOURCE,
            "entity": self.conversation_id,
            "summary": f"conversation {self.conversation_id}: {rec['action'].replace('_', ' ')} ({rec['reason']})",
            "value": rec["rolling_score"],
            "details": {"segment": str(rec["segment"]), "action": rec["action"], "rule": rec["rule"] or "",
                        "emotion": rec["emotion"], "transcript_id": rec["source_event_id"]},
        }
        return Emit(ALERTS_TOPIC, self.alert_key, ALERT, record)

    def snapshot(self) -> dict[str, Any]:
        return {"recent": [dict(s) for s in self.recent], "segments": self.segments, "action": self.action,
                "alert_key": self.alert_key, "away": self.away, "pending": self.pending,
                "pending_run": self.pending_run}

    def restore(self, state: dict[str, Any]) -> None:
        self.recent = [dict(s) for s in state["recent"]]
        self.segments = state["segments"]
        self.action = state["action"]
        self.alert_key = state["alert_key"]
        self.away = state.get("away", 0)  # snapshots from before hysteresis: no change under way
        self.pending = state.get("pending")
        self.pending_run = state.get("pending_run", 0)
