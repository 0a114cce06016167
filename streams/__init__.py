"""Dataflows and their runtime: processors, the engine adapters and the ``eddyline`` CLI."""
