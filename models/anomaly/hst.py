"""HalfSpaceTrees compiled: river's ``MinMaxScaler() | HalfSpaceTrees`` scores, from arrays and a numba kernel.

river's own pipeline (``hst_river.py``, ``hst-river``) spends about 50 CPU seconds per million readings in
Python; this one gives the same score for every reading of the same stream. The trees' shape is what river
draws from ``seed``: river builds the trees once per ``(n_trees, height, seed)`` and their split
thresholds are copied into one array shared by every series (the trees split one feature, ``x``, so a
threshold is all a split holds). Nodes are laid out in river's depth-first order (``iter_dfs``): a node's
left child follows it, its right child follows the left subtree. Per series the state is the scaler's min
and max, the window counter and every node's two masses (int32, allocated on the first reading, as river
builds its trees on the first reading).

Scores equal river's to the bit: river sums integer masses times powers of two into a float, every partial
sum is an integer below 2**53 and so exact, and ``1 - score / max_score`` is the same float division here.
Both share one snapshot layout (``HalfSpaceTreesBase``): a snapshot of ``hst`` taken while it was river's
pipeline restores into this one.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import cache
from typing import Any

import numpy as np

from models.anomaly._array import NAMED_VERSION, STATE_FORMAT, as_inputs, read_snapshot
from models.anomaly._jit import lazy_njit
from models.anomaly.base import AnomalyDetector
from models.checkpoint import pack_array, unpack_array

SCALARS = ("seen", "x_min", "x_max", "built", "counter", "first_window")
X_MIN, X_MAX, COUNTER, FIRST_WINDOW = range(4)


def _hst_kernel(values, thresholds, masses, st, window_size, out):  # pragma: no cover - compiled
    n_trees, per_tree = thresholds.shape
    height = 0
    while (2 << height) - 1 < per_tree:
        height += 1
    size_limit = 0.1 * window_size
    max_score = float(n_trees * window_size * per_tree)
    lo, hi, counter, first_window = st[X_MIN], st[X_MAX], int(st[COUNTER]), st[FIRST_WINDOW] != 0.0
    for i in range(values.shape[0]):
        x = values[i]
        s = 0.0
        if not first_window:
            d = hi - lo
            xs = (x - lo) / d if d != 0.0 else 0.0
            score = 0.0
            for t in range(n_trees):
                base, node, span, depth_pow = t * per_tree, 0, per_tree, 1
                tree_score = 0.0
                stopped = False
                for _ in range(height):
                    r = masses[base + node, 1]
                    tree_score += r * depth_pow
                    if r < size_limit:
                        stopped = True
                        break
                    span = (span - 1) // 2
                    node += 1 if xs < thresholds[t, node] else 1 + span
                    depth_pow <<= 1
                if not stopped:
                    tree_score += masses[base + node, 1] * depth_pow
                score += tree_score
            s = min(max(1.0 - score / max_score, 0.0), 1.0)
        out[i] = s
        if x < lo:
            lo = x
        if x > hi:
            hi = x
        d = hi - lo
        xs = (x - lo) / d if d != 0.0 else 0.0
        for t in range(n_trees):
            base, node, span = t * per_tree, 0, per_tree
            for _ in range(height):
                masses[base + node, 0] += 1
                span = (span - 1) // 2
                node += 1 if xs < thresholds[t, node] else 1 + span
            masses[base + node, 0] += 1
        counter += 1
        if counter == window_size:
            for j in range(masses.shape[0]):
                masses[j, 1] = masses[j, 0]
                masses[j, 0] = 0
            first_window = False
            counter = 0
    st[X_MIN], st[X_MAX], st[COUNTER], st[FIRST_WINDOW] = lo, hi, float(counter), 1.0 if first_window else 0.0


_kernel = lazy_njit(_hst_kernel)


@cache
def split_thresholds(n_trees: int, height: int, seed: int) -> np.ndarray:
    """The trees river draws from ``seed``, as each node's split threshold in depth-first order (NaN at leaves).

    Parameters
    ----------
    n_trees
        Number of trees.
    height
        Height of each tree.
    seed
        river's seed for the trees' random splits.
    """
    from river import anomaly

    trees = anomaly.HalfSpaceTrees(n_trees=n_trees, height=height, seed=seed)
    trees.learn_one({"x": 0.0})  # river draws the trees on the first reading, from the seed alone
    out = np.array([[getattr(node, "threshold", np.nan) for node in tree.iter_dfs()] for tree in trees.trees])
    out.setflags(write=False)
    return out


class HalfSpaceTreesBase(AnomalyDetector):
    """What river's HalfSpaceTrees (``hst-river``) and the compiled one (``hst``) share: their parameters and
    their snapshot, ``SCALARS`` and every node's ``(l_mass, r_mass)`` as int32 in river's depth-first node
    order (none before the trees are built).

    Parameters
    ----------
    n_trees
        Number of trees.
    height
        Height of each tree (``2 ** (height + 1) - 1`` nodes).
    window_size
        Readings per mass window.
    seed
        Seeds the trees' random splits (river draws them; every series with the same parameters shares them).
    threshold
        Score at or above which a reading is anomalous.
    """

    def __init__(
        self, n_trees: int = 10, height: int = 8, window_size: int = 250, seed: int = 42, threshold: float = 0.7
    ) -> None:
        if n_trees < 1 or height < 0 or window_size < 1:
            raise ValueError(f"n_trees and window_size must be >= 1 and height >= 0, got {n_trees}, {window_size}, {height}")
        self.n_trees, self.height, self.window_size, self.seed = int(n_trees), int(height), int(window_size), int(seed)
        self.threshold = float(threshold)
        self._reset()

    def _reset(self) -> None:
        """Start afresh: no reading seen."""
        raise NotImplementedError

    @property
    def _nodes(self) -> int:
        return self.n_trees * (2 ** (self.height + 1) - 1)

    def _pack(self, scalars: Mapping[str, float], masses: np.ndarray | None) -> dict[str, Any]:
        packed = np.zeros((0, 2), dtype="<i4") if masses is None else masses.astype("<i4", copy=False)
        return {
            "format": STATE_FORMAT,
            "version": NAMED_VERSION,
            "detector": self.name,
            "scalars": {k: scalars[k] for k in SCALARS},
            "buffers": {"masses": pack_array(packed)},
        }

    def _unpack(self, state: Any) -> tuple[dict[str, float], np.ndarray | None]:
        """A snapshot's scalars and masses (None if the trees were not built yet), or a ``ValueError``.

        Version 0 held a pickled river pipeline, which is refused: unpickling a checkpoint would run whatever
        code its writer put there. Flags must be 0 or 1 and the counter a count below ``window_size``.
        """
        name = self.name
        if isinstance(state, Mapping) and set(state) == {"model"}:
            raise ValueError(f"{name}: snapshot state version 0 holds a pickled river object, which eddyline no "
                             "longer loads (unpickling runs code from the checkpoint); start this series afresh")
        scalars, buffers = read_snapshot(name, state, SCALARS, ("masses",))
        for flag in ("seen", "built", "first_window"):
            if scalars[flag] not in (0.0, 1.0):
                raise ValueError(f"{name}: scalar {flag!r} is {scalars[flag]!r}, not 0 or 1")
        counter = scalars["counter"]
        if not (0.0 <= counter < self.window_size and counter == int(counter)):
            raise ValueError(f"{name}: scalar 'counter' is {counter!r}, not a count below window_size "
                             f"{self.window_size}")
        built = scalars["built"] == 1.0
        masses = unpack_array(buffers["masses"], f"{name}: buffer 'masses'", "<i4", (self._nodes if built else 0, 2))
        return scalars, masses if built else None

    def params(self) -> dict[str, Any]:
        return {
            "n_trees": self.n_trees,
            "height": self.height,
            "window_size": self.window_size,
            "seed": self.seed,
            "threshold": self.threshold,
        }


class HalfSpaceTrees(HalfSpaceTreesBase):
    """river's ``preprocessing.MinMaxScaler() | anomaly.HalfSpaceTrees`` on the single feature ``x``, compiled.

    Examples
    --------
    >>> import numpy as np
    >>> det = HalfSpaceTrees(window_size=50)
    >>> scores = det.score_learn(np.r_[np.arange(100) % 2 * 10.0, 5.0], np.arange(101))  # 0, 10, 0, ..., then 5
    >>> float(scores[0]), round(float(scores[-2]), 2), bool(scores[-1] >= det.threshold)
    (0.0, 0.5, True)
    """

    name = "hst"

    def _reset(self) -> None:
        self._s = np.array([np.inf, -np.inf, 0.0, 1.0])
        self._masses: np.ndarray | None = None

    def score_learn(self, values: np.ndarray, timestamps: np.ndarray) -> np.ndarray:
        v, _ = as_inputs(values, timestamps)
        out = np.empty(v.shape[0], dtype=np.float64)
        if v.shape[0]:
            if self._masses is None:
                self._masses = np.zeros((self._nodes, 2), dtype=np.int32)
            thresholds = split_thresholds(self.n_trees, self.height, self.seed)
            _kernel(v, thresholds, self._masses, self._s, self.window_size, out)
        return out

    def state_nbytes(self) -> int:
        """Bytes of live state per series: the four scalars and the node masses (none before the first reading)."""
        return self._s.nbytes + (0 if self._masses is None else self._masses.nbytes)

    def snapshot(self) -> dict[str, Any]:
        """Plain data (``HalfSpaceTreesBase``); about 41 KB with the default 10 trees of height 8."""
        seen = bool(np.isfinite(self._s[X_MIN]))
        st = self._s.tolist()
        return self._pack({
            "seen": int(seen),
            "x_min": st[X_MIN] if seen else 0.0,
            "x_max": st[X_MAX] if seen else 0.0,
            "built": int(self._masses is not None),
            "counter": int(st[COUNTER]),
            "first_window": int(st[FIRST_WINDOW]),
        }, self._masses)

    def restore(self, state: dict[str, Any]) -> None:
        """Load a snapshot of ``hst`` (this one's or river's wrapper's before ``hst`` was compiled, the same
        layout); anything else is a ``ValueError`` and leaves the detector as it was."""
        scalars, masses = self._unpack(state)
        seen = scalars["seen"] == 1.0
        self._s = np.array([scalars["x_min"] if seen else np.inf, scalars["x_max"] if seen else -np.inf,
                            scalars["counter"], scalars["first_window"]])
        self._masses = None if masses is None else masses.astype(np.int32)
