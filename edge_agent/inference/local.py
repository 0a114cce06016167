"""Scoring batches on the device and, when bandwidth is scarce, sending summaries plus anomalous readings.

Each sealed batch is scored in one ONNX Runtime call across all its sensors. A reading needs ``W - 1``
earlier readings of its sensor for a score, so the last ones are carried from batch to batch; until a
sensor has them its readings count as normal. In ``summary`` mode (or ``auto`` while the backlog exceeds
``scarce_backlog`` batches) each sensor's readings become ``<sensor>.min``, ``.max``, ``.mean`` and
``.count`` at the batch's last timestamp, and only the anomalous raw readings are kept under their own
sensor name. Raw batches say which readings the model flagged (``sensor_batch`` v2 ``local_flags``).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from edge_agent.inference.model import SHIPPED
from edge_agent.sources.base import Chunk
from schemas.flags import pack_flags

log = logging.getLogger(__name__)

PREFERRED = ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]


def choose_providers(available: list[str], wanted: list[str]) -> list[str]:
    """The configured providers that exist here, else TensorRT, CUDA, CPU in that order; CPU always last."""
    order = [p for p in (wanted or PREFERRED) if p in available]
    if "CPUExecutionProvider" not in order:
        order.append("CPUExecutionProvider")
    return order


class LocalInference:
    """Scores batches with one ONNX model; one instance per model, so a swap is replacing the instance.

    Parameters
    ----------
    cfg
        The ``[edge.inference]`` settings (threshold, send mode, providers, the model path).
    model
        The model's bytes (a model received from the models topic); None loads ``cfg.model_path``.
    version
        The version reported in health events; by default the model file's name without its suffix.
    """

    def __init__(self, cfg: Any, model: bytes | None = None, version: str | None = None) -> None:
        try:
            import numpy as np
            import onnxruntime as ort
        except ImportError:
            raise RuntimeError(
                "inference is enabled but onnxruntime is not installed; pip install 'eddyline[edge-onnx]' "
                "(onnxruntime-gpu on a Jetson) or set [edge.inference] enabled = false"
            ) from None
        self._np = np
        self.model_path = Path(cfg.model_path) if cfg.model_path else SHIPPED
        if model is None and not self.model_path.is_file():
            raise RuntimeError(
                f"no ONNX model at {self.model_path}; build one with `eddyline-edge build-model --out PATH`"
            )
        self.version = version or self.model_path.stem
        self.threshold = cfg.threshold
        self.send = cfg.send
        self.scarce_backlog = cfg.scarce_backlog
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 1  # small batches: a thread pool costs more memory than it saves time
        opts.inter_op_num_threads = 1
        self.providers = choose_providers(ort.get_available_providers(), list(cfg.providers))
        source = model if model is not None else str(self.model_path)
        self.session = ort.InferenceSession(source, opts, providers=self.providers)
        self.providers = self.session.get_providers()
        shape = self.session.get_inputs()[0].shape
        if len(shape) != 2 or not isinstance(shape[1], int):
            raise RuntimeError(f"{self.version}: expected an input of shape [n, window], got {shape}")
        self.window = shape[1]
        try:  # one window as ``score`` feeds it: a model that loads but cannot score is refused before any swap
            out = np.asarray(self.session.run(None, {"x": np.zeros((1, self.window), dtype=np.float32)})[0])
        except Exception as exc:  # onnxruntime raises its own types
            raise RuntimeError(f"{self.version}: cannot score a window ({exc})") from None
        if out.shape != (1, 1):
            raise RuntimeError(f"{self.version}: expected an output of shape [n, 1], got {list(out.shape)} for n = 1")
        self._history: dict[str, Any] = {}
        self.scored = 0
        self.anomalies = 0
        log.info("local inference: %s (window %d) on %s", self.version, self.window, self.providers[0])

    def take_history(self, other: LocalInference) -> None:
        """Carry the readings ``other`` kept for its next windows, so a swapped-in model scores from the first batch."""
        if other.window >= self.window:
            self._history = {k: v[len(v) - self.window + 1 :] for k, v in other._history.items()}

    def score(self, series: list[Chunk]) -> list[Any]:
        """Scores per reading for each chunk (0 where a sensor lacks history yet), one session run in all."""
        np = self._np
        w = self.window
        blocks, spans = [], []
        for c in series:
            values = np.asarray(c.values, dtype=np.float32)
            hist = self._history.get(c.sensor)
            full = values if hist is None else np.concatenate([hist, values])
            self._history[c.sensor] = full[len(full) - w + 1 :].copy()  # not full[-(w - 1):]: all of it when w is 1
            n_scored = max(0, len(full) - w + 1)
            n_scored = min(n_scored, len(values))
            if n_scored:
                blocks.append(np.lib.stride_tricks.sliding_window_view(full, w)[-n_scored:])
            spans.append((len(values), n_scored))
        flat = (
            self.session.run(None, {"x": np.ascontiguousarray(np.concatenate(blocks))})[0][:, 0]
            if blocks
            else np.zeros(0, dtype=np.float32)
        )
        out, at = [], 0
        for n, n_scored in spans:
            s = np.zeros(n, dtype=np.float32)
            s[n - n_scored :] = flat[at : at + n_scored]
            at += n_scored
            out.append(s)
        self.scored += sum(n for n, _ in spans)
        return out

    def apply(self, series: list[Chunk], backlog: int = 0) -> list[Chunk]:
        """The chunks to send: raw ones carry this model's flags (so the platform can measure agreement),
        summarised ones do not (their raw readings are gone)."""
        scores = self.score(series)
        flags = [s > self.threshold for s in scores]
        self.anomalies += int(sum(int(f.sum()) for f in flags))
        summarise = self.send == "summary" or (self.send == "auto" and backlog > self.scarce_backlog)
        if not summarise:
            for c, flag in zip(series, flags):
                c.flags = pack_flags(flag)
            return series
        out: list[Chunk] = []
        for c, flag in zip(series, flags):
            ts = c.timestamps[-1]
            out.append(Chunk(f"{c.sensor}.min", c.unit, [ts], [min(c.values)]))
            out.append(Chunk(f"{c.sensor}.max", c.unit, [ts], [max(c.values)]))
            out.append(Chunk(f"{c.sensor}.mean", c.unit, [ts], [sum(c.values) / len(c.values)]))
            out.append(Chunk(f"{c.sensor}.count", "count", [ts], [float(len(c.values))]))
            idx = self._np.flatnonzero(flag)
            if len(idx):
                out.append(Chunk(c.sensor, c.unit, [c.timestamps[i] for i in idx], [c.values[i] for i in idx]))
        return out
