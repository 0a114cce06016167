"""Rewrite onnxruntime's fused BERT attention into int8-friendly projections and the standard ``Attention`` op.

The BERT optimiser fuses each self-attention block into one ``com.microsoft.Attention`` node (packed Q/K/V
weights, a mask index), which dynamic quantisation turns into ``QAttention``. On this CPU that kernel was the
largest share of the int8 model's time (session 7): it runs 3 x batch x heads tiny int8 GEMMs, packing the
input again for every one, and its fp32 core is slower than the standard ``Attention`` kernel (opset 23) at
the model's shapes (BENCHMARKS-audio.md, Speed, session 8). Here each fused node becomes three ``MatMul`` +
``Add`` projections, which quantise to onnxruntime's large int8 GEMMs (the input quantised once for all
three), and one ``Attention`` that reads Q, K and V as (batch, tokens, hidden) with the padding mask of
the input, so no transpose and no packed-QKV split is needed.
"""

from __future__ import annotations

from typing import Any

import numpy as np

ATTENTION_OPSET = 23  # the first opset with the standard Attention op (onnxruntime >= 1.23 runs it on CPU)
MASK_INPUT = "attention_mask"
_MASK = "attention_additive_mask"


def _attribute(node: Any, name: str) -> Any:
    from onnx import helper

    return next(helper.get_attribute_value(a) for a in node.attribute if a.name == name)


def _mask_nodes(mask_input: str) -> list[Any]:
    """(batch, 1, tokens, tokens) float mask, 0 where a key is a token and the lowest float where it is padding,
    built once per call from the (batch, tokens) 0/1 mask; every layer's Attention reads it."""
    from onnx import helper, numpy_helper

    largest = np.finfo(np.float32).max

    def const(name: str, value: np.ndarray) -> Any:
        return helper.make_node("Constant", [], [name], value=numpy_helper.from_array(value, name))

    p = "attention_mask_"
    return [
        const(p + "one", np.array(1.0, np.float32)),
        const(p + "largest", np.array(largest, np.float32)),
        const(p + "axes", np.array([1, 2], np.int64)),
        const(p + "unit", np.array([1], np.int64)),
        helper.make_node("Cast", [mask_input], [p + "float"], to=1),
        helper.make_node("Sub", [p + "float", p + "one"], [p + "off"]),
        helper.make_node("Mul", [p + "off", p + "largest"], [p + "add"]),  # 0 for a token, the lowest float for padding
        helper.make_node("Unsqueeze", [p + "add", p + "axes"], [p + "b11s"]),
        helper.make_node("Shape", [mask_input], [p + "batch"], end=1),
        helper.make_node("Shape", [mask_input], [p + "tokens"], start=1, end=2),
        helper.make_node("Concat", [p + "batch", p + "unit", p + "tokens", p + "tokens"], [p + "target"], axis=0),
        helper.make_node("Expand", [p + "b11s", p + "target"], [_MASK]),
    ]


def unfuse_attention(model: Any, mask_input: str = MASK_INPUT) -> int:
    """Replace every ``com.microsoft.Attention`` node of ``model`` (in place) by Q/K/V projections and an ONNX
    ``Attention``; returns how many were replaced.

    The fused node's mask index is dropped: the padding mask comes from the graph input ``mask_input`` (1 for a
    token, 0 for padding), so padding may sit anywhere, not only at the end. The default-domain opset is raised
    to ``ATTENTION_OPSET``.

    Parameters
    ----------
    model
        An ``onnx.ModelProto`` after onnxruntime's BERT fusions (``optimize_model``), with fp32 weights.
    mask_input
        The name of the graph's (batch, tokens) attention-mask input.
    """
    from onnx import helper, numpy_helper

    graph = model.graph
    if mask_input not in {i.name for i in graph.input}:
        raise ValueError(f"the graph has no {mask_input!r} input to mask padding with")
    weights = {i.name: i for i in graph.initializer}
    nodes: list[Any] = []
    replaced = 0
    for node in graph.node:
        if node.op_type != "Attention" or node.domain != "com.microsoft":
            nodes.append(node)
            continue
        heads = int(_attribute(node, "num_heads"))
        x, w_name, b_name = node.input[0], node.input[1], node.input[2]
        w, b = numpy_helper.to_array(weights[w_name]), numpy_helper.to_array(weights[b_name])
        hidden = w.shape[1] // 3
        name = node.name or f"attention_{replaced}"
        projected = []
        for k, part in enumerate("qkv"):
            cols = slice(k * hidden, (k + 1) * hidden)
            graph.initializer.extend([numpy_helper.from_array(np.ascontiguousarray(w[:, cols]), f"{name}_{part}_weight"),
                                      numpy_helper.from_array(np.ascontiguousarray(b[cols]), f"{name}_{part}_bias")])
            nodes += [helper.make_node("MatMul", [x, f"{name}_{part}_weight"], [f"{name}_{part}_matmul"],
                                       name=f"{name}_{part}_MatMul"),
                      helper.make_node("Add", [f"{name}_{part}_matmul", f"{name}_{part}_bias"], [f"{name}_{part}"],
                                       name=f"{name}_{part}_Add")]
            projected.append(f"{name}_{part}")
        nodes.append(helper.make_node("Attention", [*projected, _MASK], [node.output[0]], name=f"{name}_sdpa",
                                      q_num_heads=heads, kv_num_heads=heads))
        graph.initializer.remove(weights[w_name])
        graph.initializer.remove(weights[b_name])
        replaced += 1
    if replaced:
        del graph.node[:]
        graph.node.extend(_mask_nodes(mask_input) + nodes)
        for opset in model.opset_import:
            if opset.domain in ("", "ai.onnx"):
                opset.version = max(opset.version, ATTENTION_OPSET)
    return replaced
