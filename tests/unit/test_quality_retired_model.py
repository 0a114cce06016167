"""A model that makes no predictions any more (retired, renamed): the feedback still coming for it; and the work
of an event with many predictions and labels waiting."""

from __future__ import annotations

import pytest

from streams.flows import quality
from streams.state import decode, encode
from tests.fixtures.counting import CountingDict
from tests.unit.test_quality_flow import _fb, _pred


def _labels(first: int, n: int) -> list:
    """Labels a tenth of a second apart for predictions this model never made."""
    return [_fb(f"x{i}", i * 100, 1.0) for i in range(first, first + n)]


def test_feedback_without_any_predictions_stays_bounded_and_counts_late() -> None:
    """The mirror of ``test_a_stalled_feedback_stream_counts_predictions_missing_after_a_run_without_feedback``:
    every such label waited for ever, and a retired model's last window with them."""
    proc = quality.QualityProcessor("m", window_ms=1000, max_wait_ms=10_000, allowed_lateness_ms=0, stall_after=300)
    proc.process([_pred("a", 100, 0.9), _fb("a", 150, 1.0)])
    sizes, out = [], []
    for block in range(10):
        out += [e.record for e in proc.process(_labels(block * 1000 + 2, 1000))]  # 100 s of labels a block
        sizes.append(len(proc.early))
    assert max(sizes[1:]) <= 101
    [last] = out  # the retired model's last window, closed once its labels alone had come far enough
    assert (last["window_start"], last["predictions"], last["labelled"], last["missing_feedback"]) == (0, 1, 1, 0)
    assert last["late_events"] + proc.late["unknown"] == 10_000 - len(proc.early)
    proc.process([_pred("x10001", 1_000_000, 0.9)])  # a prediction after all: its waiting label still joins
    tick = [e.record for e in proc.process([_pred("z", 2_000_000), _fb("z", 2_000_000, 1.0)])]
    joined = next(w for w in tick if w["window_start"] == 1_000_000)
    assert (joined["predictions"], joined["labelled"], joined["missing_feedback"]) == (1, 1, 0)


def test_a_stalled_prediction_stream_survives_a_restore_and_an_older_state_restores() -> None:
    params = {"window_ms": 1000, "max_wait_ms": 10_000, "allowed_lateness_ms": 0, "stall_after": 300}
    proc = quality.QualityProcessor("m", **params)
    proc.process(_labels(0, 2000))
    restored = quality.QualityProcessor("m", **params)
    restored.restore(decode(encode(proc.snapshot())))
    more = _labels(2000, 100)
    assert restored.process(more) == proc.process(more)
    assert restored.early.entries == proc.early.entries and restored.late == proc.late and len(proc.early) <= 101
    old = {k: v for k, v in proc.snapshot().items() if k not in ("unpredicted_run", "predictions_stalled_at")}
    quality.QualityProcessor("m", **params).restore(decode(encode(old)))


@pytest.mark.parametrize("waiting", [500, 5000])
def test_an_event_looks_at_what_it_joins_or_expires_not_at_every_waiting_id(waiting: int) -> None:
    """Predictions wait up to 31 minutes for their labels: at a hundred a second, every event looked at 186,000."""
    proc = quality.QualityProcessor("m", window_ms=60_000, max_wait_ms=10**10, stall_after=10**9)  # nothing expires
    proc.process([_pred(f"p{i}", i) for i in range(waiting)])  # waiting for their feedback
    proc.process([_fb(f"q{i}", i, 1.0) for i in range(waiting)])  # waiting for their predictions
    proc.preds.entries, proc.early.entries = CountingDict(proc.preds.entries), CountingDict(proc.early.entries)
    CountingDict.looked = 0
    for i in range(100):
        proc.process([_pred(f"r{i}", waiting), _fb(f"r{i}", waiting, 1.0)])
    assert CountingDict.looked / 200 <= 10  # a handful of look-ups per event, whatever waits
    assert len(proc.preds) == len(proc.early) == waiting
