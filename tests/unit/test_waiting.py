"""What the quality and drift joins keep while one side waits: ``streams.flows.waiting``, and the state both flows
write with it, which checkpoints written before it must still match."""

from __future__ import annotations

from streams.flows import drift, quality
from streams.flows.waiting import Stalls, Waiting
from streams.state import decode, encode
from tests.unit.test_drift_flow import _fb as _drift_fb
from tests.unit.test_drift_flow import _pred as _drift_pred
from tests.unit.test_quality_flow import _fb, _pred


def test_an_entry_expires_once_at_the_time_it_waits_with_and_not_for_a_time_it_left_behind() -> None:
    table = Waiting()
    table.add("a", {"time": 10})
    table.add("b", {"time": 20})
    table.add("a", {"time": 30})  # came back later: its heap entry at 10 is stale
    assert table.pop("b") == {"time": 20} and table.pop("b") is None
    assert table.expire(25, inclusive=True) == [] and "a" in table
    assert table.expire(30, inclusive=False) == [] and table.expire(30, inclusive=True) == [{"time": 30}]
    assert not table and table.entries == {}


def test_a_restored_table_expires_what_the_one_it_was_taken_from_would_soonest_first() -> None:
    table = Waiting(time_of=int)  # the drift flow's joined ids: the entry is its time
    for key, t in [("c", 5), ("a", 3), ("b", 4), ("d", 9)]:
        table.add(key, t)
    restored = Waiting(decode(encode(table.entries)), time_of=int)
    assert restored.expire(9, inclusive=False) == table.expire(9, inclusive=False) == [3, 4, 5]
    assert restored.entries == table.entries == {"d": 9}


def test_a_run_on_one_input_stalls_the_other_at_the_run_s_clock_and_an_older_state_never_stalled() -> None:
    stalls, clock = Stalls(3, never=0), {"predictions": 0, "feedback": 0}
    for t in (100, 200, 300):
        clock["predictions"] = t
        stalls.heard("predictions", clock)
    assert stalls.reach("feedback", clock) == 300 and stalls.reach("predictions", clock) == 300
    clock["feedback"] = 50
    stalls.heard("feedback", clock)  # feedback again: the run is over, the stall time stays
    assert stalls.snapshot() == {"unanswered_run": 0, "stalled_at": 300, "unpredicted_run": 1,
                                 "predictions_stalled_at": 0}
    again = Stalls(3, never=-7)
    again.restore({})  # a checkpoint from before stalls were noticed
    assert again.snapshot() == {"unanswered_run": 0, "stalled_at": -7, "unpredicted_run": 0,
                                "predictions_stalled_at": -7}


def test_both_flows_write_their_waiting_ids_and_stall_fields_where_their_checkpoints_always_had_them() -> None:
    """The key order is part of the encoded bytes: a checkpoint of the same input stays byte for byte the same."""
    q = quality.QualityProcessor("m", window_ms=1000, max_wait_ms=500, allowed_lateness_ms=0, stall_after=2)
    q.process([_pred("a", 100, 0.9), _pred("b", 200, 0.2), _pred("c", 300, 0.4), _fb("x", 250, 1.0)])
    state = q.snapshot()
    assert list(state) == ["preds", "early", "windows", "late", "clock", "closed_before", "unanswered_run",
                           "stalled_at", "unpredicted_run", "predictions_stalled_at", "duplicates"]
    assert (state["stalled_at"], state["unpredicted_run"], sorted(state["preds"]), list(state["early"])) == (
        300, 1, ["a", "b", "c"], ["x"])
    d = drift.DriftProcessor("m", max_wait_ms=10**6, stall_after=2)
    d.process([_drift_pred(1, 0.9, 0.0), _drift_fb(1, 1.0), _drift_pred(2, 0.9, 0.0), _drift_pred(3, 0.9, 0.0)])
    state = d.snapshot()
    assert [k for k in state if k in ("preds", "early", "joined", *Stalls(1, 0).snapshot())] == [
        "preds", "early", "unanswered_run", "stalled_at", "joined", "unpredicted_run", "predictions_stalled_at"]
    assert (state["joined"], list(state["preds"]), state["stalled_at"]) == ({"p1": 1_000_100}, ["p2", "p3"], 1_000_300)
