"""A model that makes no predictions any more (retired, renamed): the feedback still coming for it."""

from __future__ import annotations

from streams.flows import drift
from streams.state import decode, decode_processor, encode, encode_processor
from tests.unit.test_drift_flow import _fb, _pred, _stream


def test_feedback_without_any_predictions_stays_bounded_and_counts_as_unmatched() -> None:
    """The mirror of ``test_predictions_without_any_feedback_stay_bounded``: every feedback waited for ever."""
    proc = drift.DriftProcessor("m", max_wait_ms=10_000, stall_after=300)
    sizes = []
    for block in range(10):
        proc.process([_fb(block * 1000 + i, 1.0) for i in range(1000)])  # 100 s of feedback a block
        sizes.append(len(proc.early))
    assert max(sizes[1:]) <= 101 and proc.unmatched["feedback"] == 10_000 - len(proc.early)
    proc.process([_pred(9999, 0.9, 0.0)])  # its prediction after all: the latest feedback still joins
    assert proc.errors_since == 1


def test_a_stalled_prediction_stream_survives_a_restore_and_an_older_state_restores() -> None:
    proc = drift.DriftProcessor("m", max_wait_ms=10_000, stall_after=300)
    proc.process([_fb(i, 1.0) for i in range(2000)])
    restored = drift.DriftProcessor("m", max_wait_ms=10_000, stall_after=300)
    restored.restore(decode(encode(proc.snapshot())))
    more = [_fb(i, 1.0) for i in range(2000, 2100)]
    assert restored.process(more) == proc.process(more) and restored.early.entries == proc.early.entries
    old = {k: v for k, v in proc.snapshot().items() if k not in ("unpredicted_run", "predictions_stalled_at")}
    drift.DriftProcessor("m", max_wait_ms=10_000, stall_after=300).restore(decode(encode(old)))
