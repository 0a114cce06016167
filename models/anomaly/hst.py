"""river's HalfSpaceTrees behind our contract: the per-reading Python baseline every speed claim is measured against.

Values are min-max scaled online (river's MinMaxScaler) because HalfSpaceTrees assumes features in [0, 1].

Its snapshot is plain data, not a pickled river object: the scaler's min and max, the trees' window
counter, and every node's masses. The trees' shape (split features and thresholds) is not stored: river
draws it from ``seed`` when the first reading is learnt, so ``restore`` rebuilds the same trees from the
parameters and loads the masses into them (``_first_window`` is river's own flag, read and set by name).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from models.anomaly._array import STATE_FORMAT, STATE_VERSION, as_inputs, read_snapshot
from models.anomaly.base import AnomalyDetector
from models.checkpoint import pack_array, unpack_array

_SCALARS = ("seen", "x_min", "x_max", "built", "counter", "first_window")


class HalfSpaceTrees(AnomalyDetector):
    """river's ``preprocessing.MinMaxScaler() | anomaly.HalfSpaceTrees`` on the single feature ``x``.

    Parameters
    ----------
    n_trees
        Number of trees.
    height
        Height of each tree (``2 ** (height + 1) - 1`` nodes).
    window_size
        Readings per mass window.
    seed
        Seeds the trees' random splits (and so their shape, which snapshots rely on).
    threshold
        Score at or above which a reading is anomalous.
    """

    name = "hst"

    def __init__(
        self, n_trees: int = 10, height: int = 8, window_size: int = 250, seed: int = 42, threshold: float = 0.7
    ) -> None:
        self.n_trees, self.height, self.window_size, self.seed = int(n_trees), int(height), int(window_size), int(seed)
        self.threshold = float(threshold)
        self._build()

    def _build(self) -> None:
        from river import anomaly, preprocessing

        self._scaler = preprocessing.MinMaxScaler()
        self._trees = anomaly.HalfSpaceTrees(
            n_trees=self.n_trees, height=self.height, window_size=self.window_size, seed=self.seed
        )
        self._model = self._scaler | self._trees

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

    def _nodes(self) -> list[Any]:
        return [node for tree in self._trees.trees for node in tree.iter_dfs()]

    def snapshot(self) -> dict[str, Any]:
        """Plain data (see the module docstring); about 41 KB with the default 10 trees of height 8."""
        seen = "x" in self._scaler.min
        masses = np.array([(node.l_mass, node.r_mass) for node in self._nodes()], dtype="<i4").reshape(-1, 2)
        return {
            "format": STATE_FORMAT,
            "version": STATE_VERSION,
            "detector": self.name,
            "scalars": {
                "seen": int(seen),
                "x_min": float(self._scaler.min["x"].get()) if seen else 0.0,
                "x_max": float(self._scaler.max["x"].get()) if seen else 0.0,
                "built": int(bool(self._trees.trees)),
                "counter": int(self._trees.counter),
                "first_window": int(self._trees._first_window),
            },
            "buffers": {"masses": pack_array(masses)},
        }

    def restore(self, state: dict[str, Any]) -> None:
        """Load a version-1 snapshot. Version 0 held a pickled river pipeline, which is refused: unpickling
        a checkpoint would run whatever code its writer put there."""
        if isinstance(state, Mapping) and set(state) == {"model"}:
            raise ValueError("hst: snapshot state version 0 holds a pickled river object, which eddyline no longer "
                             "loads (unpickling runs code from the checkpoint); start this series afresh")
        scalars, buffers = read_snapshot(self.name, state, _SCALARS, ("masses",))
        built = scalars["built"] == 1.0
        nodes = self.n_trees * (2 ** (self.height + 1) - 1) if built else 0
        masses = unpack_array(buffers["masses"], "hst: buffer 'masses'", "<i4", (nodes, 2))
        self._build()
        if scalars["seen"] == 1.0:
            self._scaler.min["x"].update(scalars["x_min"])
            self._scaler.max["x"].update(scalars["x_max"])
        if built:
            self._trees.learn_one({"x": 0.0})  # river builds the trees (from ``seed``) on the first reading
            for node, (left, right) in zip(self._nodes(), masses.tolist(), strict=True):
                node.l_mass, node.r_mass = left, right
        self._trees.counter = int(scalars["counter"])
        self._trees._first_window = scalars["first_window"] == 1.0

    def params(self) -> dict[str, Any]:
        return {
            "n_trees": self.n_trees,
            "height": self.height,
            "window_size": self.window_size,
            "seed": self.seed,
            "threshold": self.threshold,
        }
