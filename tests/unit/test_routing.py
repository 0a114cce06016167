"""Routing recommendations: rules from configuration, the reason, escalation alerts, replay and snapshots."""

import pickle

import pytest
from pydantic import ValidationError

from connectors.config import explain
from schemas import ROUTING_RECOMMENDATION, AvroSerde, derive_id
from streams.flows.audio import AudioFlowConfig, sentiment_flow
from streams.flows.routing import Router, RoutingPolicy, RoutingRule, RoutingSettings
from streams.processor import Event, run_local


def segment(i: int, text: str = "") -> dict:
    return {"event_id": f"t-{i}", "event_time": 1000 * i, "segment": i, "text": text}


def route(router: Router, steps: list[tuple[float, str, str]]) -> list:
    out = []
    for i, (rolling, emotion, text) in enumerate(steps):
        out += router.update(segment(i, text), rolling, emotion, (emotion,) if emotion != "neutral" else (), "nrc")
    return out


def test_anger_escalates_with_the_reason_and_an_alert_then_resolves():
    emits = route(Router("c1", RoutingPolicy(), "test"),
                  [(0.1, "neutral", ""), (-0.4, "anger", ""), (-0.5, "anger", ""), (0.3, "joy", ""),
                   (0.5, "joy", ""), (0.6, "joy", "")])
    routing = [e.record for e in emits if e.topic == "routing"]
    alerts = [e.record for e in emits if e.topic == "alerts"]
    assert [(r["segment"], r["previous_action"], r["action"], r["rule"]) for r in routing] == [
        (1, "keep", "escalate_supervisor", "angry"), (4, "escalate_supervisor", "keep", None)]  # resolve_after = 2
    assert routing[0]["reason"] == "anger in 1 of the last 2 segments (anger), rolling sentiment -0.40"
    assert routing[0]["emotion"] == "anger" and routing[0]["trend"] == pytest.approx(-0.5)
    assert [(a["status"], a["severity"], a["source"]) for a in alerts] == [
        ("OPENED", "WARNING", "audio-routing"), ("RESOLVED", "INFO", "audio-routing")]
    assert alerts[0]["alert_key"] == alerts[1]["alert_key"] and "supervisor" in alerts[0]["summary"]
    serde = AvroSerde()
    for e in emits:
        assert serde.decode(serde.encode(e.event_type, e.record), e.event_type).items() >= e.record.items()


def wobbling(router: Router, n: int = 12) -> list:
    """An angry caller whose rolling sentiment wobbles by 0.04 around the angry rule's bound (-0.2)."""
    return route(router, [(-0.22 if i % 2 else -0.18, "anger", "I am so angry") for i in range(n)])


def test_a_caller_wobbling_around_a_bound_keeps_one_escalation_and_one_alert():
    emits = wobbling(Router("c6", RoutingPolicy(), "test"))
    assert [(e.record["segment"], e.record["action"]) for e in emits if e.topic == "routing"] == [
        (1, "escalate_supervisor")]
    assert [e.record["status"] for e in emits if e.topic == "alerts"] == ["OPENED"]
    flapping = wobbling(Router("c6", RoutingPolicy(resolve_after=1), "test"))  # no hysteresis: as before
    assert [e.record["status"] for e in flapping if e.topic == "alerts"].count("OPENED") == 6


def test_a_sad_caller_hovering_at_a_bound_is_offered_support_once_not_every_other_segment():
    """The distressed rule (no alert) needs rolling sentiment below 0: near 0 it matched every other segment, and the
    agent was told to offer support, then not, then again, eleven times in twelve segments."""
    steps = [(-0.02 if i % 2 else 0.01, "sadness", "I am so sad") for i in range(12)]
    emits = route(Router("c9", RoutingPolicy(), "test"), steps + [(0.4, "joy", ""), (0.5, "joy", "")])
    assert [(e.record["segment"], e.record["action"]) for e in emits] == [(1, "offer_support"), (13, "keep")]


