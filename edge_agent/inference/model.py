"""The on-device anomaly model: a standardised-residual scorer, built as ONNX and quantised to int8.

For each window of ``W`` readings of one sensor the graph standardises the first ``W - 1`` by their own
mean and spread, predicts the last one with a linear autoregression learned from normal data, and
returns the absolute prediction error in units of the residual spread seen in training. A reading that
breaks its recent pattern scores high whatever the sensor's scale, so one model serves every sensor.

Building needs numpy, onnx and onnxruntime (a development machine); running needs only onnxruntime.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

DEFAULT_WINDOW = 16
SHIPPED = Path(__file__).with_name("residual_w16_int8.onnx")


def _windows(series: list[Any], window: int) -> Any:
    import numpy as np

    rows = [
        np.lib.stride_tricks.sliding_window_view(np.asarray(s, dtype=np.float64), window)
        for s in series
        if len(s) >= window
    ]
    if not rows:
        raise ValueError(f"no training series has {window} readings; give longer series or a smaller window")
    return np.concatenate(rows)


def _standardise(windows: Any) -> tuple[Any, Any]:
    import numpy as np

    past, last = windows[:, :-1], windows[:, -1]
    mean = past.mean(axis=1, keepdims=True)
    std = np.maximum(past.std(axis=1, keepdims=True), np.abs(mean) * 1e-3 + 1e-6)
    return (past - mean) / std, (last - mean[:, 0]) / std[:, 0]


def synthetic_normal(n_series: int = 64, length: int = 2_000, seed: int = 7) -> list[Any]:
    """Normal behaviour for training when no recorded data is given: slow cycles, drifts and sensor noise."""
    import numpy as np

    rng = np.random.default_rng(seed)
    out = []
    t = np.arange(length)
    for _ in range(n_series):
        period = rng.uniform(50, 2_000)
        signal = rng.uniform(0.5, 5) * np.sin(2 * np.pi * t / period + rng.uniform(0, 6.3))
        drift = np.cumsum(rng.normal(0, rng.uniform(0.001, 0.05), length))
        noise = rng.normal(0, rng.uniform(0.01, 0.5), length)
        out.append(rng.uniform(-50, 100) + signal + drift + noise)
    return out


def training_windows_from_csv(path: Path) -> list[Any]:
    """Series per sensor from a CSV with ``timestamp,sensor,value`` (the agent's CSV replay format)."""
    import numpy as np

    from edge_agent.sources.replay import parse_timestamp

    by_sensor: dict[str, list[tuple[int, float]]] = {}
    with Path(path).open(newline="") as f:
        for row in csv.DictReader(f):
            by_sensor.setdefault(row["sensor"], []).append((parse_timestamp(row["timestamp"]), float(row["value"])))
    return [np.array([v for _, v in sorted(rows)]) for rows in by_sensor.values()]


def fit(series: list[Any], window: int) -> tuple[Any, float, float]:
    """Autoregression weights, intercept and residual spread on standardised windows (least squares)."""
    import numpy as np

    zpast, zlast = _standardise(_windows(series, window))
    design = np.hstack([zpast, np.ones((len(zpast), 1))])
    coef, *_ = np.linalg.lstsq(design, zlast, rcond=None)
    resid = zlast - design @ coef
    return coef[:-1], float(coef[-1]), float(resid.std())


def build_graph(weights: Any, bias: float, sigma: float, lags: Any = None) -> Any:
    """The float32 ONNX graph: input ``x`` [N, W] float32, output ``score`` [N, 1].

    ``lags`` (a pruned model) names the lags the weights belong to; the window is then ``max(lags) + 2``
    unless ``weights`` covers all of them.
    """
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    w = len(weights) + 1 if lags is None else int(max(lags)) + 2
    init = [
        numpy_helper.from_array(np.asarray(weights, dtype=np.float32).reshape(-1, 1), "ar_weights"),
        numpy_helper.from_array(np.array([bias], dtype=np.float32), "ar_bias"),
        numpy_helper.from_array(np.array([sigma], dtype=np.float32), "sigma"),
        numpy_helper.from_array(np.array([1e-3], dtype=np.float32), "rel_floor"),
        numpy_helper.from_array(np.array([1e-6], dtype=np.float32), "abs_floor"),
        numpy_helper.from_array(np.array([0], dtype=np.int64), "zero"),
        numpy_helper.from_array(np.array([w - 1], dtype=np.int64), "wm1"),
        numpy_helper.from_array(np.array([w], dtype=np.int64), "w"),
        numpy_helper.from_array(np.array([1], dtype=np.int64), "axis1"),
    ]
    if lags is not None:
        init.append(numpy_helper.from_array(np.asarray(lags, dtype=np.int64), "lags"))
    n = helper.make_node
    nodes = [
        n("Slice", ["x", "zero", "wm1", "axis1"], ["past"]),
        n("Slice", ["x", "wm1", "w", "axis1"], ["last"]),
        n("ReduceMean", ["past", "axis1"], ["mean"], keepdims=1),
        n("Sub", ["past", "mean"], ["centred"]),
        n("Mul", ["centred", "centred"], ["sq"]),
        n("ReduceMean", ["sq", "axis1"], ["var"], keepdims=1),
        n("Sqrt", ["var"], ["std_raw"]),
        n("Abs", ["mean"], ["abs_mean"]),
        n("Mul", ["abs_mean", "rel_floor"], ["rel"]),
        n("Add", ["rel", "abs_floor"], ["floor"]),
        n("Max", ["std_raw", "floor"], ["std"]),
        n("Div", ["centred", "std"], ["zpast" if lags is None else "zpast_all"]),
        n("Sub", ["last", "mean"], ["last_c"]),
        n("Div", ["last_c", "std"], ["zlast"]),
        *([] if lags is None else [n("Gather", ["zpast_all", "lags"], ["zpast"], axis=1)]),
        n("MatMul", ["zpast", "ar_weights"], ["pred_w"]),
        n("Add", ["pred_w", "ar_bias"], ["pred"]),
        n("Sub", ["zlast", "pred"], ["resid"]),
        n("Abs", ["resid"], ["abs_resid"]),
        n("Div", ["abs_resid", "sigma"], ["score"]),
    ]
    graph = helper.make_graph(
        nodes,
        "eddyline_residual_scorer",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", w])],
        [helper.make_tensor_value_info("score", TensorProto.FLOAT, ["n", 1])],
        init,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], producer_name="eddyline-edge")
    model.ir_version = 9  # readable by onnxruntime 1.18 and later
    model.doc_string = f"window={w}"
    return model


def build_model(out: Path, *, window: int = DEFAULT_WINDOW, series: list[Any] | None = None) -> Path:
    """Fit on ``series`` (synthetic normal data by default), export float32, quantise weights to int8."""
    import tempfile

    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    if window < 4:
        raise ValueError("window must be at least 4 readings")
    weights, bias, sigma = fit(series if series is not None else synthetic_normal(), window)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as d:
        fp32 = Path(d) / "fp32.onnx"
        model = build_graph(weights, bias, sigma)
        onnx.checker.check_model(model)
        onnx.save(model, fp32)
        quantize_dynamic(fp32, out, weight_type=QuantType.QInt8, op_types_to_quantize=["MatMul"])
    return out
