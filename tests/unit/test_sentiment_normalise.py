"""The cues the uncased tokenizer loses (emoticons, emoji, capitals, HTML entities) become words before tokenising."""

import pytest

from models.sentiment.normalise import NORMALISE, normalise, normalise_all


@pytest.mark.parametrize(("text", "expected"), [
    ("great game :)", "great game smile"),
    ("missed the bus :-(", "missed the bus frown"),
    ("see you there ;)", "see you there wink"),
    ("TGIF &lt;3", "TGIF love"),
    ("that was close :D", "that was close laugh"),
    ("so tired :/", "so tired frown"),
])
def test_emoticons_and_entities_become_words(text, expected):
    assert normalise(text) == expected


def test_emoji_become_vaders_descriptions():
    assert normalise("new phone \U0001F600") == "new phone grinning face"


def test_capitalised_sentiment_words_are_doubled_in_mixed_case_text_only():
    assert normalise("I'm REALLY bored and this is GREAT") == "I'm REALLY REALLY bored and this is GREAT GREAT"
    assert normalise("Apple has $76 BILLION in cash") == "Apple has $76 BILLION in cash"  # not a sentiment word
    assert normalise("I LOVE THIS PHONE") == "I LOVE THIS PHONE"  # all capitals: no word stands out
    assert normalise("#FF @DAMN") == "#FF @DAMN"  # tags and names are not emphasis


def test_plain_text_and_urls_are_left_alone():
    text = "The film is long, but the cast is good: see http://example.org/a:) today."
    assert normalise(text) == text
    assert normalise("  two   spaces ") == "two spaces"


def test_a_model_without_normalisation_reads_raw_text_and_an_unknown_one_is_refused():
    assert normalise_all(["a :)"], None) == ["a :)"]
    assert normalise_all(["a :)"], NORMALISE) == ["a smile"]
    with pytest.raises(ValueError, match="unknown text normalisation 'cues-v9'"):
        normalise_all(["a"], "cues-v9")
