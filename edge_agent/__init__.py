"""The device agent: sensors in, batched Avro out, a disk buffer when offline. Kept light for small CPUs."""

from __future__ import annotations


def __getattr__(name: str) -> str:
    # Resolved on first use: importlib.metadata costs a few MB of memory the agent rarely needs.
    if name == "__version__":
        from importlib.metadata import PackageNotFoundError, version

        try:
            return version("eddyline")
        except PackageNotFoundError:  # running from a source tree
            return "0.0.0+src"
    raise AttributeError(name)
