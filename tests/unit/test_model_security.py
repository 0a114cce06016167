"""Poisoning detection (models.security), the model-security flow's processor, and the click flow's quarantine filter."""

from __future__ import annotations

import json

import numpy as np
import pytest

from models.security import PoisonDetector, PoisonLimits, parse_source, source_id
from streams.flows.clicks import ClickProcessor
from streams.flows.model_security import ModelSecuritySettings, ModelSecurityProcessor
from streams.processor import Event

HOUR = 3_600_000


def honest_traffic(det: PoisonDetector, n: int, seed: int = 0, producers: int = 3, t0: int = 0) -> tuple[list, int]:
    """Users with their own tastes over 200 items, each item liked by most or by few: what the crowd agrees on."""
    rng = np.random.default_rng(seed)
    item_p = rng.choice([0.15, 0.85], size=200)
    verdicts, t = [], t0
    for _ in range(n):
        t += int(rng.integers(1, 120_000))
        item, user = int(rng.integers(200)), int(rng.integers(300))
        liked = float(rng.random() < item_p[item])
        verdicts += det.observe(t, f"m{item}", liked, producer=f"web-{user % producers}", user=f"u{user}")
    return verdicts, t


def test_honest_traffic_is_not_quarantined() -> None:
    verdicts, _ = honest_traffic(PoisonDetector(), 20_000)
    assert verdicts == []


def test_a_new_producer_flipping_labels_against_the_crowd_is_quarantined_within_its_first_events() -> None:
    det = PoisonDetector()
    _, t = honest_traffic(det, 10_000)
    verdicts = []
    for i in range(400):
        item = f"m{i % 200}"
        liked = 0.0 if det.consensus(item) >= 0.5 else 1.0  # against the crowd
        verdicts += det.observe(t + i * 1000, item, liked, producer="bot", user=f"fake-{i % 50}")
    assert [(v.source, v.rule) for v in verdicts] == [("producer:bot", "label_flip")]
    assert verdicts[0].events <= 100 and "consensus" in verdicts[0].reason
    assert det.is_quarantined(producer="bot") and not det.is_quarantined(producer="web-0", user="u1")


def test_an_established_producer_that_starts_flipping_is_judged_against_its_own_history() -> None:
    det = PoisonDetector()
    _, t = honest_traffic(det, 12_000)
    rng = np.random.default_rng(1)
    verdicts = []
    for i in range(3000):
        item = f"m{int(rng.integers(200))}"
        truth = float(det.consensus(item) >= 0.5)
        verdicts += det.observe(t + i * 1000, item, 1.0 - truth, producer="web-1", user=f"u{int(rng.integers(300))}")
        if verdicts:
            break
    assert [v.source for v in verdicts] == ["producer:web-1"] and "its own history" in verdicts[0].reason


def test_an_established_producer_that_turns_slowly_does_not_carry_its_reference_along() -> None:
    """A compromised producer that flips a share of its labels rising slowly to all of them: its own long-run
    contrariness follows the turn, and held to that it never stands out; held to its lowest it is caught early."""
    det = PoisonDetector()
    rng = np.random.default_rng(0)
    item_p = rng.choice([0.15, 0.85], size=200)
    t, ramp, flipped, verdicts = 0, 20_000, 0, []
    for i in range(-6000, ramp + 5000):  # honest for 6000 rounds, then the turn, then every label flipped
        for k in range(3):  # web-0 and web-1 stay honest and keep the consensus
            t += int(rng.integers(1, 30_000))
            item = int(rng.integers(200))
            liked = float(rng.random() < item_p[item])
            if k == 2 and rng.random() < min(max(i, 0) / ramp, 1.0):
                liked, flipped = 1.0 - liked, flipped + 1
            verdicts += det.observe(t, f"m{item}", liked, producer=f"web-{k}", user=f"u{int(rng.integers(5000))}")
        if verdicts:
            break
    assert [(v.source, v.rule) for v in verdicts] == [("producer:web-2", "label_flip")]
    assert flipped < 2000 and "its own history" in verdicts[0].reason


