"""The alert policy: hysteresis, one incident per episode, severity escalation, stable incident keys."""

import numpy as np

from streams.flows.alert_policy import AlertPolicy, PolicyConfig


def feed(policy: AlertPolicy, scores: list[float], origin: str = "e1") -> list:
    s = np.asarray(scores, dtype=float)
    return policy.update(s, np.arange(len(s)) * 1000, origin)


def test_quiet_signal_raises_nothing():
    assert feed(AlertPolicy(), [0.1] * 100) == []


def test_flapping_signal_opens_one_incident_and_resolves_after_a_quiet_run():
    p = AlertPolicy(PolicyConfig(threshold=0.5, resolve_after=5, warmup=0))
    flapping = [0.7, 0.1, 0.8, 0.2, 0.1, 0.95, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1]
    out = feed(p, flapping)
    assert [t.status for t in out] == ["OPENED", "UPDATED", "RESOLVED"]
    assert len({t.incident for t in out}) == 1
    assert out[1].severity == "ERROR" and out[0].severity == "WARNING"
    assert out[-1].index == 10  # five normal readings after the last hot one


def test_a_new_episode_after_resolution_is_a_new_incident():
    p = AlertPolicy(PolicyConfig(resolve_after=2, warmup=0))
    out = feed(p, [0.9, 0.1, 0.1, 0.9, 0.1, 0.1])
    opened = [t.incident for t in out if t.status == "OPENED"]
    assert len(opened) == 2 and opened[0] != opened[1]


def test_incident_key_is_stable_across_replays_and_batch_splits():
    scores = [0.1, 0.2, 0.7, 0.1]
    a = feed(AlertPolicy(PolicyConfig(warmup=0)), scores, origin="batch-7")
    b = feed(AlertPolicy(PolicyConfig(warmup=0)), scores, origin="batch-7")
    assert [t.incident for t in a] == [t.incident for t in b]


def test_snapshot_restore_continues_identically():
    cfg = PolicyConfig(resolve_after=3, warmup=0)
    whole = AlertPolicy(cfg)
    first = feed(whole, [0.9, 0.1])
    rest = feed(whole, [0.1, 0.1, 0.1])
    resumed = AlertPolicy(cfg)
    feed(resumed, [0.9, 0.1])
    again = AlertPolicy(cfg)
    again.restore(resumed.snapshot())
    assert [(t.status, t.incident) for t in feed(again, [0.1, 0.1, 0.1])] == [(t.status, t.incident) for t in rest]
    assert first[0].status == "OPENED"


def test_no_incident_while_the_series_is_still_warming_up():
    p = AlertPolicy(PolicyConfig(warmup=5, resolve_after=2))
    assert feed(p, [0.9, 0.9, 0.1]) == []  # readings 1-3 of the warm-up
    out = feed(p, [0.9, 0.9, 0.1, 0.1])  # the 4th and 5th are still warm-up; the 6th is not hot
    assert out == []
    assert [t.status for t in feed(p, [0.95, 0.1, 0.1])] == ["OPENED", "RESOLVED"]
