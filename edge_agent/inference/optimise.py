"""Making the edge model small and fast per device class: build variants, measure them, pick one per class.

Variants of the same fitted scorer: float32; int8 with dynamic quantisation (weights int8, activations
quantised at run time); int8 with static quantisation (activations calibrated on normal windows, QDQ);
and pruned (the autoregression keeps its largest half of lags, refitted on those and gathered in the graph,
then float32 or dynamic int8). Each is measured for file size, latency per window on this CPU with one thread (the stand-in for a
Raspberry Pi 4 core), and agreement with float32: the Jaccard overlap of the windows each flags above the
threshold, on held-out series with injected spikes. Per device class the smallest variant within the
class's agreement and latency bounds is chosen.

Building needs numpy, onnx and onnxruntime (a development machine), like ``model.build_model``.
"""

from __future__ import annotations

import re
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from edge_agent.inference.model import DEFAULT_WINDOW, _standardise, _windows, build_graph, fit, synthetic_normal

_CLASS_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
# What ``build_variants`` writes as ``<variant>.onnx`` beside the classes' files.
VARIANTS = ("fp32", "int8-dynamic", "int8-static", "pruned50-fp32", "pruned50-int8-dynamic")


@dataclass(frozen=True)
class ClassTarget:
    """What a device class asks of its model.

    Parameters
    ----------
    name
        The device class, as agents report it (``device_class``): letters, digits, ``.``, ``_`` and ``-``,
        as it names the file ``<class>.onnx``.
    min_agreement
        Lowest acceptable Jaccard overlap with the float32 model's flags.
    max_latency_us
        Highest acceptable latency per window, measured here with one thread.
    """

    name: str
    min_agreement: float
    max_latency_us: float = float("inf")

    def __post_init__(self) -> None:
        if not _CLASS_NAME.fullmatch(self.name):
            raise ValueError(f"device class {self.name!r} names the file <class>.onnx in the output folder: "
                             "use letters, digits, '.', '_' and '-' only")
        if self.name in VARIANTS:
            raise ValueError(f"device class {self.name!r} would overwrite the variant of that name in the output "
                             f"folder: choose a name other than {', '.join(VARIANTS)}")


def parse_target(text: str) -> ClassTarget:
    """``CLASS=AGREEMENT[:LATENCY_US]`` (the ``--target`` option) as a ``ClassTarget``.

    Examples
    --------
    >>> from edge_agent.inference.optimise import parse_target
    >>> parse_target("rpi4=0.95:40")
    ClassTarget(name='rpi4', min_agreement=0.95, max_latency_us=40.0)
    """
    name, _, bounds = text.partition("=")
    agreement, _, latency = bounds.partition(":")
    try:
        target = ClassTarget(name.strip(), float(agreement), float(latency) if latency else float("inf"))
    except ValueError as exc:
        raise RuntimeError(f"--target {text!r}: {exc}; give CLASS=AGREEMENT[:LATENCY_US], e.g. rpi4=0.95:50") from None
    if not 0 <= target.min_agreement <= 1:
        raise RuntimeError(f"--target {text!r}: the agreement must be between 0 and 1")
    return target


DEFAULT_TARGETS = (
    ClassTarget("rpi4", 0.95, 50.0),
    ClassTarget("jetson-nano", 0.98, 50.0),
    ClassTarget("x86_64", 0.99),
)


@dataclass
class Variant:
    """One built model and what it measured."""

    name: str
    path: str
    size_bytes: int
    latency_us: float  # per window, batch of ``batch`` windows, one thread, median of repeats
    agreement: float  # Jaccard overlap with the float32 flags
    flagged: int  # windows flagged above the threshold


def prune(series: list[Any], window: int, keep: float = 0.5) -> tuple[Any, float, float, Any]:
    """Autoregression on only the largest ``keep`` share of lags (by weight magnitude), refitted on them.

    Returns the kept lags' weights, the intercept, the residual spread and the kept lags (``build_graph``'s
    arguments): the pruned weights are gone from the model, not stored as zeros.
    """
    import numpy as np

    weights, _, _ = fit(series, window)
    kept = np.sort(np.argsort(-np.abs(weights))[: max(1, int(round(len(weights) * keep)))])
    zpast, zlast = _standardise(_windows(series, window))
    design = np.hstack([zpast[:, kept], np.ones((len(zpast), 1))])
    coef, *_ = np.linalg.lstsq(design, zlast, rcond=None)
    return coef[:-1], float(coef[-1]), float((zlast - design @ coef).std()), kept


