"""Lazy numba compilation, so that importing a detector module never imports numba."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


class LazyJit:
    """Compile ``fn`` with ``numba.njit(cache=True)`` on first call; later calls go straight to the compiled one."""

    def __init__(self, fn: Callable[..., Any]) -> None:
        self._fn = fn
        self._compiled: Callable[..., Any] | None = None

    def __call__(self, *args: Any) -> Any:
        compiled = self._compiled
        if compiled is None:
            import numba

            compiled = self._compiled = numba.njit(cache=True, nogil=True, fastmath=False)(self._fn)
        return compiled(*args)

    @property
    def py_func(self) -> Callable[..., Any]:
        return self._fn


def lazy_njit(fn: Callable[..., Any]) -> LazyJit:
    return LazyJit(fn)
