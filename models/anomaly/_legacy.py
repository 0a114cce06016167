"""Reading state version 0: before compact state, an array detector's whole state was one flat float64
vector under ``"state"``, every buffer at its full size (seasonal tables included), the likelihood history as
``history`` single values. ``from_version_0`` converts that vector into version 1's scalars and buffers.

The conversion is exact while fewer than ``history`` surprises were seen (the block sums are those of the
same values, added in the same order). After that, the block being retired has lost values that version 0
no longer holds; its sums are taken as those of its remaining values scaled to the whole block, so the
running sums still lose exactly the retained values (scores then differ from version 0's in the far digits).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from models.anomaly._steps import HEAD, bit_words, history_rows
from models.checkpoint import pack_array


def from_version_0(det: Any, flat: Any) -> tuple[dict[str, float], dict[str, Any]]:
    """Version 1's ``(scalars, packed buffers)`` for ``det`` (an ``_array.ArrayDetector``) from a version-0
    flat state vector."""
    try:
        vec = np.asarray(flat, dtype=np.float64)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{det.name}: state version 0 must be a flat float vector ({e})") from None
    layout = _layout(det)
    size = sum(n for _, n in layout)
    if vec.shape != (size,):
        raise ValueError(f"{det.name}: state version 0 has shape {vec.shape}, but this detector's parameters give "
                         f"({size},); restore it with the parameters it was written with, or start afresh")
    parts: dict[str, np.ndarray] = {}
    at = 0
    for name, n in layout:
        parts[name] = vec[at : at + n]
        at += n
    nscalar = len(det.scalars)
    scalars = {name: float(x) for name, x in zip(det.scalars, parts["scalars"][:nscalar])}
    buffers: dict[str, np.ndarray] = {}
    if "short" in parts:
        k = int(scalars["n"])
        buffers["short"] = parts["short"].copy()
        buffers["hist"] = _blocks(parts["hist"], k, det.history, det.history_block)
    if "window" in parts:
        buffers["window"] = parts["window"].copy()
    if det.name == "seasonal":
        buffers.update(_seasonal(det, scalars, parts))
    return scalars, {name: pack_array(a) for name, a in buffers.items()}


def _layout(det: Any) -> list[tuple[str, int]]:
    if det.name == "gauss":
        return [("scalars", 3)]
    out = [("scalars", len(HEAD) if det.name == "likelihood" else len(HEAD) + (3 if det.name == "robust" else 17)),
           ("short", det.short), ("hist", det.history)]
    if det.name in ("robust", "seasonal"):
        out.append(("window", det.window))
    if det.name == "seasonal":
        out += [("slot_mean", det.slots), ("slot_count", det.slots), ("s_short", det.short), ("s_hist", det.history),
                ("spike_last", det.spike_bins)]
        if det.period2_ms > 0:
            out += [("slot_mean2", det.slots), ("slot_count2", det.slots)]
    return out


def _blocks(ring: np.ndarray, k: int, history: int, block: int) -> np.ndarray:
    """Block sums (``_steps.likelihood_step``) of the last ``min(k, history)`` averages held in ``ring``."""
    rows = history_rows(history, block)
    blocks = np.zeros((rows, 2))
    lo = max(0, k - history)
    for j in range(lo, k):
        v = float(ring[j % history])
        r = (j // block) % rows
        blocks[r, 0] += v
        blocks[r, 1] += v * v
    kept = min(block - lo % block, k - lo)
    if lo % block and kept:
        blocks[(lo // block) % rows] *= block / kept
    return blocks


def _seasonal(det: Any, scalars: dict[str, float], parts: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    ns, ns2 = det._cycles(scalars["step"])
    cycle = ns + ns2 > 0
    out = {
        "slot_mean": parts["slot_mean"][:ns].copy(),
        "slot_seen": _bits(parts["slot_count"][:ns] >= 1.0),
        "slot_mean2": parts["slot_mean2"][:ns2].copy() if ns2 else np.zeros(0),
        "slot_seen2": _bits(parts["slot_count2"][:ns2] >= 1.0) if ns2 else np.zeros(0, np.int64),
        "s_short": parts["s_short"].copy() if cycle else np.zeros(0),
        "s_hist": _blocks(parts["s_hist"], int(scalars["s_n"]), det.history, det.history_block) if cycle
        else np.zeros((0, 2)),
        "spike_last": parts["spike_last"].copy() if ns else np.zeros(0),
    }
    return out


def _bits(flags: np.ndarray) -> np.ndarray:
    """Flags as the kernels' bit set: bit ``i % 64`` of int64 word ``i // 64``."""
    packed = np.packbits(flags, bitorder="little")
    words = np.zeros(bit_words(flags.size) * 8, dtype=np.uint8)
    words[: packed.size] = packed
    return words.view("<i8")
