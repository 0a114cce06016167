"""The emotion backend: the NRC lexicon read from the nrclex wheel, whole texts, negation, and its F1 check."""

import json

import numpy as np
import pytest

from models.sentiment.emotion import EMOTIONS, LexiconEmotion, lexicon, load_emotion
from models.sentiment.evaluate import EMOTION_CHECK, evaluate_emotion, per_class_f1


def test_lexicon_maps_nrc_tags_onto_our_labels():
    lex = lexicon()
    assert len(lex) > 3000
    assert lex["furious"] == ("anger",)  # NRC: anger and disgust, both ours as anger
    assert set(lex["terrible"]) == {"anger", "fear", "sadness"}
    assert all(set(tags) <= set(EMOTIONS) - {"neutral"} for tags in lex.values())


def test_labels_probabilities_and_words():
    model = LexiconEmotion()
    angry, calm, happy = model.predict(["I am furious, this is ridiculous.", "The store opens at nine.",
                                        "I am so happy, thank you."])
    assert angry.label == "anger" and angry.words == ("furious", "ridiculous")
    assert calm.label == "neutral" and calm.probabilities["neutral"] == 1.0 and calm.words == ()
    assert happy.label == "joy"
    p = model.probabilities(["I am furious", "hello", "awful and terrible"])
    assert p.shape == (3, len(EMOTIONS)) and np.allclose(p.sum(axis=1), 1.0)


def test_negated_words_and_inflections():
    model = LexiconEmotion()
    assert model.predict(["I am not happy"])[0].label == "neutral"  # negated, not joy
    assert model.predict(["She was complaining"])[0].words == ("complaining",)  # base form "complain"


def test_long_text_is_read_whole():
    text = "The order number is on the letter. " * 60 + "I am furious."
    assert LexiconEmotion().predict([text])[0].label == "anger"


def test_unknown_backend_is_a_clear_error():
    with pytest.raises(ValueError, match="'nrc'"):
        load_emotion("goemotions")


def test_per_class_f1():
    f1 = per_class_f1(["a", "a", "b", "c"], ["a", "b", "b", "b"], ("a", "b", "c"))
    assert f1["a"] == pytest.approx(2 / 3) and f1["b"] == pytest.approx(0.5) and f1["c"] == 0.0
    assert f1["macro"] == pytest.approx((2 / 3 + 0.5) / 3)


def test_emotion_check_is_balanced_and_scored_per_class():
    check = json.loads(EMOTION_CHECK.read_text())
    assert tuple(check["labels"]) == EMOTIONS
    result = evaluate_emotion()
    assert result["counts"] == {label: 12 for label in sorted(EMOTIONS)}
    assert set(result["f1"]) == {*EMOTIONS, "macro"} and all(0 <= v <= 1 for v in result["f1"].values())
    assert result["accuracy"] > 1 / len(EMOTIONS)  # above chance on balanced labels