def evaluation_windows(window: int, seed: int = 11, n_series: int = 16, length: int = 2_000) -> tuple[Any, Any]:
    """Held-out windows (other seed than training) with spikes injected in 1 % of readings, and the spike mask."""
    import numpy as np

    rng = np.random.default_rng(seed)
    rows, truth = [], []
    for s in synthetic_normal(n_series, length, seed=seed):
        s = s.copy()
        idx = rng.choice(np.arange(window, length), size=length // 100, replace=False)
        s[idx] += rng.choice([-1, 1], len(idx)) * rng.uniform(4, 10, len(idx)) * np.std(np.diff(s))
        w = np.lib.stride_tricks.sliding_window_view(s.astype(np.float32), window)
        mask = np.zeros(length, dtype=bool)
        mask[idx] = True
        rows.append(w)
        truth.append(mask[window - 1 :])
    return np.ascontiguousarray(np.concatenate(rows)), np.concatenate(truth)


def _session(path: Path) -> Any:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def _latency_us(path: Path, x: Any, batch: int, repeats: int) -> float:
    import numpy as np

    sess = _session(path)
    chunk = np.ascontiguousarray(x[:batch])
    sess.run(None, {"x": chunk})  # warm up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        sess.run(None, {"x": chunk})
        times.append(time.perf_counter() - t0)
    return float(np.median(times)) / len(chunk) * 1e6


def _calibration(series: list[Any], window: int, n: int = 2_000) -> Any:
    import numpy as np
    from onnxruntime.quantization import CalibrationDataReader

    w = _windows(series, window).astype(np.float32)
    pick = w[np.random.default_rng(0).choice(len(w), size=min(n, len(w)), replace=False)]

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self._batches = iter([{"x": np.ascontiguousarray(pick[i : i + 200])} for i in range(0, len(pick), 200)])

        def get_next(self) -> dict[str, Any] | None:
            return next(self._batches, None)

    return Reader()


def build_variants(
    out_dir: Path,
    *,
    window: int = DEFAULT_WINDOW,
    series: list[Any] | None = None,
    threshold: float = 4.0,
    batch: int = 256,
    repeats: int = 200,
) -> list[Variant]:
    """Build every variant into ``out_dir`` and measure it; the first is float32, the reference.

    Parameters
    ----------
    out_dir
        Where ``<variant>.onnx`` files go.
    window
        Readings per window.
    series
        Normal training series (synthetic by default).
    threshold
        The score above which a window is flagged (the agent's ``[edge.inference] threshold``).
    batch, repeats
        Latency is the median over ``repeats`` runs of ``batch`` windows, divided by ``batch``.
    """
    import onnx
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_dynamic, quantize_static

    series = series if series is not None else synthetic_normal()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    full = build_graph(*fit(series, window))
    pruned = build_graph(*prune(series, window))
    paths: dict[str, Path] = {}
    with tempfile.TemporaryDirectory() as d:
        for name, model in (("fp32", full), ("pruned50-fp32", pruned)):
            onnx.checker.check_model(model)
            paths[name] = out_dir / f"{name}.onnx"
            onnx.save(model, paths[name])
        for src, name in (("fp32", "int8-dynamic"), ("pruned50-fp32", "pruned50-int8-dynamic")):
            paths[name] = out_dir / f"{name}.onnx"
            quantize_dynamic(paths[src], paths[name], weight_type=QuantType.QInt8, op_types_to_quantize=["MatMul"])
        staged = Path(d) / "static.onnx"
        quantize_static(
            paths["fp32"], staged, _calibration(series, window), quant_format=QuantFormat.QDQ,
            activation_type=QuantType.QInt8, weight_type=QuantType.QInt8, op_types_to_quantize=["MatMul"],
        )
        paths["int8-static"] = out_dir / "int8-static.onnx"
        shutil.copyfile(staged, paths["int8-static"])
    x, _ = evaluation_windows(window)
    reference = _session(paths["fp32"]).run(None, {"x": x})[0][:, 0] > threshold
    variants = []
    for name in ("fp32", "int8-dynamic", "int8-static", "pruned50-fp32", "pruned50-int8-dynamic"):
        p = paths[name]
        flags = _session(p).run(None, {"x": x})[0][:, 0] > threshold
        union = int((flags | reference).sum())
        variants.append(Variant(
            name, str(p), p.stat().st_size, _latency_us(p, x, batch, repeats),
            float((flags & reference).sum() / union) if union else 1.0, int(flags.sum()),
        ))
    return variants


def choose(variants: list[Variant], targets: tuple[ClassTarget, ...] = DEFAULT_TARGETS) -> dict[str, Variant]:
    """Per device class, the smallest variant within its bounds (ties: the faster); float32 if none is."""
    out = {}
    for t in targets:
        ok = [v for v in variants if v.agreement >= t.min_agreement and v.latency_us <= t.max_latency_us]
        out[t.name] = min(ok, key=lambda v: (v.size_bytes, v.latency_us)) if ok else variants[0]
    return out


def optimise(out_dir: Path, targets: tuple[ClassTarget, ...] = DEFAULT_TARGETS, **kw: Any) -> dict[str, Any]:
    """Build and measure the variants, copy each class's choice to ``<class>.onnx``, return the report."""
    variants = build_variants(out_dir, **kw)
    chosen = choose(variants, targets)
    for cls, v in chosen.items():
        shutil.copyfile(v.path, Path(out_dir) / f"{cls}.onnx")
    return {
        "variants": [asdict(v) for v in variants],
        "chosen": {cls: v.name for cls, v in chosen.items()},
        "targets": [asdict(t) for t in targets],
    }


def markdown_table(report: dict[str, Any]) -> str:
    """The variants as a Markdown table, with the classes each was chosen for."""
    by_variant: dict[str, list[str]] = {}
    for cls, name in report["chosen"].items():
        by_variant.setdefault(name, []).append(cls)
    lines = ["| variant | size | latency per window (1 thread) | agreement with fp32 | flagged | chosen for |",
             "|---|---|---|---|---|---|"]
    for v in report["variants"]:
        lines.append(f"| {v['name']} | {v['size_bytes']:,} B | {v['latency_us']:.2f} µs | {v['agreement']:.3f} | "
                     f"{v['flagged']} | {', '.join(by_variant.get(v['name'], [])) or '-'} |")
    return "\n".join(lines)
