from collections import Counter

from models.sentiment.data import DOMAINS, LABELS, label_of, load_examples, split, split_of


def test_label_mapping_has_a_neutral_band():
    assert [LABELS[label_of(r)] for r in (-2.0, -0.51, -0.5, 0.0, 0.5, 0.51, 3.0)] == [
        "negative", "negative", "neutral", "neutral", "neutral", "positive", "positive"]


def test_split_depends_only_on_the_normalised_sentence():
    assert split_of("A fine  film.") == split_of("a fine film.")
    parts = Counter(split_of(f"sentence number {i}") for i in range(5000))
    assert 0.17 < parts["test"] / 5000 < 0.23


def test_all_four_domains_load_and_split_without_overlap():
    examples = load_examples()
    assert set(Counter(e.domain for e in examples)) == set(DOMAINS)
    assert len(examples) > 23000
    train, test = split(examples)
    assert len(train) + len(test) == len(examples)
    assert not {e.text.lower() for e in train} & {e.text.lower() for e in test}
    assert {e.domain for e in test} == set(DOMAINS)