def test_honest_producers_whose_users_tastes_turn_slowly_are_not_quarantined() -> None:
    """Tastes turn (items fall out of favour) and the consensus, counted since the start, lags: every honest
    source's contrariness rises together. Held to their own lowest, both producers were quarantined and the model
    learned nothing more (the lone producer of clean MovieLens traffic too)."""
    det = PoisonDetector()
    rng = np.random.default_rng(0)
    item_p = rng.choice([0.15, 0.85], size=200)
    turning = rng.random(200) < 0.4
    t, ramp, verdicts = 0, 30_000, []
    for i in range(-10_000, ramp):
        t += int(rng.integers(1, 30_000))
        item, user = int(rng.integers(200)), int(rng.integers(5000))
        p = item_p[item] + (1.0 - 2 * item_p[item]) * 0.8 * min(max(i, 0) / ramp, 1.0) * turning[item]
        verdicts += det.observe(t, f"m{item}", float(rng.random() < p), producer=f"web-{user % 2}", user=f"u{user}")
    assert [v.reason for v in verdicts] == []


def test_flood_from_a_new_source_and_one_item_pushing() -> None:
    det = PoisonDetector(PoisonLimits(new_burst=300))
    flood = [v for i in range(300) for v in det.observe(i, f"m{i}", None, producer="fast", user=f"u{i}")]
    assert [(v.source, v.rule, v.statistic) for v in flood] == [("producer:fast", "flood", 300.0)]
    pushed = [v for i in range(60) for v in det.observe(i, "m-top", 1.0, producer="pusher", user=f"v{i}")]
    assert [(v.source, v.rule) for v in pushed] == [("producer:pusher", "one_item")]
    assert "item m-top" in pushed[0].reason


def test_an_established_source_floods_against_its_own_rate() -> None:
    det = PoisonDetector(PoisonLimits(min_flood=100, flood_factor=10))
    t = 0
    for _ in range(10):  # ten windows of 5 events
        for i in range(5):
            assert det.observe(t + i, f"m{i}", None, producer="steady") == []
        t += HOUR
    verdicts = [v for i in range(100) for v in det.observe(t + i, f"m{i}", None, producer="steady")]
    assert [(v.rule, v.statistic) for v in verdicts] == [("flood", 100.0)]
    assert "usually" in verdicts[0].reason


def test_release_starts_fresh_history_with_a_grace_period() -> None:
    det = PoisonDetector(PoisonLimits(one_item_min=10, release_grace_ms=HOUR))
    assert [v.source for i in range(10) for v in det.observe(i, "x", 1.0, producer="p")] == ["producer:p"]
    assert det.release("producer:p", 100) and not det.is_quarantined(producer="p")
    assert not det.release("producer:p", 100)  # not quarantined any more
    assert [v for i in range(50) for v in det.observe(200 + i, "x", 1.0, producer="p")] == []  # in grace
    later = [v for i in range(50) for v in det.observe(2 * HOUR + i, "x", 1.0, producer="p")]
    assert [v.rule for v in later] == ["one_item"]


def test_releasing_a_source_that_is_not_quarantined_changes_nothing() -> None:
    det = PoisonDetector(PoisonLimits(one_item_min=10, release_grace_ms=HOUR))
    assert [v for i in range(9) for v in det.observe(i, "x", 1.0, producer="p")] == []
    assert not det.release("producer:p", 9)  # no reset of its history, no grace period
    assert [v.rule for v in det.observe(10, "x", 1.0, producer="p")] == ["one_item"]


def test_quarantined_sources_do_not_move_the_item_consensus() -> None:
    det = PoisonDetector()
    det.quarantine("producer:bot", "operator", "by hand", 0)
    for i in range(100):
        det.observe(i, "m1", 1.0, producer="bot", user="u1")
    assert det.consensus("m1") == 0.5


def test_snapshot_is_plain_data_and_restores_to_the_same_decisions() -> None:
    a = PoisonDetector()
    honest_traffic(a, 5000)
    state = json.loads(json.dumps(a.snapshot()))  # plain data: survives JSON
    b = PoisonDetector()
    b.restore(state)
    va, _ = honest_traffic(a, 3000, seed=2, t0=10**9)
    vb, _ = honest_traffic(b, 3000, seed=2, t0=10**9)
    assert va == vb and a.snapshot() == b.snapshot()
    older = json.loads(json.dumps(a.snapshot()))  # saved before sources kept a reference: one number less
    older["sources"] = {k: v[:-1] for k, v in older["sources"].items()}
    c = PoisonDetector()
    c.restore(older)
    assert c.snapshot()["sources"] == a.snapshot()["sources"]
    state["sources"]["producer:web-0"] = [1.0, 2.0]
    with pytest.raises(ValueError, match="must hold"):
        PoisonDetector().restore(state)


