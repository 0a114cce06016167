"""A small training run end to end (a few hundred sentences), then every inference path over its output."""

import json

import numpy as np
import pytest

from models.sentiment import LABELS, load_sentiment
from models.sentiment.data import load_examples, split
from models.sentiment.evaluate import evaluate
from models.sentiment.train import base_model_path, train


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("sentiment")
    info = train(out, limit=160, epochs=2, progress=False, evaluate_test=False)
    assert info["train_sentences"] == 160 and info["steps"] == 6  # 2 epochs of 3 batches
    return out


def test_training_writes_onnx_int8_torch_and_a_card(model_dir):
    assert (model_dir / "model.int8.onnx").stat().st_size < 30e6  # int8: about a quarter of fp32
    assert (model_dir / "torch" / "head.pt").is_file()
    card = (model_dir / "MODEL_CARD.md").read_text()
    assert "Label: mean < -0.5 negative" in card and "hutto_ICWSM_2014" in card


def test_onnx_int8_matches_the_torch_network(model_dir):
    texts = ["I loved every minute of it", "a dull, lifeless mess", "the store opens at nine", "meh"]
    onnx = load_sentiment(model_dir, shared=False)
    fp32 = load_sentiment(model_dir / "torch", shared=False)
    p, q = onnx.probabilities(texts), fp32.probabilities(texts)
    assert p.shape == (4, 3) and np.allclose(p.sum(1), 1.0)
    assert np.abs(p - q).max() < 0.1
    preds = onnx.predict(texts)
    assert all(r.label in LABELS and -1 <= r.score <= 1 for r in preds)
    assert preds[0].score == pytest.approx(preds[0].probabilities["positive"] - preds[0].probabilities["negative"])


def test_evaluate_writes_per_domain_accuracy_beside_vader(model_dir, tmp_path):
    _, test = split(load_examples())
    result = evaluate(tmp_path / "eval.json", model_dir, test[::40])
    written = json.loads((tmp_path / "eval.json").read_text())
    assert set(written["accuracy"]) == set(written["vader_accuracy"]) == {"movie", "tweet", "product", "editorial"}
    assert all(0 <= v <= 1 for v in written["accuracy"].values())
    assert written["vader_accuracy"] == result["vader_accuracy"]


def test_a_hugging_face_classifier_directory_stands_in(tmp_path):
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    tok = AutoTokenizer.from_pretrained(base_model_path())
    cfg = BertConfig(vocab_size=tok.vocab_size, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                     intermediate_size=64, num_labels=2, id2label={0: "NEGATIVE", 1: "POSITIVE"},
                     label2id={"NEGATIVE": 0, "POSITIVE": 1})
    BertForSequenceClassification(cfg).save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    model = load_sentiment(tmp_path, shared=False)
    p = model.probabilities(["good", "bad"])
    assert p.shape == (2, 3) and np.allclose(p[:, 1], 0) and np.allclose(p.sum(1), 1)


def test_missing_trained_model_says_how_to_make_it(tmp_path, monkeypatch):
    monkeypatch.setenv("EDDYLINE_SENTIMENT_DIR", str(tmp_path / "none"))
    with pytest.raises(FileNotFoundError, match="train-sentiment"):
        load_sentiment(shared=False)
    with pytest.raises(FileNotFoundError, match="no sentiment model at"):
        load_sentiment(tmp_path / "elsewhere", shared=False)


def test_vader_baseline_labels():
    vader = load_sentiment("vader")
    assert [p.label for p in vader.predict(["I love it", "I hate it", "It is a table"])] == ["positive", "negative", "neutral"]
