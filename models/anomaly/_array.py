"""The shared shape of our array detectors: a compiled kernel over named parameters and compact state.

Parameters and scalar state are float64 vectors read by name: ``p[PARAM.alpha]``, ``st[STATE.mean]``,
where ``PARAM`` and ``STATE`` are IntEnums (``fields``) that numba compiles to constant indices. Why not
a NamedTuple or a structured record: measured here, a call taking a NamedTuple of 28 fields cost 2.8 us
against 0.5 us with a float64 vector instead, and one taking two one-record structured arrays 2.4 us (12 us
with aligned dtypes) against 0.7 us, and the flow calls kernels with small batches. So too the buffers
(the windows, the likelihood history's block sums, seasonal tables), each sized to what the series needs,
share one float64 block ``mem`` that the kernel slices at the offsets ``p[PARAM.at_<buffer>]``. A snapshot
is the scalar vector (with its count, the layout) and ``mem`` as little-endian bytes (``snapshot``), versioned,
without pickle: the buffers' shapes follow from the scalars and parameters, so a restore recomputes them and
checks the sizes.
"""

from __future__ import annotations

import inspect
import itertools
import math
from collections.abc import Mapping, Sequence
from enum import IntEnum
from functools import cache
from types import MappingProxyType
from typing import Any, ClassVar

import numpy as np

from models.anomaly._jit import LazyJit
from models.anomaly._steps import history_rows
from models.anomaly.base import AnomalyDetector
from models.checkpoint import unpack_array

STATE_FORMAT = "eddyline.anomaly-detector"
STATE_VERSION = 3
"""Version 3: ``"layout"`` the number of scalars the snapshot holds (the first that many of the detector's
``scalars``, which only ever grow by appending, ``ArrayDetector.appended``), ``"scalars"`` that many and ``"mem"``
the buffer block, each little-endian float64 bytes (two byte strings, not a dict per name: encoding a device's
state at every epoch is the live flow's cost). The layout is read strictly: scalars of another size than it
names are refused, never taken for an older layout.
Version 2 (``BLOCKS_VERSION``) was version 3 without ``"layout"``: its layout is told by its size alone, so it
restores only at the sizes of layouts that were written (``ArrayDetector.appended``; a current-size one
included). Version 1 (``NAMED_VERSION``) held scalars by name and each buffer packed; array detectors still
restore it, and HalfSpaceTrees still write it. Version 0 was one flat float64 vector under ``"state"``: array
detectors convert it (``_legacy.py``)."""
BLOCKS_VERSION = 2
NAMED_VERSION = 1
_ZEROS = np.zeros(4096)  # as_inputs' finiteness check; never written
_ZEROS.flags.writeable = False


def as_inputs(values: Any, timestamps: Any) -> tuple[np.ndarray, np.ndarray]:
    """Validate one batch: 1-D, same length, finite values. Bad input is an error, never a silent skip."""
    v = np.ascontiguousarray(values, dtype=np.float64)
    t = np.ascontiguousarray(timestamps, dtype=np.int64)
    if v.ndim != 1 or t.ndim != 1:
        raise ValueError(f"values and timestamps must be 1-D, got shapes {v.shape} and {t.shape}")
    if v.shape[0] != t.shape[0]:
        raise ValueError(f"values and timestamps differ in length: {v.shape[0]} != {t.shape[0]}")
    n = v.shape[0]
    # v . 0 is 0 for finite values and NaN as soon as one is NaN or infinite: one call, no temporary array.
    # vdot, not dot: dot checks the floating-point flags afterwards and warns (RuntimeWarning, "invalid value")
    # on the inf * 0 it was asked to find, a stray warning beside the error below. vdot costs ~0.13 us more a call
    # (median 0.69 vs 0.56 us at 50 values, load 4.4); np.errstate around dot, or np.isfinite, cost several us.
    if np.vdot(v, _ZEROS[:n] if n <= _ZEROS.shape[0] else np.zeros(n)) != 0.0:
        bad = int(np.flatnonzero(~np.isfinite(v))[0])
        raise ValueError(f"value at position {bad} is not finite ({float(v[bad])})")
    return v, t