def test_open_after_needs_a_new_recommendation_that_many_segments_in_a_row():
    policy = RoutingPolicy(open_after=2)
    emits = wobbling(Router("c7", policy, "test"))  # the angry rule never matches two segments in a row
    assert emits == []
    emits = route(Router("c7", policy, "test"), [(0.0, "anger", ""), (-0.4, "anger", ""), (-0.5, "anger", "")])
    assert [(e.record["segment"], e.record["action"]) for e in emits if e.topic == "routing"] == [
        (2, "escalate_supervisor")]
    with pytest.raises(ValueError, match="at least 1"):
        RoutingPolicy(resolve_after=0)


def test_a_phrase_hands_to_retention_without_an_alert():
    emits = route(Router("c2", RoutingPolicy(), "test"),
                  [(0.2, "neutral", "hello"), (0.0, "neutral", "I want to cancel my contract today")])
    (rec,) = [e.record for e in emits]
    assert rec["action"] == "retention_specialist" and rec["reason"] == 'the customer said "cancel my"'


def test_falling_fast_is_an_escalation_without_anger():
    emits = route(Router("c3", RoutingPolicy(), "test"),
                  [(0.6, "neutral", ""), (0.2, "neutral", ""), (-0.2, "sadness", ""), (-0.5, "neutral", "")])
    rec = next(e.record for e in emits if e.topic == "routing")
    assert rec["rule"] == "falling-fast" and rec["reason"].startswith("sentiment falling fast: -1.10 over 4 segments")


def test_rules_come_from_toml_and_are_checked(tmp_path, monkeypatch):
    cfg = tmp_path / "eddyline.toml"
    cfg.write_text('[routing]\nwindow = 2\ndefault_action = "stay"\n[[routing.rules]]\nname = "sad"\n'
                   'action = "callback"\nreason = "{emotion} x{emotion_count}"\nemotions = ["sadness"]\n'
                   'emotion_share = 1.0\n')
    monkeypatch.setenv("EDDYLINE_CONFIG", str(cfg))
    policy = RoutingSettings().policy()
    assert policy.window == 2 and [r.name for r in policy.rules] == ["sad"]
    assert (policy.open_after, policy.resolve_after) == (1, 2)
    emits = route(Router("c4", policy, "test"), [(0.0, "sadness", ""), (0.0, "sadness", ""), (0.0, "joy", ""),
                                                 (0.0, "sadness", "")])  # given up after resolve_after = 2
    assert [(e.record["action"], e.record["reason"]) for e in emits] == [
        ("callback", "sadness x1"), ("stay", "no rule matches: rolling sentiment +0.00, mostly joy")]  # a tie: EMOTIONS order
    cfg.write_text('[routing]\nopen_after = 3\nresolve_after = 4\n')
    assert (RoutingSettings().policy().open_after, RoutingSettings().policy().resolve_after) == (3, 4)
    cfg.write_text('[routing]\nresolve_after = 0\n')
    with pytest.raises(ValidationError, match="resolve_after"):
        RoutingSettings()
    cfg.write_text('[routing]\n[[routing.rules]]\nname = "x"\naction = "a"\nreason = "{mood}"\n')
    with pytest.raises(ValidationError, match="reason uses") as bad:
        RoutingSettings()
    assert "[routing] rules.0" in explain(bad.value) and "it may use" in explain(bad.value)  # what the CLI prints
    with pytest.raises(ValueError, match="unknown emotions"):
        RoutingRule("x", "a", "r", emotions=["rage"])
    for reason in ("rolling {}", "{words:+.2f}", "{rolling:d}"):  # would fail in the flow at the first match
        with pytest.raises(ValueError, match="cannot be filled"):
            RoutingRule("x", "a", reason)


@pytest.mark.parametrize(("rule", "says"), [
    ('emotions = ["anger"]\nemotion_share = 50\n', "not a percentage"),  # 50 %: would never match
    ("emotion_share = 0.5\n", "without emotions"),  # the share would be ignored: every segment matches
    ('phrases = ["cancel my", ""]\n', "empty phrase"),  # "" is in every text: every call to retention
    ("rolling_below = -50\n", "always or never"),
    ("rolling_below = -0.5\nrolling_above = 0.5\n", "swap or drop"),
])
def test_a_rule_that_would_match_never_or_always_is_refused_with_what_to_do(tmp_path, monkeypatch, rule, says):
    cfg = tmp_path / "eddyline.toml"
    cfg.write_text('[routing]\n[[routing.rules]]\nname = "x"\naction = "a"\nreason = "r"\n' + rule)
    monkeypatch.setenv("EDDYLINE_CONFIG", str(cfg))
    with pytest.raises(ValidationError, match=says) as bad:
        RoutingSettings()
    assert "[routing] rules.0" in explain(bad.value)


