"""Windows over a long text's tokens and their aggregation into one prediction (no model needed)."""

import numpy as np
import pytest

from models.sentiment.evaluate import expected_calibration_error
from models.sentiment.windows import aggregate, make_windows, window_texts


def test_every_token_lands_in_a_window_and_windows_overlap():
    seq = list(range(1000, 1150))  # 150 tokens
    w = make_windows([seq, [7, 8], []], max_length=64, prefix=[101], suffix=[102], overlap=16)
    mine = [ids for ids, o in zip(w.ids, w.owner) if o == 0]
    assert all(len(ids) <= 64 and ids[0] == 101 and ids[-1] == 102 for ids in w.ids)
    covered = {t for ids in mine for t in ids[1:-1]}
    assert covered == set(seq)
    assert mine[0][1:-1][-16:] == mine[1][1:-1][:16]
    assert list(w.owner) == [0, 0, 0, 1, 2] and w.ids[3] == [101, 7, 8, 102] and w.ids[4] == [101, 102]
    assert list(w.position) == [0, 1, 2, 0, 0]


def test_a_text_that_fits_is_one_window_and_aggregations_agree_on_it():
    w = make_windows([list(range(62))], max_length=64, prefix=[101], suffix=[102])
    assert len(w.ids) == 1
    logits = np.array([[2.0, 0.0, -1.0]])
    rows = [aggregate(logits, w, 1, m) for m in ("truncate", "mean-logits", "mean-probs", "late-logits")]
    assert all(np.allclose(r, rows[0]) for r in rows)


def test_aggregation_reads_the_whole_text_where_truncation_reads_its_start():
    w = make_windows([list(range(200))], max_length=64, prefix=[101], suffix=[102], overlap=0)
    n = len(w.ids)
    logits = np.array([[3.0, 0.0, -3.0]] + [[-3.0, 0.0, 3.0]] * (n - 1))  # opens negative, then positive
    assert aggregate(logits, w, 1, "truncate").argmax() == 0
    assert aggregate(logits, w, 1, "mean-logits").argmax() == 2
    late, mean = aggregate(logits, w, 1, "late-logits"), aggregate(logits, w, 1, "mean-logits")
    assert late[0, 2] > mean[0, 2]
    with pytest.raises(ValueError, match="unknown aggregation"):
        aggregate(logits, w, 1, "max")


def test_windows_that_cannot_hold_text_are_refused():
    with pytest.raises(ValueError, match="cannot hold"):
        make_windows([[1, 2]], max_length=2, prefix=[101], suffix=[102])


def test_ece_is_zero_when_confidence_matches_accuracy_and_large_when_overconfident():
    y = np.array([0, 0, 0, 1])
    calibrated = np.tile([0.75, 0.25, 0.0], (4, 1))  # 75 % confident, 3 of 4 right
    assert expected_calibration_error(calibrated, y) == pytest.approx(0.0)
    overconfident = np.tile([0.0, 1.0, 0.0], (4, 1))  # sure of label 1, right once
    assert expected_calibration_error(overconfident, y) == pytest.approx(0.75)


def test_window_texts_cut_a_long_text_where_its_windows_tokens_start_and_end():
    words = [f"w{i:02d}" for i in range(10)]  # one token per word, 4 characters each with the space
    long, short = " ".join(words), "fine"
    offsets = {0: [(4 * i, 4 * i + 3) for i in range(10)]}
    w = make_windows([list(range(10)), [1]], max_length=6, prefix=[101], suffix=[102], overlap=2)
    assert list(w.start) == [0, 2, 4, 6, 0]
    texts = window_texts([long, short], w, offsets)
    assert texts == ["w00 w01 w02 w03", "w02 w03 w04 w05", "w04 w05 w06 w07", "w06 w07 w08 w09", "fine"]