def test_state_is_bounded() -> None:
    det = PoisonDetector(PoisonLimits(max_sources=100, max_items=50))
    for i in range(1000):
        det.observe(i, f"m{i}", 1.0, producer=f"p{i}", user=f"u{i}")
    assert len(det.sources) == 100 and len(det.windows) == 100 and len(det.items) == 50


def test_source_names() -> None:
    assert source_id("producer", "web-3") == "producer:web-3" and parse_source("user:42") == ("user", "42")
    for bad in ("42", "device:x", "user:"):
        with pytest.raises(ValueError, match="KIND:NAME"):
            parse_source(bad)


def impression(i: int, producer: str, rating: float | None = 5.0, user: str = "u1") -> Event:
    return Event("clicks", user, {"event_id": f"i{i}-{producer}", "event_time": 1000 + i, "producer": producer,
                                  "user_id": user, "item_id": f"m{i % 3}", "action": "IMPRESSION", "rating": rating,
                                  "context": {"genres": "Drama"}})


def standing(source: str, action: str = "QUARANTINE") -> Event:
    return Event("security.quarantine", source, {"event_id": f"q-{action}", "event_time": 5, "producer": "x",
                                                  "source": source, "action": action, "rule": "one_item",
                                                  "reason": "pushes one item"})


def test_the_click_flow_scores_but_does_not_learn_from_quarantined_sources() -> None:
    proc = ClickProcessor("clicks-quarantine-test")
    proc.process([impression(i, "web") for i in range(5)])
    proc.process([standing("producer:bot"), standing("user:u9")])
    before = json.dumps(proc.model.snapshot(), sort_keys=True)
    emits = proc.process([impression(i, "bot") for i in range(5)] + [impression(9, "web", user="u9")])
    assert [e.topic for e in emits] == ["predictions"] * 6  # scored, no feedback: not learned
    pending = proc.process([impression(20, "bot", rating=None)])  # outcome unknown yet: waits
    assert [e.topic for e in pending] == ["predictions"]
    click = Event("clicks", "u1", {"event_id": "c20", "event_time": 1100, "producer": "bot", "user_id": "u1",
                                   "item_id": "m2", "action": "CLICK", "impression_id": "i20-bot", "rating": None})
    assert proc.process([click]) == []
    assert json.dumps(proc.model.snapshot(), sort_keys=True) == before and proc.not_learned == 7
    proc.process([standing("producer:bot", "RELEASE")])
    assert [e.topic for e in proc.process([impression(30, "bot")])] == ["predictions", "feedback"]
    restored = ClickProcessor("clicks-quarantine-test")
    restored.restore(json.loads(json.dumps(proc.snapshot())))
    assert restored.quarantined == {"user:u9": "pushes one item"} and restored.not_learned == 7


def test_the_security_processor_quarantines_alerts_and_resolves_on_release() -> None:
    proc = ModelSecurityProcessor(ModelSecuritySettings(one_item_min=10).limits())
    emits = proc.process([impression(3 * i, "bot", user=f"f{i}") for i in range(10)])  # all on item m0
    quarantine, alert = emits
    assert quarantine.record["source"] == "producer:bot" and quarantine.record["rule"] == "one_item"
    assert alert.record["status"] == "OPENED" and alert.record["details"]["release"] == \
        "eddyline security release producer:bot"
    # its own record read back, then released
    assert proc.process([Event("security.quarantine", "producer:bot", quarantine.record)]) == []
    release = {**quarantine.record, "event_id": "r1", "action": "RELEASE", "rule": "operator",
               "reason": "test traffic", "producer": "operator:ann"}
    resolved = proc.process([Event("security.quarantine", "producer:bot", release)])
    assert [(e.topic, e.record["status"], e.record["alert_key"]) for e in resolved] == [
        ("alerts", "RESOLVED", alert.record["alert_key"])]
    assert proc.process([Event("security.quarantine", "producer:bot", release)]) == []  # a replayed release
    assert proc.process([Event("security.quarantine", "x", {**release, "source": "device:pi-1"})]) == []
    assert proc.ignored == 1  # a source the list cannot name changes nothing, and does not stop the flow
    # a replay's click on a rated impression teaches nothing new: rates only
    click = {"event_id": "c", "event_time": 2000, "producer": "web", "user_id": "u", "item_id": "m",
             "action": "CLICK", "impression_id": "i", "rating": 5.0}
    proc.process([Event("clicks", "u", click)])
    assert proc.detector.sources["producer:web"][2] == 0  # no labelled event counted


