"""Sentiment scoring behind one interface: the ONNX int8 model trained here, any Hugging Face
sequence-classification directory, or VADER's lexicon (the baseline, and a light stand-in).

Every backend returns, per text, a label (negative/neutral/positive), probabilities over those three and
a score in [-1, 1] (P(positive) - P(negative)), so the flow does not care which one runs.
"""

from __future__ import annotations

import json
import os
import re
import textwrap
import threading
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import groupby
from pathlib import Path
from typing import Any

import numpy as np

from models.sentiment.data import LABELS
from models.sentiment.normalise import normalise_all
from models.sentiment.windows import (
    AGGREGATIONS,
    DEFAULT_AGGREGATION,
    DEFAULT_OVERLAP,
    Windows,
    aggregate,
    make_windows,
    window_texts,
)

ONNX_FILE = "model.int8.onnx"
META_FILE = "sentiment.json"
LEXICON_INPUT = "vader_compound"
# how VADER's compound score moves each label's logit under a lexicon prior (``lexicon_weight``)
LEXICON_DIRECTION = np.array([-1.0, 0.0, 1.0])
# onnxruntime fusions kept off at load: their fused CPU kernels (SkipLayerNormalization, BiasGelu) ran several
# times slower than the plain Add + LayerNormalization and Gelu they replace (BENCHMARKS-audio.md, Speed, session 7)
UNFUSED = ("SkipLayerNormFusion", "BiasGeluFusion")
# windows per inference call for the model trained here, in both engines. 16 runs the int8 model about 8 % cheaper
# than 64 (its activations stay in the caches; BENCHMARKS-audio.md, Speed, session 8, and "Session 12: batching,
# measured fairly", where PyTorch was batched the same way). Dropped in session 8 only because dynamic activation
# scales made labels move with the batch; since session 12 the scales are fixed at export (``batch_invariant``),
# so the batch size changes no result: held-out probabilities are the same bits at 16 and 64
WINDOW_BATCH = 16
# batch only windows of the same length, so no batch carries padding (``same_length``). Off: timed against PyTorch
# fp32 batched the same way it was no faster than padded batches of 64 or 16 in the same passes, and the labels are
# the same bits either way (BENCHMARKS-audio.md, "Session 12: batching, measured fairly")
SAME_LENGTH_BATCHES = False
# characters VADER reads at once. For each sentiment word it lowercases every word of the text, so its time grows with
# the square of the length (100,000 characters took 27 s, a stalled flow); every text of the corpora is shorter
VADER_PIECE = 10_000

_cache: dict[str, SentimentModel] = {}
_lock = threading.Lock()
_SURROGATE = re.compile("[\ud800-\udfff]")


def encodable(texts: Sequence[str]) -> list[str]:
    """The texts with each surrogate code point as U+FFFD: JSON's ``\\ud83d`` escape decodes to a lone one, which no
    UTF-8 tokenizer takes, and one such transcript would fail every text of its batch.

    Parameters
    ----------
    texts
        The texts; one without surrogates comes back unchanged, with the same length either way.
    """
    return [_SURROGATE.sub("\ufffd", t) for t in texts]


@dataclass(frozen=True, slots=True)
class Prediction:
    """One text's sentiment.

    Parameters
    ----------
    label
        ``negative``, ``neutral`` or ``positive``.
    score
        From -1 to 1: P(positive) - P(negative) (VADER: its compound score).
    probabilities
        Label -> probability.
    """

    label: str
    score: float
    probabilities: dict[str, float]


def default_model_dir() -> Path:
    """Where ``eddyline models train-sentiment`` puts the model trained here, and where it is loaded from:
    ``EDDYLINE_SENTIMENT_DIR``, else ``~/.cache/eddyline/sentiment``.
    """
    return Path(os.environ.get("EDDYLINE_SENTIMENT_DIR", Path.home() / ".cache" / "eddyline" / "sentiment"))


class SentimentModel(ABC):
    """Texts in, a ``Prediction`` per text out; subclasses give ``probabilities`` over negative/neutral/positive.

    Build one with ``load_sentiment``.
    """

    name: str = "sentiment"

    @abstractmethod
    def probabilities(self, texts: Sequence[str]) -> np.ndarray:
        """(n, 3) probabilities in LABELS order (negative, neutral, positive).

        Parameters
        ----------
        texts
            The texts, in any number: backends batch them themselves.
        """

    def predict(self, texts: Sequence[str]) -> list[Prediction]:
        """A ``Prediction`` per text: the likeliest label, and P(positive) - P(negative) as the score.

        Parameters
        ----------
        texts
            As for ``probabilities``.
        """
        if not texts:
            return []
        p = self.probabilities(list(texts))
        return [
            Prediction(LABELS[int(row.argmax())], float(row[2] - row[0]), {k: float(v) for k, v in zip(LABELS, row)})
            for row in p
        ]


