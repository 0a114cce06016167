"""Rewrite the int8 graph so that a window's logits are the same, bit for bit, whatever it is batched with.

Two things made a text's scores depend on its batch mates (BENCHMARKS-audio.md, Session 12). onnxruntime's
dynamic quantisation takes each activation's int8 scale from the min and max of the whole batch tensor, padding
included, so probabilities moved by up to 0.47 and labels flipped: here every ``DynamicQuantizeLinear`` becomes a
``QuantizeLinear`` whose scale and zero point were fixed once from calibration windows of training sentences,
each run alone. And the mean pooling's ``ReduceSum`` over tokens adds in another order for a batch of one than
for more (last-bit differences, 1e-4 in a probability): it becomes a batched ``MatMul`` of the mask with the
hidden states, one product per window. Every other operator already works per token, per window or per
(window, head) with the padding masked out.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

# how the calibration windows' extremes become one range per activation (chosen on the validation split,
# BENCHMARKS-audio.md, Session 12): "minmax" their min and max; "pNN" the NN-th percentile of the windows'
# maxima (and the (100 - NN)-th of their minima), clipping the rare outliers
RULES = ("minmax", "p99.9", "p99")
DEFAULT_RULE = "p99.9"
CALIBRATION_TEXTS = 1024
CALIBRATION_SEED = 12
QUANTISED_INPUT = "DynamicQuantizeLinear"


def calibration_sample(texts: Sequence[str]) -> list[str]:
    """The training sentences the activation scales are fixed on: ``CALIBRATION_TEXTS`` of them, drawn with a
    fixed seed, so that exporting the same network again gives the same scales.

    Parameters
    ----------
    texts
        Training sentences (never validation or test ones).
    """
    return random.Random(CALIBRATION_SEED).sample(list(texts), min(CALIBRATION_TEXTS, len(texts)))


def activation_ranges(int8_path: Path, feeds: Sequence[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Per dynamically quantised activation, an (n_feeds, 2) array of its min and max in each feed.

    Parameters
    ----------
    int8_path
        The dynamically quantised graph.
    feeds
        Model inputs, one window each (padding would widen the ranges with tokens the model ignores).
    """
    import onnx
    from onnx import TensorProto, helper

    from models.sentiment.model import int8_session

    model = onnx.load(str(int8_path))
    names = [n.input[0] for n in model.graph.node if n.op_type == QUANTISED_INPUT]
    model.graph.output.extend(helper.make_tensor_value_info(name, TensorProto.FLOAT, None) for name in names)
    augmented = int8_path.with_name(f".{int8_path.stem}.calibrate.onnx")
    onnx.save(model, str(augmented))
    try:
        session = int8_session(augmented)
        wanted = {i.name for i in session.get_inputs()}
        seen = [session.run(names, {k: v for k, v in feed.items() if k in wanted}) for feed in feeds]
    finally:
        augmented.unlink()
    return {name: np.array([(float(v[i].min()), float(v[i].max())) for v in seen]) for i, name in enumerate(names)}


def _range(extremes: np.ndarray, rule: str) -> tuple[float, float]:
    if rule == "minmax":
        lo, hi = extremes[:, 0].min(), extremes[:, 1].max()
    elif rule in RULES:
        q = float(rule[1:])
        lo, hi = np.percentile(extremes[:, 0], 100 - q), np.percentile(extremes[:, 1], q)
    else:
        raise ValueError(f"unknown calibration rule {rule!r}; choose one of {', '.join(RULES)}")
    return min(0.0, float(lo)), max(0.0, float(hi))


def make_batch_invariant(int8_path: Path, target: Path, feeds: Sequence[dict[str, np.ndarray]],
                         rule: str = DEFAULT_RULE) -> int:
    """Write the dynamically quantised graph ``int8_path`` to ``target`` with its activation scales fixed on
    ``feeds`` (``calibration_feeds``) and its pooling as a MatMul; returns the int8 MatMuls.

    Parameters
    ----------
    int8_path, target
        The dynamically quantised graph and where the batch-invariant one goes.
    feeds
        Calibration windows of training sentences, one each.
    rule
        One of ``RULES``.
    """
    return fix_scales(int8_path, target, activation_ranges(int8_path, feeds), rule)


def fix_scales(int8_path: Path, target: Path, ranges: dict[str, np.ndarray], rule: str = DEFAULT_RULE) -> int:
    """Write ``int8_path`` to ``target`` with every activation scale fixed and the pooling sum as a MatMul;
    returns the int8 MatMuls.

    A range becomes a uint8 scale and zero point as ``DynamicQuantizeLinear`` computes them from a tensor's min
    and max. Each ``MatMulInteger`` with its ``Cast``, scale ``Mul`` and bias ``Add`` becomes one
    ``MatMulIntegerToFloat``: onnxruntime fuses that pattern itself only while the input scale is computed
    (it folds the constant scale product first and then no longer recognises it).

    Parameters
    ----------
    int8_path, target
        The dynamically quantised graph and where the fixed one goes.
    ranges
        From ``activation_ranges``.
    rule
        One of ``RULES``.
    """
    import onnx
    from onnx import helper, numpy_helper

    model = onnx.load(str(int8_path))
    graph = model.graph
    nodes: list[Any] = []
    for node in graph.node:
        if node.op_type != QUANTISED_INPUT:
            nodes.append(node)
            continue
        lo, hi = _range(ranges[node.input[0]], rule)
        scale = np.float32((hi - lo) / 255.0) if hi > lo else np.float32(1.0)
        zero = np.uint8(np.clip(np.round(-lo / scale), 0, 255))
        graph.initializer.extend([numpy_helper.from_array(np.array(scale), node.output[1]),
                                  numpy_helper.from_array(np.array(zero), node.output[2])])
        nodes.append(helper.make_node("QuantizeLinear", [node.input[0], node.output[1], node.output[2]],
                                      [node.output[0]], name=f"{node.name}_fixed"))
    del graph.node[:]
    graph.node.extend(nodes)
    fused = _integer_matmuls_to_float(model)
    _pool_by_matmul(model)
    onnx.save(model, str(target))
    return fused


