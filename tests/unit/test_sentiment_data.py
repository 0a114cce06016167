from collections import Counter

from models.sentiment.data import DOMAINS, LABELS, label_of, load_examples, split, split_of, validation_split


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


def test_validation_is_carved_from_training_sentences_per_domain_and_label():
    train, test = split(load_examples())
    fit, validation = validation_split(train, 0.15, seed=13)
    assert len(fit) + len(validation) == len(train)
    norm = lambda rows: {" ".join(e.text.lower().split()) for e in rows}  # noqa: E731
    assert not norm(fit) & norm(validation) and not norm(validation) & norm(test)
    whole, part = Counter((e.domain, e.label) for e in train), Counter((e.domain, e.label) for e in validation)
    assert set(part) == set(whole) and all(0.13 < part[k] / whole[k] < 0.17 for k in whole)
    assert validation_split(train, 0.15, seed=13)[1] == validation  # seeded: the same every run
    assert validation_split(train, 0.15, seed=14)[1] != validation
    assert validation_split(train, 0.0)[1] == []


def test_extra_sets_train_only_on_sentences_outside_the_test_buckets():
    from models.sentiment.extra_data import load_crowdflower, load_uci, training_examples

    uci, tweets = load_uci(), load_crowdflower()
    assert Counter(e.domain for e in uci) == {"movie": 1000, "product": 1000, "review": 1000}
    assert {LABELS[e.label] for e in uci} == {"negative", "positive"}
    assert len(tweets) > 25000 and {LABELS[e.label] for e in tweets} == set(LABELS)
    kept, notes = training_examples()
    assert set(notes) == {"uci", "crowdflower"} and all("skipped" not in n for n in notes.values())
    assert all(split_of(e.text) == "train" for e in kept)
    assert 0.75 < len(kept) / (len(uci) + len(tweets)) < 0.85
    _, vader_test = split(load_examples())
    held_out = {" ".join(e.text.lower().split()) for e in vader_test}
    assert not {" ".join(e.text.lower().split()) for e in kept} & held_out


def test_the_learning_rate_anneals_within_a_budget_too_short_for_the_planned_steps():
    from models.sentiment.train import _BudgetFit

    fit = _BudgetFit(total=1000, budget_s=100.0)
    step = 0
    while step < fit.planned:
        step += 1
        fit.update(step, elapsed_s=step * 0.5)  # 0.5 s a step: 200 steps fit
    assert step == 200 and fit.lr_factor(step - 1) < 0.01
    assert max(fit.lr_factor(s) for s in range(step)) == 1.0
    quick = _BudgetFit(total=100, budget_s=100.0)
    for s in range(1, 101):
        quick.update(s, elapsed_s=s * 0.01)
    assert quick.planned == 100  # never more than the planned epochs


def test_frozen_outputs_come_back_from_disk_under_the_same_key_only(tmp_path):
    import torch

    from models.sentiment import frozen_cache

    batches = [[[101, 7, 102], [101, 8, 9, 102]]]
    key = frozen_cache.cache_key("base", 4, False, batches)
    assert key != frozen_cache.cache_key("base", 3, False, batches)
    assert key != frozen_cache.cache_key("base", 4, False, [[[101, 7, 102], [101, 8, 10, 102]]])
    outputs = [(torch.ones(2, 4, 3, dtype=torch.float16), torch.tensor([[1, 1, 1, 0], [1, 1, 1, 1]]))]
    assert frozen_cache.load(key, tmp_path) is None
    frozen_cache.save(key, outputs, tmp_path)
    back = frozen_cache.load(key, tmp_path)
    assert torch.equal(back[0][0], outputs[0][0]) and torch.equal(back[0][1], outputs[0][1])
    for n in range(3):
        frozen_cache.save(f"other{n}", outputs, tmp_path)
    assert len(list(tmp_path.glob("*.pt"))) == frozen_cache.KEEP
    import os

    os.utime(tmp_path / "other2.pt", (1, 1))  # written long ago, then loaded: loading keeps it
    assert frozen_cache.load("other2", tmp_path) is not None
    frozen_cache.save("newest", outputs, tmp_path)
    assert {p.stem for p in tmp_path.glob("*.pt")} == {"other2", "newest"}