def check_rates(**rates: float) -> None:
    """EWMA rates live in (0, 1]."""
    for name, rate in rates.items():
        if not 0.0 < rate <= 1.0:
            raise ValueError(f"{name} must be in (0, 1], got {rate}")


def check_at_least(minimum: float, **values: float) -> None:
    for name, value in values.items():
        if value < minimum:
            raise ValueError(f"{name} must be >= {minimum}, got {value}")


def check_positive(**values: float) -> None:
    for name, value in values.items():
        if value <= 0:
            raise ValueError(f"{name} must be positive, got {value}")


def check_fraction(**values: float) -> None:
    for name, value in values.items():
        if not 0.0 <= value <= 1.0:
            raise ValueError(f"{name} must be in [0, 1], got {value}")


def fields(name: str, names: Sequence[str]) -> type[IntEnum]:
    """Named positions in a kernel's float64 vector (``p[PARAM.alpha]``); numba compiles them to constants."""
    return IntEnum(name, [(n, i) for i, n in enumerate(names)])  # type: ignore[return-value]


def kernel_fields(params: Sequence[str], buffers: Sequence[str]) -> type[IntEnum]:
    """A kernel's parameter vector: its parameters, then each buffer's offset in ``mem`` (``at_<buffer>``)
    and the end of the last (``at_end``)."""
    return fields("PARAM", [*params, *(f"at_{b}" for b in buffers), "at_end"])


