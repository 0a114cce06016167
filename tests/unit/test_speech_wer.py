import pytest

from models.speech import normalize_words, word_error_rate


def test_normalisation_ignores_case_punctuation_and_digit_style():
    assert normalize_words("Order number 452, please!") == ["order", "number", "four", "five", "two", "please"]
    assert word_error_rate("order number four five two", "Order number 452.") == 0.0


def test_counts_substitutions_insertions_deletions():
    assert word_error_rate("a b c d", "a x c") == pytest.approx(2 / 4)
    assert word_error_rate("a b", "a b c d") == pytest.approx(1.0)
    assert word_error_rate(["a b", "c d"], ["a b", "c"]) == pytest.approx(1 / 4)


def test_empty_references_are_an_error():
    with pytest.raises(ValueError):
        word_error_rate("", "anything")
    with pytest.raises(ValueError):
        word_error_rate(["a"], ["a", "b"])