def test_quarantines_are_counted_in_prometheus_by_kind_and_rule_only() -> None:
    from prometheus_client import REGISTRY

    from streams.sinks.model_security import ModelSecurityMetricsSink

    proc = ModelSecurityProcessor(ModelSecuritySettings(one_item_min=10).limits())
    emits = proc.process([impression(3 * i, "bot-metrics", user=f"g{i}") for i in range(10)])
    labels = {"kind": "producer", "rule": "one_item", "action": "QUARANTINE"}
    before = REGISTRY.get_sample_value("eddyline_quarantine_changes_total", labels) or 0.0
    sink = ModelSecurityMetricsSink()
    sink.write(emits)
    assert REGISTRY.get_sample_value("eddyline_quarantine_changes_total", labels) == before + 1
    names = {s.labels.get("source") for m in REGISTRY.collect() for s in m.samples if "quarantine" in s.name}
    assert names == {None}  # no source id as a label


def test_each_quarantine_has_a_bounded_alert_key_of_its_own_that_its_release_resolves() -> None:
    # Notify takes a resolved key as the end of that incident, and PagerDuty takes dedup keys of 255 characters at
    # most: a user id is free text, so the key names the quarantine, and the source is in the details.
    settings = ModelSecuritySettings(one_item_min=10, release_grace_ms=0).limits()
    user = "u" * 250
    source = f"user:{user}"
    proc = ModelSecurityProcessor(settings)
    [opened] = [e for e in proc.process([impression(3 * i, f"web-{i}", user=user) for i in range(10)])
                if e.topic == "alerts"]
    key = opened.record["alert_key"]
    assert opened.key == key and key.startswith("model-security/") and len(key) <= 64
    assert opened.record["entity"] == source and opened.record["details"]["source"] == source
    restored = ModelSecurityProcessor(settings)  # the release may come after a restart
    restored.restore(json.loads(json.dumps(proc.snapshot())))
    release = {"event_id": "r1", "event_time": 10**9, "producer": "operator:ann", "source": source,
               "action": "RELEASE", "rule": "operator", "reason": "a person after all"}
    [resolved] = restored.process([Event("security.quarantine", source, release)])
    assert (resolved.record["status"], resolved.record["alert_key"]) == ("RESOLVED", key)
    [again] = [e for e in restored.process([impression(3 * i, f"web-{i}", user=user) for i in range(100, 110)])
               if e.topic == "alerts"]
    assert again.record["status"] == "OPENED" and again.record["alert_key"] not in (key, "")


def test_a_quarantine_paged_under_an_earlier_releases_key_is_resolved_under_that_key() -> None:
    # Earlier releases keyed the alert by source: a quarantine standing in their snapshot has its page open under
    # that key, and only a resolve of the same key closes it.
    proc = ModelSecurityProcessor(ModelSecuritySettings(one_item_min=10, release_grace_ms=0).limits())
    proc.process([impression(3 * i, "bot", user=f"f{i}") for i in range(10)])
    older = json.loads(json.dumps(proc.snapshot()))
    del older["legacy"]
    restored = ModelSecurityProcessor(ModelSecuritySettings(one_item_min=10, release_grace_ms=0).limits())
    restored.restore(older)
    release = {"event_id": "r1", "event_time": 10**9, "producer": "operator:ann", "source": "producer:bot",
               "action": "RELEASE", "rule": "operator", "reason": "test traffic"}
    [resolved] = restored.process([Event("security.quarantine", "producer:bot", release)])
    assert resolved.record["alert_key"] == "model-security/producer:bot"
    assert restored.snapshot()["legacy"] == []