class ArrayDetector(AnomalyDetector):
    """A detector whose logic is ``kernel(values, timestamps, start, params, scalars, mem, out)``.

    The kernel scores then learns ``values[start:]`` and returns the index it stopped at: the length of the
    batch, or earlier when the series needs a buffer it does not have yet (``_grow`` allocates it, and the
    kernel resumes there). Constructor arguments are the parameters: ``_configure`` stores each as an
    attribute of its default's type, and ``kernel_params`` names those the kernel reads. ``scalars`` names
    the scalar state fields; ``buffers`` the arrays laid out in that order in ``mem``, buffer ``b`` from
    ``p[PARAM.at_b]`` to the next one's offset (``_steps.part``). Buffers are float64, or int64 bit sets.

    Scalars are only ever appended, each new one at the end of ``scalars`` and of ``appended``: a snapshot of
    an older layout (``scalars`` less a tail of ``appended``) restores with the scalars it lacks at 0, so 0
    must mean "as before the scalar existed".
    """

    kernel: ClassVar[LazyJit]
    kernel_params: ClassVar[tuple[str, ...]]
    scalars: ClassVar[tuple[str, ...]]
    buffers: ClassVar[tuple[str, ...]] = ()
    appended: ClassVar[tuple[str, ...]] = ()

    def _buffer_shapes(self) -> dict[str, tuple[str, tuple[int, ...]]]:
        """Dtype and shape of each buffer for the current scalar state (empty until the series needs one)."""
        return {}

    def _grow(self) -> None:
        """Allocate what the kernel stopped for; only detectors whose kernel stops override it."""
        raise RuntimeError(f"{self.name}: kernel stopped early but the detector allocates nothing")

    def _configure(self, args: dict[str, Any]) -> None:
        """Called by a subclass ``__init__`` with its ``locals()``, after validating them."""
        defaults = _defaults(type(self))
        for name, default in defaults.items():
            setattr(self, name, type(default)(args[name]))
        self._p = np.zeros(len(self.kernel_params) + len(self.buffers) + 1)
        self._p[: len(self.kernel_params)] = [getattr(self, name) for name in self.kernel_params]
        self._s = np.zeros(len(self.scalars))
        self._set_buffers({name: np.zeros(shape, dtype) for name, (dtype, shape) in self._buffer_shapes().items()})

    def _set_buffers(self, buffers: dict[str, np.ndarray]) -> None:
        """Lay ``buffers`` out in one fresh ``mem`` block and record their offsets in the parameter vector."""
        self._mem = np.empty(sum(buffers[name].size for name in self.buffers), dtype=np.float64)
        self._set_offsets([buffers[name].size for name in self.buffers])
        for name, view in self._views().items():
            view[...] = buffers[name]

    def _set_offsets(self, sizes: Sequence[int]) -> None:
        """Record each buffer's offset in ``mem`` (and the end) in a new parameter vector, from their sizes.

        The parameter vector is never changed in place, so copies of a detector and the explainer's state from
        before a batch share it instead of copying it per series and per batch."""
        first = len(self.kernel_params)
        p = self._p.copy()
        p[first : first + len(sizes) + 1] = [0, *itertools.accumulate(sizes)]
        self._p = p

    def _views(self, names: Sequence[str] | None = None) -> dict[str, np.ndarray]:
        """Buffers (all, or ``names``) as named views into ``mem``, made on demand: a fleet keeps no view
        objects per series."""
        shapes, offsets = self._buffer_shapes(), self._p[len(self.kernel_params) :].astype(np.int64).tolist()
        return {
            name: self._mem[offsets[i] : offsets[i + 1]].view(shapes[name][0]).reshape(shapes[name][1])
            for i, name in enumerate(self.buffers)
            if names is None or name in names
        }

    def _flat(self, name: str, dtype: str = "<f8") -> np.ndarray:
        """One 1-D buffer as a view into ``mem``, read from its offsets alone: ``_views`` lays out every buffer's
        shape first (about 10 us; an alert's explanation asks for a few buffers)."""
        at = len(self.kernel_params) + self.buffers.index(name)
        flat = self._mem[int(self._p[at]) : int(self._p[at + 1])]
        return flat if dtype == "<f8" else flat.view(dtype)

    def params(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in _defaults(type(self))}

    def _copy(self) -> ArrayDetector:
        """This detector with its own copy of the state: what ``make_detector`` hands out of a pristine one built
        once per parameter set (validating and laying out a ``seasonal`` costs about 100 us, a copy a few). The
        parameter vector is shared: nothing changes it in place (``_set_offsets`` replaces it)."""
        new = object.__new__(type(self))
        new.__dict__.update(self.__dict__)
        new._s, new._mem = self._s.copy(), self._mem.copy()
        return new

    def score_learn(self, values: np.ndarray, timestamps: np.ndarray) -> np.ndarray:
        v, t = as_inputs(values, timestamps)
        n = v.shape[0]
        out = np.empty(n, dtype=np.float64)
        done = 0
        while done < n:
            done = self.kernel(v, t, done, self._p, self._s, self._mem, out)
            if done < n:
                self._grow()
        return out

    def state_nbytes(self) -> int:
        """Bytes of live state: the scalar record plus the buffers (what a fleet multiplies per series)."""
        return self._s.nbytes + self._mem.nbytes

    def snapshot(self) -> dict[str, Any]:
        """Plain data: ``{"format", "version": 3, "detector", "layout": int, "scalars": bytes, "mem": bytes}``."""
        return {
            "format": STATE_FORMAT,
            "version": STATE_VERSION,
            "detector": self.name,
            "layout": len(self.scalars),
            "scalars": self._s.astype("<f8", copy=False).tobytes(),
            "mem": self._mem.astype("<f8", copy=False).tobytes(),
        }

    def restore(self, state: dict[str, Any]) -> None:
        """Load a snapshot of version 3, 2, 1 or 0 (the older ones converted); anything else is a ``ValueError``
        that says what was wrong, and the detector keeps its state."""
        if isinstance(state, Mapping) and set(state) == {"state"}:
            from models.anomaly._legacy import from_version_0

            self._restore_named(*from_version_0(self, state["state"]))
            return
        version = check_envelope(self.name, state, (NAMED_VERSION, BLOCKS_VERSION, STATE_VERSION))
        if version == NAMED_VERSION:
            names = state.get("scalars")
            layout = len(names) if isinstance(names, Mapping) and len(names) in self._layouts() else len(self.scalars)
            self._restore_named(*read_snapshot(self.name, state, self.scalars[:layout], self.buffers))
        else:
            self._restore_blocks(state, version)

    def _layouts(self) -> range:
        """Scalar counts of the layouts this detector restores: ``scalars`` less a tail of ``appended``."""
        return range(len(self.scalars) - len(self.appended), len(self.scalars) + 1)

    def _restore_blocks(self, state: Mapping[str, Any], version: int) -> None:
        """Versions 3 and 2: the scalar vector (of the layout version 3 names, or the one version 2's size
        gives), then ``mem`` checked against the sizes those scalars give."""
        keys = {"format", "version", "detector", "scalars", "mem"} | ({"layout"} if version == STATE_VERSION else set())
        if set(state) != keys:
            raise ValueError(f"{self.name}: unexpected snapshot keys {sorted(map(str, state))} for state version "
                             f"{version} (expected {sorted(keys)})")
        layout = state.get("layout") if version == STATE_VERSION else _v2_layout(state["scalars"], self._layouts())
        if type(layout) is not int or layout not in self._layouts():
            raise ValueError(f"{self.name}: snapshot layout {layout!r} is not one this eddyline reads (scalar counts "
                             f"{', '.join(map(str, self._layouts()))}); restore it with the eddyline that wrote it, "
                             "or start the series afresh")
        scalars = np.zeros(len(self.scalars))
        scalars[:layout] = _float64s(self.name, "scalars", state["scalars"], layout)
        _check_counts(self.name, dict(zip(self.scalars, scalars.tolist())))
        previous = self._s
        self._s = scalars
        try:
            shapes = self._buffer_shapes()
            sizes = [math.prod(shapes[b][1]) for b in self.buffers]
            mem = _float64s(self.name, "mem", state["mem"], sum(sizes))
        except ValueError:
            self._s = previous
            raise
        self._set_offsets(sizes)
        self._mem = mem

    def _restore_named(self, scalars: dict[str, float], buffers: dict[str, Any]) -> None:
        """Versions 1 and 0 (converted): scalars by name (those of an older layout lacking the rest of
        ``appended``, restored at 0) and each buffer packed."""
        _check_counts(self.name, scalars)
        previous = self._s
        scalars = {**dict.fromkeys(self.appended, 0.0), **scalars}
        self._s = np.array([scalars[name] for name in self.scalars], dtype=np.float64)
        try:
            shapes = self._buffer_shapes()
            loaded = {
                name: unpack_array(buffers[name], f"{self.name}: buffer {name!r}", dtype, shape)
                for name, (dtype, shape) in shapes.items()
            }
        except ValueError:
            self._s = previous
            raise
        self._set_buffers(loaded)


