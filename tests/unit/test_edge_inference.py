"""On-device scoring: the int8 ONNX model flags readings that break their pattern, and summaries shrink batches."""

from __future__ import annotations

import math
import random
from pathlib import Path
from types import SimpleNamespace

import pytest

np = pytest.importorskip("numpy")
ort = pytest.importorskip("onnxruntime")
onnx = pytest.importorskip("onnx")

from edge_agent.inference.local import LocalInference, choose_providers  # noqa: E402
from edge_agent.inference.model import SHIPPED, build_graph, build_model, fit, synthetic_normal  # noqa: E402
from edge_agent.sources import Chunk  # noqa: E402


def cfg(**kw: object) -> SimpleNamespace:
    base = {"model_path": None, "threshold": 4.0, "send": "raw", "scarce_backlog": 10, "providers": []}
    return SimpleNamespace(**{**base, **kw})


def signal(n: int, seed: int, spikes: dict[int, float] | None = None) -> list[float]:
    rng = random.Random(seed)
    v = [40 + 2 * math.sin(i / 40) + 0.01 * i + rng.gauss(0, 0.1) for i in range(n)]
    for i, size in (spikes or {}).items():
        v[i] += size
    return v


@pytest.fixture(scope="module")
def int8_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_model(tmp_path_factory.mktemp("model") / "m.onnx")


def test_model_is_int8_and_agrees_with_float(int8_model: Path, tmp_path: Path) -> None:
    ops = {n.op_type for n in onnx.load(int8_model).graph.node}
    assert "MatMulInteger" in ops and "DynamicQuantizeLinear" in ops
    weights, bias, sigma = fit(synthetic_normal(), 16)
    fp32 = tmp_path / "fp32.onnx"
    onnx.save(build_graph(weights, bias, sigma), fp32)
    x = np.lib.stride_tricks.sliding_window_view(np.array(signal(3000, 1, {2000: 4.0}), dtype=np.float32), 16)
    x = np.ascontiguousarray(x)
    q = ort.InferenceSession(str(int8_model)).run(None, {"x": x})[0][:, 0]
    f = ort.InferenceSession(str(fp32)).run(None, {"x": x})[0][:, 0]
    assert np.corrcoef(q, f)[0, 1] > 0.98
    assert set(np.flatnonzero(q > 4)) == set(np.flatnonzero(f > 4))


def test_spikes_are_flagged_and_normal_readings_are_not(int8_model: Path) -> None:
    spikes = {800: 2.5, 1900: -3.0, 2700: 2.0}
    inf = LocalInference(cfg(model_path=int8_model))
    values = signal(3000, 2, spikes)
    scores = inf.score([Chunk("t", "c", list(range(3000)), values)])[0]
    flagged = set(np.flatnonzero(scores > 4.0))
    assert set(spikes) <= flagged
    assert len(flagged - set(spikes)) <= 0.005 * 3000


def test_history_carries_across_batches() -> None:
    values = signal(500, 3)
    whole = LocalInference(cfg()).score([Chunk("t", None, list(range(500)), values)])[0]
    split = LocalInference(cfg())
    a = split.score([Chunk("t", None, list(range(200)), values[:200])])[0]
    b = split.score([Chunk("t", None, list(range(200, 500)), values[200:])])[0]
    assert (b[:15] > 0).all()  # the second batch's first readings were scored with the first batch's tail
    # int8 activations are quantised per run, so scores differ slightly with how readings are grouped
    assert np.allclose(np.concatenate([a, b]), whole, atol=0.1)
    assert (whole[:15] == 0).all()  # too little history for the first readings


