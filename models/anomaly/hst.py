"""river's HalfSpaceTrees behind our contract: the per-reading Python baseline every speed claim is measured against.

Values are min-max scaled online (river's MinMaxScaler) because HalfSpaceTrees assumes features in [0, 1].
"""

from __future__ import annotations

import pickle
from typing import Any

import numpy as np

from models.anomaly._array import as_inputs
from models.anomaly.base import AnomalyDetector


class HalfSpaceTrees(AnomalyDetector):
    name = "hst"

    def __init__(
        self, n_trees: int = 10, height: int = 8, window_size: int = 250, seed: int = 42, threshold: float = 0.7
    ) -> None:
        from river import anomaly, preprocessing

        self.n_trees, self.height, self.window_size, self.seed = int(n_trees), int(height), int(window_size), int(seed)
        self.threshold = float(threshold)
        self._model = preprocessing.MinMaxScaler() | anomaly.HalfSpaceTrees(
            n_trees=self.n_trees, height=self.height, window_size=self.window_size, seed=self.seed
        )

    def score_learn(self, values: np.ndarray, timestamps: np.ndarray) -> np.ndarray:
        v, _ = as_inputs(values, timestamps)
        out = np.empty(v.shape[0], dtype=np.float64)
        model = self._model
        for i, x in enumerate(v.tolist()):
            features = {"x": x}
            out[i] = model.score_one(features)
            model.learn_one(features)
        np.clip(out, 0.0, 1.0, out=out)
        return out

    def snapshot(self) -> dict[str, Any]:
        return {"model": pickle.dumps(self._model, protocol=pickle.HIGHEST_PROTOCOL)}

    def restore(self, state: dict[str, Any]) -> None:
        self._model = pickle.loads(state["model"])

    def params(self) -> dict[str, Any]:
        return {
            "n_trees": self.n_trees,
            "height": self.height,
            "window_size": self.window_size,
            "seed": self.seed,
            "threshold": self.threshold,
        }