def check_envelope(detector: str, state: Any, versions: tuple[int, ...]) -> int:
    """Check a snapshot's format, version (one of ``versions``) and detector; return its version.

    Parameters
    ----------
    detector
        The name the snapshot must carry (and error messages start with).
    state
        The snapshot, as decoded: anything, nothing in it is executed.
    versions
        The state versions the caller reads; any other is a ``ValueError`` that names them.
    """
    if not isinstance(state, Mapping):
        raise ValueError(f"{detector}: a snapshot is a mapping, got {type(state).__name__}")
    if state.get("format") != STATE_FORMAT:
        raise ValueError(f"{detector}: not an eddyline detector snapshot (format {state.get('format')!r}, "
                         f"expected {STATE_FORMAT!r}; keys {sorted(map(str, state))})")
    version = state.get("version")
    if type(version) is not int or version not in versions:
        raise ValueError(f"{detector}: snapshot state version {version!r} is not one this eddyline reads "
                         f"(it reads version {' or '.join(map(str, versions))}); restore it with the eddyline that "
                         "wrote it, or start the series afresh")
    if state.get("detector") != detector:
        raise ValueError(f"{detector}: snapshot is of detector {state.get('detector')!r}")
    return version


def read_snapshot(
    detector: str, state: Any, scalars: tuple[str, ...], buffers: tuple[str, ...]
) -> tuple[dict[str, float], dict[str, Any]]:
    """Check a version-1 snapshot's envelope and names; return its scalars (as floats) and packed buffers.

    Anything else (another format, version or detector, missing or extra names, a non-number) is a
    ``ValueError`` that says what was found; nothing in it is executed.
    """
    check_envelope(detector, state, (NAMED_VERSION,))
    if set(state) != {"format", "version", "detector", "scalars", "buffers"}:
        raise ValueError(f"{detector}: unexpected snapshot keys {sorted(map(str, state))}")
    values, packed = state["scalars"], state["buffers"]
    if not isinstance(values, Mapping) or set(values) != set(scalars):
        raise ValueError(f"{detector}: scalars must be exactly {', '.join(scalars)}")
    for name, value in values.items():
        if type(value) not in (int, float):
            raise ValueError(f"{detector}: scalar {name!r} is {type(value).__name__}, not a number")
    if not isinstance(packed, Mapping) or set(packed) != set(buffers):
        raise ValueError(f"{detector}: buffers must be exactly {', '.join(buffers) or 'none'}")
    return {k: float(v) for k, v in values.items()}, dict(packed)