def _integer_matmuls_to_float(model: Any) -> int:
    from onnx import helper

    graph = model.graph
    producer = {o: n for n in graph.node for o in n.output}
    consumers: dict[str, list[Any]] = {}
    for n in graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    constants = {i.name for i in graph.initializer}
    replaced: dict[int, Any] = {}
    dropped: set[int] = set()
    for mm in graph.node:
        if mm.op_type != "MatMulInteger":
            continue
        (cast,) = consumers[mm.output[0]]
        (mul,) = consumers[cast.output[0]]
        product = producer[mul.input[1] if mul.input[0] == cast.output[0] else mul.input[0]]
        a_scale, b_scale = product.input
        if a_scale != f"{mm.input[0].removesuffix('_quantized')}_scale":
            a_scale, b_scale = b_scale, a_scale
        inputs, output = [mm.input[0], mm.input[1], a_scale, b_scale, mm.input[2], mm.input[3]], mul.output[0]
        after = consumers.get(output, [])
        if len(after) == 1 and after[0].op_type == "Add" and any(i in constants for i in after[0].input):
            inputs.append(next(i for i in after[0].input if i in constants))
            output = after[0].output[0]
            dropped.add(id(after[0]))
        replaced[id(mm)] = helper.make_node("MatMulIntegerToFloat", inputs, [output], name=f"{mm.name}_float",
                                            domain="com.microsoft")
        dropped |= {id(cast), id(mul)} | ({id(product)} if len(consumers[product.output[0]]) == 1 else set())
    kept = [replaced.get(id(n), n) for n in graph.node if id(n) not in dropped]
    del graph.node[:]
    graph.node.extend(kept)
    if not any(o.domain == "com.microsoft" for o in model.opset_import):
        model.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    return len(replaced)


def _pool_by_matmul(model: Any) -> None:
    """``ReduceSum(hidden * mask, tokens)`` as ``MatMul(mask^T, hidden)``, squeezed: one (1 x tokens) product per
    window, computed alike in a batch of any size."""
    from onnx import helper, numpy_helper

    graph = model.graph
    producer = {o: n for n in graph.node for o in n.output}

    def made_by(name: str) -> str:
        return getattr(producer.get(name), "op_type", "")

    sums = [n for n in graph.node if n.op_type == "ReduceSum" and made_by(n.input[0]) == "Mul"]
    if len(sums) != 1:
        raise ValueError(f"expected one masked pooling sum in the graph, found {len(sums)}")
    (node,) = sums
    mul = producer[node.input[0]]
    mask = next(i for i in mul.input if made_by(i) == "Cast")  # (windows, tokens, 1)
    hidden = next(i for i in mul.input if i != mask)  # (windows, tokens, features)
    name = node.output[0]
    pooling = [helper.make_node("Transpose", [mask], [f"{name}_mask_row"], perm=[0, 2, 1],
                                name=f"{node.name}_mask_row"),
               helper.make_node("MatMul", [f"{name}_mask_row", hidden], [f"{name}_3d"], name=f"{node.name}_matmul"),
               helper.make_node("Squeeze", [f"{name}_3d", "pool_axis"], [name], name=f"{node.name}_squeeze")]
    used_elsewhere = any(mul.output[0] in n.input for n in graph.node if n is not node)
    nodes = [x for n in graph.node for x in (pooling if n is node else [] if n is mul and not used_elsewhere else [n])]
    graph.initializer.append(numpy_helper.from_array(np.array([1], dtype=np.int64), "pool_axis"))
    del graph.node[:]
    graph.node.extend(nodes)


def calibration_feeds(tokenizer: Any, texts: Sequence[str], max_length: int, lexicon_input: bool = False,
                      ) -> list[dict[str, np.ndarray]]:
    """One feed per window of ``texts`` (already normalised as served), cut as the served model cuts them.

    Parameters
    ----------
    tokenizer
        The model's Hugging Face tokenizer.
    texts
        Training sentences only: the scales must not see the texts the model is evaluated on.
    max_length
        Tokens per window.
    lexicon_input
        The model also reads VADER's compound score: each window gets its text's.
    """
    from models.sentiment.model import LEXICON_INPUT, VaderSentiment
    from models.sentiment.windows import make_windows

    ids = tokenizer(list(texts), add_special_tokens=False, truncation=False, verbose=False)["input_ids"]
    windows = make_windows(ids, max_length=max_length, prefix=[tokenizer.cls_token_id], suffix=[tokenizer.sep_token_id])
    compound = VaderSentiment().compound(texts) if lexicon_input else None
    feeds = []
    for k, row in enumerate(windows.ids):
        window = np.array([row], dtype=np.int64)
        feed = {"input_ids": window, "attention_mask": np.ones_like(window), "token_type_ids": np.zeros_like(window)}
        if compound is not None:
            feed[LEXICON_INPUT] = np.array([[compound[windows.owner[k]]]], dtype=np.float32)
        feeds.append(feed)
    return feeds