class WindowedSentiment(SentimentModel):
    """A classifier with a fixed window (``max_length`` tokens) that scores texts of any length whole.

    Subclasses give the tokens (``token_ids``) and one batch's logits (``batch_logits``); this class cuts
    the texts into overlapping windows, batches them and aggregates (``models.sentiment.windows``), so the
    ONNX model and its PyTorch baseline read long texts the same way. A model trained with VADER's compound
    score as an input (``lexicon_input``) gets it per window, computed on the text the window covers.
    A model with a lexicon prior (``lexicon_weight`` w in ``sentiment.json``) adds w times that score to each
    window's positive logit and takes it from the negative one: the lexicon was built for social-media text,
    the domain where the model alone stayed under it; w is fitted on the validation split by likelihood (0, no
    prior, for older models; BENCHMARKS-audio.md, session 16).
    Window logits are then divided by the model's ``temperature`` (fitted on the validation split by training
    and stored in ``sentiment.json``; 1 for older models) before aggregation, so probabilities are calibrated
    the same way in the int8 and fp32 engines; the served (logit-mean) labels do not change. Texts are
    normalised first as the model was trained (``normalise`` in ``sentiment.json``; ``models.sentiment.normalise``).
    """

    max_length: int
    batch_size: int
    pad_id: int
    prefix: list[int]
    suffix: list[int]
    aggregation: str = DEFAULT_AGGREGATION
    overlap: int = DEFAULT_OVERLAP
    lexicon_input: bool = False
    lexicon_weight: float = 0.0
    temperature: float = 1.0
    normalise: str | None = None
    same_length: bool = SAME_LENGTH_BATCHES
    _vader: VaderSentiment | None = None

    def _set_windowing(self, aggregation: str, overlap: int) -> None:
        self.aggregation = _check_aggregation(aggregation)
        self.overlap = overlap

    @abstractmethod
    def token_ids(self, texts: Sequence[str]) -> list[list[int]]:
        """Per text, its token ids without special tokens and without truncation.

        Parameters
        ----------
        texts
            The texts.
        """

    def token_offsets(self, texts: Sequence[str]) -> list[list[tuple[int, int]]]:
        """Per text, the (start, end) characters of each token of ``token_ids``: where a window's text is cut.

        Parameters
        ----------
        texts
            The texts.
        """
        raise NotImplementedError(f"{type(self).__name__} cannot cut windows out of text")

    @abstractmethod
    def batch_logits(self, ids: np.ndarray, mask: np.ndarray, lexicon: np.ndarray | None = None) -> np.ndarray:
        """(batch, labels) logits for padded windows.

        Parameters
        ----------
        ids, mask
            (batch, tokens) int64 token ids and attention mask.
        lexicon
            (batch, 1) float32 VADER compound score of each window, for a model with ``lexicon_input``.
        """

    def window_lexicon(self, texts: Sequence[str], windows: Windows) -> np.ndarray:
        """(windows, 1) VADER compound score of the text each window covers.

        Parameters
        ----------
        texts, windows
            The texts and their windows.
        """
        if self._vader is None:
            self._vader = VaderSentiment()
        long = sorted({int(i) for i in windows.owner[windows.position > 0]})
        offsets = dict(zip(long, self.token_offsets([texts[i] for i in long]))) if long else {}
        return self._vader.compound(window_texts(texts, windows, offsets)).astype(np.float32)[:, None]

    def window_scores(self, texts: Sequence[str],
                      lexicon: bool = False) -> tuple[np.ndarray, np.ndarray | None, Windows]:
        """Every window of every text through the network: its own (windows, labels) logits (no prior, no
        temperature), VADER's (windows, 1) compound score per window (when asked, or when the network reads
        it; else None) and the windows.

        Windows are batched in order of length, so a batch pads to little more than its rows need; with
        ``same_length`` a batch holds only windows of one length (no padding, more and smaller batches).

        Parameters
        ----------
        texts
            The texts; each gives one window or more.
        lexicon
            Compute the compound scores even for a network that does not read them.
        """
        texts = normalise_all(encodable(texts), self.normalise)
        windows = make_windows(self.token_ids(texts), max_length=self.max_length, prefix=self.prefix,
                               suffix=self.suffix, overlap=self.overlap)
        compound = self.window_lexicon(texts, windows) if lexicon or self.lexicon_input else None
        feed = compound if self.lexicon_input else None
        logits = np.zeros((len(windows.ids), len(LABELS)))
        for chunk in length_batches([len(w) for w in windows.ids], self.batch_size, self.same_length):
            rows = [windows.ids[k] for k in chunk]
            ids = np.full((len(rows), max(map(len, rows))), self.pad_id, dtype=np.int64)
            mask = np.zeros_like(ids)
            for j, r in enumerate(rows):
                ids[j, : len(r)] = r
                mask[j, : len(r)] = 1
            logits[chunk] = self.batch_logits(ids, mask, None if feed is None else feed[chunk])
        return logits, compound, windows

    def window_logits(self, texts: Sequence[str]) -> tuple[np.ndarray, Windows]:
        """Every window of every text as served: (windows, labels) logits with the lexicon prior and the
        temperature applied, and the windows.

        Parameters
        ----------
        texts
            The texts; each gives one window or more.
        """
        logits, compound, windows = self.window_scores(texts, lexicon=bool(self.lexicon_weight))
        return with_lexicon_prior(logits, compound, self.lexicon_weight) / self.temperature, windows

    def probabilities(self, texts: Sequence[str]) -> np.ndarray:
        logits, windows = self.window_logits(texts)
        return aggregate(logits, windows, len(texts), self.aggregation)