_COUNTS = ("n", "s_n", "step", "res_n", "res_n2")  # kernels index buffers with these: never NaN or negative


def _check_counts(detector: str, scalars: Mapping[str, float]) -> None:
    for name in _COUNTS:
        if name in scalars and not 0.0 <= scalars[name] < 2.0**53:
            raise ValueError(f"{detector}: scalar {name!r} is {scalars[name]!r}, not a count or step")


def _v2_layout(data: Any, layouts: range) -> int:
    """The layout of a version-2 snapshot, which does not name it: its scalar count when that is one of
    ``layouts`` (anything else is the current layout, and ``_float64s`` refuses its size)."""
    count = len(data) // 8 if isinstance(data, (bytes, bytearray, memoryview)) and len(data) % 8 == 0 else -1
    return count if count in layouts else layouts[-1]


def _float64s(detector: str, what: str, data: Any, count: int) -> np.ndarray:
    """``count`` little-endian float64s from ``data`` as a fresh writable array, or a ``ValueError``."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise ValueError(f"{detector}: snapshot {what!r} must be bytes, got {type(data).__name__}")
    if len(data) != 8 * count:
        raise ValueError(f"{detector}: snapshot {what!r} holds {len(data)} bytes, but this detector's parameters "
                         f"and scalars need {8 * count} ({count} float64s); restore it with the parameters it was "
                         "written with, or start afresh")
    return np.frombuffer(data, dtype="<f8").astype(np.float64)


@cache
def _defaults(cls: type) -> Mapping[str, Any]:
    """Constructor parameters and their defaults, read once per class (``inspect.signature`` costs more than
    scoring a small batch)."""
    params = inspect.signature(cls.__init__).parameters
    return MappingProxyType({name: p.default for name, p in params.items() if name != "self"})


def likelihood_buffers(short: int, history: int, block: int) -> dict[str, tuple[str, tuple[int, ...]]]:
    """The likelihood layer's buffers: the last ``short`` surprises and the block sums of its history."""
    return {"short": ("<f8", (short,)), "hist": ("<f8", (history_rows(history, block), 2))}