def test_snapshot_restores_mid_escalation_and_replays_repeat_ids():
    config = AudioFlowConfig(sentiment_model="vader").to_dict()
    lines = ["Hello, I am calling about my bill.", "This is ridiculous, I am furious.",
             "Outrageous, I am so angry, what a disgrace.", "Thank you, that is wonderful, I am happy now.",
             "Perfect, lovely, thanks.", "Great, thank you so much, wonderful."]
    events = [Event("transcripts", "c5", {**segment(i, t), "conversation_id": "c5"}) for i, t in enumerate(lines)]
    whole = run_local(sentiment_flow(AudioFlowConfig(**{"sentiment_model": "vader"})), events)
    assert any(e.topic == "routing" and e.record["action"] == "escalate_supervisor" for e in whole)
    procs: dict = {}
    spec = sentiment_flow(AudioFlowConfig.from_dict(config))
    first = run_local(spec, events[:3], procs)
    restored = {k: pickle.loads(pickle.dumps(p)) for k, p in procs.items()}
    second = run_local(spec, events[3:], restored)
    assert [e.record["event_id"] for e in first + second] == [e.record["event_id"] for e in whole]


def test_a_snapshot_keeps_a_de_escalation_under_way_and_one_from_before_hysteresis_restores():
    router = Router("c8", RoutingPolicy(), "test")
    route(router, [(0.0, "neutral", ""), (-0.4, "anger", ""), (0.3, "joy", "")])  # one segment without the anger
    state = router.snapshot()
    restored = Router("c8", RoutingPolicy(), "test")
    restored.restore(pickle.loads(pickle.dumps(state)))
    emits = restored.update(segment(3), 0.4, "joy", ("joy",), "nrc")
    assert [e.record["action"] for e in emits if e.topic == "routing"] == ["keep"]  # the second in a row
    old = {k: v for k, v in state.items() if k not in ("away", "pending", "pending_run")}
    before = Router("c8", RoutingPolicy(), "test")
    before.restore(old)
    assert before.update(segment(3), 0.4, "joy", ("joy",), "nrc") == []  # counting starts with the restore
    emits = before.update(segment(4), 0.5, "joy", ("joy",), "nrc")
    assert [e.record["action"] for e in emits if e.topic == "routing"] == ["keep"]
    config = AudioFlowConfig(sentiment_model="vader").to_dict()
    for name in ("open_after", "resolve_after"):
        del config["routing"][name]  # a flow's params saved before hysteresis
    assert AudioFlowConfig.from_dict(config).routing.resolve_after == 2


def test_a_conversation_that_ends_escalated_goes_back_to_the_default_and_resolves_its_alert():
    """A call over while escalated kept its recommendation and its alert open for good (PagerDuty, Slack)."""
    router = Router("c9", RoutingPolicy(), "test")
    opened = [e.record for e in route(router, [(-0.4, "anger", ""), (-0.5, "anger", "")]) if e.topic == "alerts"]
    ended = router.end(segment(1), "ended", "nrc")
    routing = [e.record for e in ended if e.topic == "routing"]
    assert [(r["segment"], r["previous_action"], r["action"], r["rule"], r["reason"]) for r in routing] == [
        (1, "escalate_supervisor", "keep", None, "the conversation ended")]
    assert [(e.record["status"], e.record["alert_key"]) for e in ended if e.topic == "alerts"] == [
        ("RESOLVED", opened[0]["alert_key"])]
    assert routing[0]["event_id"] != derive_id(ROUTING_RECOMMENDATION, "c9", 1), "not the escalation's id"
    assert router.end(segment(1), "ended", "nrc") == []
    serde = AvroSerde()
    for e in ended:
        assert serde.decode(serde.encode(e.event_type, e.record), e.event_type).items() >= e.record.items()
    calm = Router("c10", RoutingPolicy(), "test")
    route(calm, [(0.2, "neutral", "I want to cancel my subscription")])
    assert [(e.topic, e.record["action"]) for e in calm.end(segment(0), "ended", "nrc")] == [("routing", "keep")]