def with_lexicon_prior(logits: np.ndarray, compound: np.ndarray | None, weight: float) -> np.ndarray:
    """Window logits moved by a lexicon prior: ``weight`` times VADER's compound score added to the positive logit
    and taken from the negative one (``logits`` as they are when ``weight`` is 0).

    Parameters
    ----------
    logits
        (windows, labels) logits of the network.
    compound
        (windows, 1) VADER compound scores of the windows; may be None when ``weight`` is 0.
    weight
        The prior's weight (``lexicon_weight`` in ``sentiment.json``).
    """
    return logits + weight * compound * LEXICON_DIRECTION if weight else logits


def length_batches(lengths: Sequence[int], batch_size: int, same_length: bool = False) -> list[list[int]]:
    """Window indices in batches of at most ``batch_size``, in order of length so a batch pads to little more
    than its rows need; with ``same_length`` a new batch also starts wherever the length changes (no padding).

    Parameters
    ----------
    lengths
        Tokens of each window.
    batch_size
        Windows per batch at most.
    same_length
        Batch only windows of one length.
    """
    order = sorted(range(len(lengths)), key=lambda k: lengths[k])
    runs = [list(g) for _, g in groupby(order, key=lambda k: lengths[k])] if same_length else [order]
    return [run[i : i + batch_size] for run in runs for i in range(0, len(run), batch_size)]


def _check_aggregation(aggregation: str) -> str:
    if aggregation not in AGGREGATIONS:
        raise ValueError(f"unknown aggregation {aggregation!r}; choose one of {', '.join(AGGREGATIONS)}")
    return aggregation


def int8_session(path: Path, threads: int = 0, *, optimized_path: Path | None = None, spinning: bool = False) -> Any:
    """An onnxruntime CPU session for the int8 model, with the fusions in ``UNFUSED`` kept off.

    Its intra-op threads sleep between operators instead of spinning (onnxruntime's default): on shared cores
    a spinning thread takes time from the thread doing the work: without it the model ran faster by wall time
    in every pair measured and used 20-43 % less CPU (BENCHMARKS-audio.md, Speed, session 9).

    Parameters
    ----------
    path
        The ``.onnx`` file.
    threads
        Intra-op threads; 0 means up to 4.
    optimized_path
        Where to write the graph onnxruntime actually runs (to check which operators it fused).
    spinning
        Let idle intra-op threads spin (onnxruntime's default; served off).
    """
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads or min(4, os.cpu_count() or 1)
    opts.inter_op_num_threads = 1
    opts.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
    if optimized_path is not None:
        opts.optimized_model_filepath = str(optimized_path)
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"], disabled_optimizers=list(UNFUSED))


