"""river's HalfSpaceTrees behind our contract (``hst-river``): the per-reading Python baseline every speed
claim is measured against, and the reference ``hst`` (the compiled one in ``hst.py``) must score exactly like.

Values are min-max scaled online (river's MinMaxScaler) because HalfSpaceTrees assumes features in [0, 1].

Its snapshot is plain data, not a pickled river object: the scaler's min and max, the trees' window
counter, and every node's masses. The trees' shape (split features and thresholds) is not stored: river
draws it from ``seed`` when the first reading is learnt, so ``restore`` rebuilds the same trees from the
parameters and loads the masses into them (``_first_window`` is river's own flag, read and set by name).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from models.anomaly._array import as_inputs
from models.anomaly.hst import HalfSpaceTreesBase


class RiverHalfSpaceTrees(HalfSpaceTreesBase):
    """river's ``preprocessing.MinMaxScaler() | anomaly.HalfSpaceTrees`` on the single feature ``x``, one reading
    at a time in Python (parameters: ``HalfSpaceTreesBase``)."""

    name = "hst-river"

    def _reset(self) -> None:
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

    def _node_objects(self) -> list[Any]:
        return [node for tree in self._trees.trees for node in tree.iter_dfs()]

    def snapshot(self) -> dict[str, Any]:
        """Plain data (see the module docstring), in the layout ``hst`` shares; about 41 KB with the defaults."""
        seen = "x" in self._scaler.min
        built = bool(self._trees.trees)
        masses = np.array([(node.l_mass, node.r_mass) for node in self._node_objects()], dtype="<i4").reshape(-1, 2)
        return self._pack({
            "seen": int(seen),
            "x_min": float(self._scaler.min["x"].get()) if seen else 0.0,
            "x_max": float(self._scaler.max["x"].get()) if seen else 0.0,
            "built": int(built),
            "counter": int(self._trees.counter),
            "first_window": int(self._trees._first_window),
        }, masses if built else None)

    def restore(self, state: dict[str, Any]) -> None:
        """Load a snapshot (``HalfSpaceTreesBase._unpack`` says what it refuses)."""
        scalars, masses = self._unpack(state)
        self._reset()
        if scalars["seen"] == 1.0:
            self._scaler.min["x"].update(scalars["x_min"])
            self._scaler.max["x"].update(scalars["x_max"])
        if masses is not None:
            self._trees.learn_one({"x": 0.0})  # river builds the trees (from ``seed``) on the first reading
            for node, (left, right) in zip(self._node_objects(), masses.tolist(), strict=True):
                node.l_mass, node.r_mass = left, right
        self._trees.counter = int(scalars["counter"])
        self._trees._first_window = scalars["first_window"] == 1.0
