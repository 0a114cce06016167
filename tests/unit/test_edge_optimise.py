"""The per-class optimisation pipeline: every variant is built and measured, each class gets the smallest that fits."""

from __future__ import annotations

from pathlib import Path

import pytest

np = pytest.importorskip("numpy")
onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from edge_agent.inference.local import LocalInference  # noqa: E402
from edge_agent.inference.optimise import VARIANTS, ClassTarget, Variant, choose, optimise, parse_target  # noqa: E402


def test_variants_are_built_measured_and_loadable(tmp_path: Path) -> None:
    report = optimise(tmp_path, (ClassTarget("rpi4", 0.9), ClassTarget("strict", 1.0)), repeats=3)
    by_name = {v["name"]: v for v in report["variants"]}
    assert list(by_name) == list(VARIANTS)
    assert by_name["fp32"]["agreement"] == 1.0 and by_name["fp32"]["flagged"] > 0
    ops = {name: {n.op_type for n in onnx.load(v["path"]).graph.node} for name, v in by_name.items()}
    assert "MatMulInteger" in ops["int8-dynamic"] and "QuantizeLinear" in ops["int8-static"]
    assert "Gather" in ops["pruned50-fp32"] and "Gather" not in ops["fp32"]
    pruned = {i.name: i for i in onnx.load(by_name["pruned50-fp32"]["path"]).graph.initializer}["ar_weights"]
    assert pruned.dims[0] < 15  # the pruned lags are gone, not zeros
    for v in report["variants"]:
        assert v["size_bytes"] > 0 and v["latency_us"] > 0 and 0 < v["agreement"] <= 1
    assert report["chosen"]["strict"] in {n for n, v in by_name.items() if v["agreement"] == 1.0}
    cfg = type("Cfg", (), {"model_path": tmp_path / "rpi4.onnx", "threshold": 4.0, "send": "raw",
                           "scarce_backlog": 10, "providers": []})
    assert LocalInference(cfg).window == 16


def test_choose_takes_the_smallest_within_each_class_bounds() -> None:
    vs = [Variant("fp32", "a", 1000, 1.0, 1.0, 10), Variant("small", "b", 500, 2.0, 0.96, 10),
          Variant("tiny", "c", 100, 9.0, 0.90, 10)]
    chosen = choose(vs, (ClassTarget("loose", 0.85), ClassTarget("pi", 0.95, 5.0), ClassTarget("exact", 1.0),
                         ClassTarget("impossible", 1.0, 0.5)))
    assert {k: v.name for k, v in chosen.items()} == {"loose": "tiny", "pi": "small", "exact": "fp32",
                                                      "impossible": "fp32"}



@pytest.mark.parametrize("text", ["../escaped=0.9", "nested/class=0.9", "/abs=0.9", "=0.9"])
def test_a_class_that_is_not_a_plain_file_name_is_refused_before_the_build(text: str, tmp_path: Path) -> None:
    """The class names ``<class>.onnx``: a '/' would write outside the output folder or fail after the build."""
    with pytest.raises(RuntimeError, match="letters, digits"):
        parse_target(text)
    with pytest.raises(ValueError, match="letters, digits"):
        optimise(tmp_path / "out", (ClassTarget(text.partition("=")[0], 0.9),))
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize("name", VARIANTS)
def test_a_class_named_like_a_variant_is_refused(name: str) -> None:
    """``<class>.onnx`` would overwrite that variant's own file (and copying a file onto itself fails)."""
    with pytest.raises(RuntimeError, match="would overwrite the variant"):
        parse_target(f"{name}=0.9")