class OnnxSentiment(WindowedSentiment):
    """The quantised model through onnxruntime, tokenised with the ``tokenizers`` library (no torch).

    A text longer than the model's window is scored whole: overlapping windows, batched with everything
    else, aggregated into one prediction (``models.sentiment.windows``).

    Parameters
    ----------
    model_dir
        A folder with ``model.int8.onnx`` and its tokenizer, as ``eddyline models train-sentiment`` writes it.
    threads
        Intra-op threads; 0 lets onnxruntime choose.
    batch_size
        Windows per inference call (``WINDOW_BATCH``, as for the PyTorch baseline).
    same_length
        Batch only windows of the same length, so no batch is padded (``SAME_LENGTH_BATCHES``).
    aggregation
        How window logits become one prediction (see ``windows.aggregate``); ``truncate`` reads only the
        first window, as this model did before windowing.
    overlap
        Tokens shared by consecutive windows.
    spinning
        Let idle onnxruntime threads spin between operators (see ``int8_session``; served off).
    """

    def __init__(self, model_dir: str | Path, *, threads: int = 0, batch_size: int = WINDOW_BATCH,
                 aggregation: str = DEFAULT_AGGREGATION, overlap: int = DEFAULT_OVERLAP, spinning: bool = False,
                 same_length: bool = SAME_LENGTH_BATCHES) -> None:
        from tokenizers import Tokenizer

        model_dir = Path(model_dir)
        missing = [name for name in (META_FILE, "tokenizer.json") if not (model_dir / name).is_file()]
        if missing:
            raise FileNotFoundError(f"{model_dir} has {ONNX_FILE} but no {' and no '.join(missing)}: copy the whole "
                                    "folder `eddyline models train-sentiment --out DIR` wrote, or train it again")
        meta = json.loads((model_dir / META_FILE).read_text())
        self.max_length = int(meta["max_length"])
        self.labels = tuple(meta["labels"])
        if self.labels != LABELS:
            raise ValueError(f"{model_dir}: labels {self.labels} differ from {LABELS}")
        self.name = meta.get("name", "eddyline-sentiment") + ":onnx-int8"
        self.temperature = float(meta.get("temperature", 1.0))
        self.lexicon_weight = float(meta.get("lexicon_weight", 0.0))
        self.normalise = meta.get("normalise")
        self.batch_size = batch_size
        self.same_length = same_length
        self._set_windowing(aggregation, overlap)
        self.pad_id = int(meta.get("pad_id", 0))
        try:
            self.tokenizer = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
        except Exception as exc:  # the tokenizers library raises a bare Exception
            raise ValueError(f"{model_dir / 'tokenizer.json'} does not load ({exc}): copy it again from the folder "
                             "`eddyline models train-sentiment --out DIR` wrote, or train again") from None
        self.tokenizer.no_truncation()
        self.tokenizer.no_padding()
        specials = self.tokenizer.encode("").ids  # the template around every text: [CLS] ... [SEP] for BERT
        self.prefix, self.suffix = specials[:1], specials[1:]
        try:
            self.session = int8_session(model_dir / ONNX_FILE, threads, spinning=spinning)
        except Exception as exc:  # onnxruntime's own errors (InvalidProtobuf, Fail) subclass nothing narrower
            raise ValueError(f"{model_dir / ONNX_FILE} does not load ({exc}); export it again from the PyTorch "
                             f"weights (`eddyline models rebuild-onnx --model {model_dir}`) or train again") from None
        self.inputs = {i.name for i in self.session.get_inputs()}
        self.lexicon_input = LEXICON_INPUT in self.inputs

    def token_ids(self, texts: Sequence[str]) -> list[list[int]]:
        return [e.ids for e in self.tokenizer.encode_batch(list(texts), add_special_tokens=False)]

    def token_offsets(self, texts: Sequence[str]) -> list[list[tuple[int, int]]]:
        return [e.offsets for e in self.tokenizer.encode_batch(list(texts), add_special_tokens=False)]

    def batch_logits(self, ids: np.ndarray, mask: np.ndarray, lexicon: np.ndarray | None = None) -> np.ndarray:
        feed = {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids), LEXICON_INPUT: lexicon}
        (logits,) = self.session.run(["logits"], {k: v for k, v in feed.items() if k in self.inputs})
        return logits


def _label_index(name: str) -> int | None:
    n = name.lower()
    for i, label in enumerate(LABELS):
        if n.startswith(label[:3]):
            return i
    return None