def test_a_model_of_one_reading_keeps_no_history() -> None:
    from onnx import TensorProto, helper

    graph = helper.make_graph([helper.make_node("Abs", ["x"], ["score"])], "per-reading",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 1])],
                              [helper.make_tensor_value_info("score", TensorProto.FLOAT, ["n", 1])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 9
    inf = LocalInference(cfg(), model=model.SerializeToString(), version="abs")
    for start in range(0, 3000, 100):
        scores = inf.score([Chunk("t", None, list(range(start, start + 100)), [-1.0] * 100)])[0]
    assert (scores == 1.0).all() and len(inf._history["t"]) == 0  # nothing to carry: the device's memory stays flat


def test_summary_mode_keeps_only_anomalous_readings() -> None:
    inf = LocalInference(cfg(send="summary"))
    values = signal(1000, 4, {900: 3.0})
    out = {c.sensor: c for c in inf.apply([Chunk("temp", "celsius", list(range(1000)), values)])}
    assert out["temp.count"].values == [1000.0] and out["temp.count"].unit == "count"
    assert out["temp.max"].values == [max(values)] and out["temp.min"].timestamps == [999]
    assert 900 in out["temp"].timestamps and len(out["temp"].values) <= 5
    assert inf.anomalies == len(out["temp"].values)


def test_auto_mode_summarises_only_while_the_backlog_is_large() -> None:
    inf = LocalInference(cfg(send="auto", scarce_backlog=10))
    chunk = Chunk("v", None, list(range(100)), signal(100, 5))
    assert inf.apply([chunk], backlog=3) == [chunk]
    assert {c.sensor for c in inf.apply([chunk], backlog=50)} >= {"v.min", "v.max", "v.mean", "v.count"}


def test_provider_choice_prefers_accelerators() -> None:
    gpu = ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]
    assert choose_providers(gpu, []) == gpu
    assert choose_providers(["CPUExecutionProvider"], []) == ["CPUExecutionProvider"]
    assert choose_providers(gpu, ["CUDAExecutionProvider"]) == ["CUDAExecutionProvider", "CPUExecutionProvider"]


def test_shipped_model_loads_and_missing_model_says_how_to_build() -> None:
    assert SHIPPED.is_file() and LocalInference(cfg()).window == 16
    with pytest.raises(RuntimeError, match="eddyline-edge build-model"):
        LocalInference(cfg(model_path="/nonexistent/m.onnx"))


def test_agent_sends_summaries_when_told(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, defaults_config: Path) -> None:
    import sqlite3

    from connectors.broker import free_port
    from connectors.kafka import KafkaSettings
    from edge_agent.agent import Agent
    from edge_agent.settings import EdgeSettings
    from schemas import SENSOR_BATCH, AvroSerde

    edge = EdgeSettings(
        device_id="pi",
        buffer_path=tmp_path / "b.sqlite",
        batch_max_age_s=0.2,
        sources=[{"kind": "simulated", "rate": 500, "sensors": 2, "interval_s": 0.05}],
        inference={"enabled": True, "send": "summary"},
    )
    agent = Agent.from_settings(edge, KafkaSettings(bootstrap_servers=f"127.0.0.1:{free_port()}"))
    agent.run(duration=0.8, shutdown_flush_s=0.1)
    rows = sqlite3.connect(tmp_path / "b.sqlite").execute("SELECT payload FROM batches").fetchall()
    batches = [AvroSerde().decode(p, SENSOR_BATCH) for (p,) in rows]
    sensors = {s["sensor"] for b in batches for s in b["series"]}
    assert {"simulated.s0.mean", "simulated.s1.count"} <= sensors
    counted = sum(s["values"][0] for b in batches for s in b["series"] if s["sensor"].endswith(".count"))
    assert counted == agent.sampled  # every sampled reading is accounted for in a summary
    assert agent.inference.scored == agent.sampled


def test_build_model_refuses_bad_input_with_what_to_do(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from edge_agent.cli import main

    out = str(tmp_path / "m.onnx")
    assert main(["build-model", "--out", out, "--window", "2"]) == 2
    assert "window must be at least 4" in capsys.readouterr().err
    for name, text in (("no_sensor.csv", "timestamp,value\n1,2.0\n"), ("bad_value.csv", "timestamp,sensor,value\n1,t,hot\n"),
                       ("short.csv", "timestamp,sensor,value\n1,t,2.0\n")):
        (tmp_path / name).write_text(text)
        assert main(["build-model", "--out", out, "--csv", str(tmp_path / name)]) == 2, name
        err = capsys.readouterr().err
        assert err.startswith("eddyline-edge: --csv") and "timestamp,sensor,value" in err, err
