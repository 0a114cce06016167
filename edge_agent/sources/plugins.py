"""The plug-in point for sensors the agent does not know (I2C, serial, vendor SDKs).

A plug-in is a class taking ``(name, interval_s, **options)`` and implementing ``sources.base.Source``.
Name it by an entry point in the group ``eddyline.edge.sources`` (``pyproject``:
``[project.entry-points."eddyline.edge.sources"] bme280 = "mypkg.bme280:BME280"``) or by a dotted path
``mypkg.bme280:BME280``.
"""

from __future__ import annotations

import importlib
from importlib.metadata import entry_points
from typing import TYPE_CHECKING, Any

from edge_agent.sources.base import Source, SourceError

if TYPE_CHECKING:
    from edge_agent.settings import PluginSource


GROUP = "eddyline.edge.sources"


def load_class(target: str) -> Any:
    """The plug-in class named by ``target``; ``SourceError`` saying what to install or fix when it is not found.

    Parameters
    ----------
    target
        An entry point name in the ``eddyline.edge.sources`` group, or a dotted path ``package.module:Class``.
    """
    if ":" not in target:
        found = [ep for ep in entry_points(group=GROUP) if ep.name == target]
        if not found:
            names = sorted(ep.name for ep in entry_points(group=GROUP))
            raise SourceError(
                f"no plug-in {target!r} in entry point group {GROUP} (installed: {names or 'none'}); "
                "install the plug-in's package or give a dotted path 'package.module:Class'"
            )
        return found[0].load()
    module, _, attr = target.partition(":")
    try:
        obj: Any = importlib.import_module(module)
    except ImportError as exc:
        raise SourceError(f"plug-in {target!r}: cannot import {module!r} ({exc}); is its package installed?") from None
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise SourceError(f"plug-in {target!r}: {module!r} has no {attr!r}") from None
    return obj


def build_plugin(cfg: PluginSource) -> Source:
    """Make the plug-in source a ``[[edge.sources]]`` table of kind ``plugin`` asks for.

    Parameters
    ----------
    cfg
        The table: its ``target``, ``name``, ``interval_s`` and the ``options`` passed to the constructor.
    """
    cls = load_class(cfg.target)
    try:
        src = cls(name=cfg.name, interval_s=cfg.interval_s, **dict(cfg.options))
    except TypeError as exc:
        raise SourceError(f"plug-in {cfg.target!r} rejected its options {cfg.options}: {exc}") from None
    if not callable(getattr(src, "read", None)):
        raise SourceError(f"plug-in {cfg.target!r} has no read() method; see edge_agent.sources.base.Source")
    return src
