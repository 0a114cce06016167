"""How every stateful object in eddyline checkpoints: its constructor arguments plus its state, as plain data.

Detectors, online models and flow processors all keep state that must survive a restart. Pickling the
object itself would tie checkpoints to today's class layout; pickling ``params()`` and ``snapshot()``
(numbers, strings, numpy arrays) keeps them readable and lets ``restore`` validate what it loads.
"""

from __future__ import annotations

from typing import Any


class Checkpointed:
    """Subclasses override ``params`` (constructor arguments), ``snapshot`` and ``restore``."""

    def snapshot(self) -> dict[str, Any]:
        return {}

    def restore(self, state: dict[str, Any]) -> None:
        return None

    def params(self) -> dict[str, Any]:
        """Constructor arguments, so that a checkpoint is rebuilt with the same configuration."""
        return {}

    def __getstate__(self) -> dict[str, Any]:
        return {"params": self.params(), "state": self.snapshot()}

    def __setstate__(self, data: dict[str, Any]) -> None:
        self.__init__(**data["params"])  # type: ignore[misc]
        self.restore(data["state"])
