"""Lazy numba compilation, so that importing a detector module never imports numba.

A kernel may call other ``lazy_njit`` functions (the shared steps in ``_steps.py``): numba sees such a
helper as the compiled dispatcher it stands for, so the call is compiled, not a call back into Python.
numba's on-disk cache keys a kernel on its own file only: after editing a shared step, clear the
``__pycache__/*.nbi`` files (or touch the detector modules) so kernels that call it recompile.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

_typed = False


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