class TransformersSentiment(SentimentModel):
    """Any Hugging Face sequence-classification model (directory or hub id) in PyTorch fp32.

    Its labels are mapped onto negative/neutral/positive by name; a two-label model (e.g. SST-2's
    NEGATIVE/POSITIVE) simply never says neutral.

    Parameters
    ----------
    model
        A model directory or hub id (a hub id needs the internet the first time).
    max_length
        Tokens per text; longer texts are truncated.
    threads
        torch threads; 0 leaves torch's default.
    batch_size
        Texts per forward pass.
    """

    def __init__(self, model: str | Path, *, max_length: int = 128, threads: int = 0, batch_size: int = 64) -> None:
        import torch
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        if threads:
            torch.set_num_threads(threads)
        self.torch = torch
        self.tokenizer = AutoTokenizer.from_pretrained(str(model))
        self.model = AutoModelForSequenceClassification.from_pretrained(str(model)).eval()
        self.max_length = max_length
        self.batch_size = batch_size
        self.name = f"{Path(str(model)).name}:torch-fp32"
        id2label = self.model.config.id2label
        self.columns = [_label_index(id2label[i]) for i in range(len(id2label))]
        if any(c is None for c in self.columns):
            raise ValueError(f"{model}: cannot map labels {list(id2label.values())} onto {LABELS}")

    def probabilities(self, texts: Sequence[str]) -> np.ndarray:
        texts, out = encodable(texts), []
        with self.torch.inference_mode():
            for i in range(0, len(texts), self.batch_size):
                enc = self.tokenizer(list(texts[i : i + self.batch_size]), truncation=True, max_length=self.max_length,
                                     padding=True, return_tensors="pt")
                p = self.torch.softmax(self.model(**enc).logits.float(), dim=-1).numpy()
                full = np.zeros((p.shape[0], len(LABELS)))
                for j, col in enumerate(self.columns):
                    full[:, col] += p[:, j]
                out.append(full)
        return np.concatenate(out)


class TorchSentiment(WindowedSentiment):
    """The network trained here, in PyTorch fp32 (``<model dir>/torch``): the baseline the ONNX model is timed
    against, reading long texts through the same windows.

    Parameters
    ----------
    model_dir
        The trained model's folder (with ``head.json``).
    max_length
        Tokens per window, as the model was trained.
    threads, batch_size, aggregation, overlap, same_length
        As for ``OnnxSentiment`` (``threads``: torch threads; 0 leaves torch's default).
    """

    def __init__(self, model_dir: str | Path, *, max_length: int = 64, threads: int = 0,
                 batch_size: int = WINDOW_BATCH, aggregation: str = DEFAULT_AGGREGATION,
                 overlap: int = DEFAULT_OVERLAP, same_length: bool = SAME_LENGTH_BATCHES) -> None:
        import torch
        from transformers import AutoTokenizer

        from models.sentiment.network import MeanPoolClassifier

        if threads:
            torch.set_num_threads(threads)
        self.torch = torch
        path = Path(model_dir)
        self.net = MeanPoolClassifier.load(path)
        self.tokenizer = AutoTokenizer.from_pretrained(str(path))
        self.max_length = max_length
        self.batch_size = batch_size
        self.same_length = same_length
        self._set_windowing(aggregation, overlap)
        self.pad_id = int(self.tokenizer.pad_token_id or 0)
        self.prefix, self.suffix = [self.tokenizer.cls_token_id], [self.tokenizer.sep_token_id]
        self.lexicon_input = self.net.lexicon_inputs > 0
        meta_file = path.parent / META_FILE  # the served model's prior, temperature and normalisation hold here too
        meta = json.loads(meta_file.read_text()) if meta_file.is_file() else {}
        self.name = meta.get("name", "eddyline-sentiment") + ":torch-fp32"
        self.temperature = float(meta.get("temperature", 1.0))
        self.lexicon_weight = float(meta.get("lexicon_weight", 0.0))
        self.normalise = meta.get("normalise")

    def token_ids(self, texts: Sequence[str]) -> list[list[int]]:
        return self.tokenizer(list(texts), add_special_tokens=False, truncation=False, verbose=False)["input_ids"]

    def token_offsets(self, texts: Sequence[str]) -> list[list[tuple[int, int]]]:
        return self.tokenizer(list(texts), add_special_tokens=False, truncation=False, verbose=False,
                              return_offsets_mapping=True)["offset_mapping"]

    def batch_logits(self, ids: np.ndarray, mask: np.ndarray, lexicon: np.ndarray | None = None) -> np.ndarray:
        t = self.torch
        with t.inference_mode():
            ids_t, mask_t = t.from_numpy(ids), t.from_numpy(mask)
            extra = None if lexicon is None else t.from_numpy(lexicon)
            return self.net(ids_t, mask_t, t.zeros_like(ids_t), extra).float().numpy()


