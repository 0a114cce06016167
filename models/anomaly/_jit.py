"""Lazy numba compilation, so that importing a detector module never imports numba.

A kernel may call other ``lazy_njit`` functions (the shared steps in ``_steps.py``): numba sees such a
helper as the compiled dispatcher it stands for, so the call is compiled, not a call back into Python.
numba's on-disk cache keys a kernel on its own file only, not on the steps it inlines; so unless
``NUMBA_CACHE_DIR`` is set, kernels are cached under a folder named by a digest of every source in this
package, and a change to any step (an upgrade, an edit) compiles afresh instead of reusing stale code. The
digest is read when the package is imported, with the code it names: read at the first compile, a process
upgraded in place under it (hours between import and the first device) filed the code it had imported under
the new sources' digest, and every later process ran that stale kernel.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

_typed = False
_cache_set = False


def _source_digest() -> str:
    digest = hashlib.sha256()
    for source in sorted(Path(__file__).parent.glob("*.py")):
        digest.update(source.read_bytes())
    return digest.hexdigest()[:16]


_DIGEST = _source_digest()


def _use_versioned_cache() -> None:
    global _cache_set
    if _cache_set:
        return
    import os

    from numba.core import config

    if not os.environ.get("NUMBA_CACHE_DIR"):
        base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
        config.CACHE_DIR = str(base / "eddyline" / "numba" / _DIGEST)
    _cache_set = True


def _register_typeof() -> None:
    """Teach numba that a LazyJit global inside a kernel is a compiled function (once, on first compile)."""
    global _typed
    if _typed:
        return
    from numba.core import types
    from numba.extending import typeof_impl

    @typeof_impl.register(LazyJit)
    def _typeof(val: LazyJit, c: Any) -> Any:
        return types.Dispatcher(val.dispatcher())

    _typed = True


class LazyJit:
    """Compile ``fn`` with ``numba.njit(cache=True)`` on first call; later calls go straight to the compiled one."""

    def __init__(self, fn: Callable[..., Any], inline: bool = False) -> None:
        self._fn = fn
        self._inline = inline
        self._compiled: Callable[..., Any] | None = None

    def dispatcher(self) -> Callable[..., Any]:
        compiled = self._compiled
        if compiled is None:
            import numba

            _register_typeof()
            _use_versioned_cache()
            opts: dict[str, Any] = {"inline": "always"} if self._inline else {}
            compiled = self._compiled = numba.njit(cache=True, nogil=True, fastmath=False, **opts)(self._fn)
        return compiled

    def __call__(self, *args: Any) -> Any:
        compiled = self._compiled
        if compiled is None:
            compiled = self.dispatcher()
        return compiled(*args)

    @property
    def py_func(self) -> Callable[..., Any]:
        return self._fn


def lazy_njit(fn: Callable[..., Any]) -> LazyJit:
    return LazyJit(fn)


def lazy_inline(fn: Callable[..., Any]) -> LazyJit:
    """A kernel step, inlined into each kernel that calls it (numba IR inlining): a call would cost a quarter
    of a kernel's time."""
    return LazyJit(fn, inline=True)