class VaderSentiment(SentimentModel):
    """VADER's rule-based lexicon with its documented thresholds (compound >= 0.05 positive, <= -0.05 negative).

    Its "probabilities" are its pos/neu/neg proportions, which are not calibrated; the label follows the
    compound score as VADER's authors recommend.
    """

    name = "vader-lexicon"

    def __init__(self) -> None:
        from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

        self.analyzer = SentimentIntensityAnalyzer()

    def polarity(self, text: str) -> dict[str, float]:
        """VADER's scores of one text; a text over ``VADER_PIECE`` characters is read in pieces of at most that many,
        their scores averaged by length.

        Parameters
        ----------
        text
            Any text.
        """
        if len(text) <= VADER_PIECE:
            return self.analyzer.polarity_scores(text)
        pieces = textwrap.wrap(text, VADER_PIECE, replace_whitespace=False)
        scores = [self.analyzer.polarity_scores(p) for p in pieces]
        weights = np.array([len(p) for p in pieces], dtype=float) / sum(map(len, pieces))
        return {k: float(weights @ [s[k] for s in scores]) for k in ("neg", "neu", "pos", "compound")}

    def compound(self, texts: Sequence[str]) -> np.ndarray:
        """VADER's compound score per text, from -1 to 1.

        Parameters
        ----------
        texts
            As for ``probabilities``.
        """
        return np.array([self.polarity(t)["compound"] for t in texts])

    def probabilities(self, texts: Sequence[str]) -> np.ndarray:
        return np.array([[s["neg"], s["neu"], s["pos"]] for s in map(self.polarity, texts)])

    def predict(self, texts: Sequence[str]) -> list[Prediction]:
        out = []
        for t in texts:
            s = self.polarity(t)
            c = s["compound"]
            label = "positive" if c >= 0.05 else "negative" if c <= -0.05 else "neutral"
            out.append(Prediction(label, float(c), {"negative": s["neg"], "neutral": s["neu"], "positive": s["pos"]}))
        return out


def load_sentiment(model: str | Path | None = None, *, shared: bool = True, **options: Any) -> SentimentModel:
    """A sentiment model by reference.

    ``None``: the model trained here (``default_model_dir()``); ``"vader"``: the lexicon; a directory with
    ``model.int8.onnx``: that ONNX model; its ``torch/`` subdirectory: the same network in PyTorch fp32; any
    other directory or hub id: a Hugging Face sequence-classification model in PyTorch. A missing model, or a folder that is none of
    these, is a ``FileNotFoundError`` that says how to train one.

    Parameters
    ----------
    model
        The reference, as above.
    shared
        Return the instance already loaded for the same reference and options, so that per-conversation
        processors share one model.
    options
        Passed to the model's constructor (``threads``, ``batch_size``, ...).

    Examples
    --------
    >>> from models.sentiment.model import load_sentiment
    >>> [p.label for p in load_sentiment("vader").predict(["What a lovely day.", "This is awful."])]
    ['positive', 'negative']
    """
    ref = str(model) if model is not None else str(default_model_dir())
    key = f"{ref}|{sorted(options.items())}"
    if shared:
        with _lock:
            if key in _cache:
                return _cache[key]
    made: SentimentModel
    if ref == "vader":
        made = VaderSentiment()
    elif (Path(ref) / ONNX_FILE).is_file():
        made = OnnxSentiment(ref, **options)
    elif (Path(ref) / "head.json").is_file():
        made = TorchSentiment(ref, **options)
    elif Path(ref).exists() and not (Path(ref) / "config.json").is_file():
        raise FileNotFoundError(
            f"{ref} is not a sentiment model folder: it has no {ONNX_FILE} (a model from `eddyline models "
            "train-sentiment --out DIR`), no head.json (its torch/ folder) and no config.json (a Hugging Face "
            "model); pass such a folder, or 'vader'"
        )
    elif model is None or ((Path(ref).is_absolute() or ref.startswith(".")) and not Path(ref).exists()):
        if model is not None:
            raise FileNotFoundError(f"no sentiment model at {ref}")
        raise FileNotFoundError(
            f"no sentiment model in {ref}: run `eddyline models train-sentiment` first "
            "(or pass a Hugging Face model directory, or 'vader')"
        )
    else:
        made = TransformersSentiment(ref, **options)
    if shared:
        with _lock:
            made = _cache.setdefault(key, made)
    return made
