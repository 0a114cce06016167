"""The public API documents its parameters, river style, and every CLI command and option has help.

Public means: in the module's ``__all__``, or, without one, a class or function defined at module level in
that module whose name has no leading underscore, and the methods of those classes that take parameters
(an override is documented by the method it overrides). A module's ``main(argv)`` and the Typer commands
are documented by their ``--help`` instead. A class documents its constructor's parameters in its own
docstring (numpydoc ``Parameters``, one entry per name; ``a, b`` documents both; fields shared by
subclasses may be documented once on their base); a settings section or other pydantic model may instead
give a field a ``Field(description=...)``, which is what its JSON schema shows. Exceptions are left out:
their arguments are their message.
"""

from __future__ import annotations

import importlib
import inspect
import re
from typing import Any

import pytest
import typer

# The modules a user touches. Left out on purpose: streams.apps.live and the gateway's internals (rewritten
# elsewhere), training and evaluation scripts, and modules that only mount commands.
MODULES = (
    "connectors.config",
    "connectors.influx",
    "connectors.prometheus",
    "connectors.pagerduty",
    "connectors.slack",
    "connectors.alerting",
    "connectors.kafka",
    "connectors.dlq",
    "connectors.broker",
    "connectors.gateway.settings",
    "connectors.wav",
    "connectors.movielens",
    "schemas",
    "schemas.serde",
    "schemas.registry",
    "schemas.ids",
    "schemas.topics",
    "schemas.validation",
    "schemas.wire",
    "schemas.catalog",
    "schemas.compat",
    "models.checkpoint",
    "models.anomaly",
    "models.anomaly.gauss",
    "models.anomaly.likelihood",
    "models.anomaly.robust",
    "models.anomaly.seasonal",
    "models.anomaly.hst",
    "models.anomaly.hst_river",
    "models.drift",
    "models.drift.data",
    "models.drift.ensemble",
    "models.drift.factory",
    "models.drift.river_detectors",
    "models.metrics",
    "models.online.clicks",
    "models.security.poisoning",
    "models.registry.base",
    "models.registry.store",
    "models.sentiment.model",
    "models.speech",
    "models.speech.faster",
    "models.speech.openai",
    "streams.processor",
    "streams.runtime",
    "streams.flows",
    "streams.flows.alert_policy",
    "streams.flows.audio",
    "streams.flows.clicks",
    "streams.flows.drift",
    "streams.flows.model_security",
    "streams.flows.quality",
    "streams.flows.retraining",
    "streams.flows.sensor_anomaly",
    "streams.engines.bytewax",
    "streams.engines.bytewax_cluster",
    "streams.engines.faust",
    "streams.engines.output",
    "streams.sinks.alerts",
    "streams.sinks.base",
    "streams.sinks.drift",
    "streams.sinks.model_security",
    "streams.sinks.sensor",
    "streams.sinks.sentiment",
    "streams.apps.recommend",
    "streams.producers.simulator",
    "streams.producers.sensors",
    "streams.producers.clicks",
    "edge_agent.settings",
    "edge_agent.sources.base",
    "edge_agent.sources.plugins",
)
OURS = ("streams", "models", "schemas", "connectors", "edge_agent")
NOT_OURS = ("streams.apps.live", "connectors.gateway.app", "connectors.gateway.records")


def _public(module_name: str) -> list[tuple[str, object]]:
    module = importlib.import_module(module_name)
    names = getattr(module, "__all__", None)
    if names is None:
        names = [
            n for n, o in vars(module).items()
            if not n.startswith("_") and getattr(o, "__module__", None) == module_name
        ]
    found = []
    for name in names:
        obj = getattr(module, name)
        if not (inspect.isclass(obj) or inspect.isfunction(obj)):
            continue
        if inspect.isclass(obj) and issubclass(obj, BaseException):
            continue
        if obj.__module__.startswith(NOT_OURS) or name == "main" or _is_cli_command(obj):
            continue  # main(argv) and commands are documented by their --help (test_every_cli_command_...)
        found.append((f"{obj.__module__}.{obj.__qualname__}", obj))
    return found


def _is_cli_command(obj: object) -> bool:
    """A Typer command: its docstring is its --help, its parameters carry their own help."""
    if not inspect.isfunction(obj):
        return False
    for param in inspect.signature(obj).parameters.values():
        hint = param.annotation  # a string under ``from __future__ import annotations``
        if isinstance(hint, str) and re.search(r"\btyper\.(Option|Argument)\(", hint):
            return True
        if any(isinstance(m, typer.models.ParameterInfo) for m in getattr(hint, "__metadata__", ())):
            return True
    return False


# Stateful objects keep models.checkpoint.Checkpointed's contract, inheriting it or by name; it documents them.
CHECKPOINT_CONTRACT = ("snapshot", "restore", "params")


def _methods(cls: type) -> list[tuple[str, object]]:
    """Public methods a class defines that take parameters, overrides left out: the base documents those."""
    found = []
    for name, attr in vars(cls).items():
        fn = attr.__func__ if isinstance(attr, staticmethod | classmethod) else attr
        if name.startswith("_") or not inspect.isfunction(fn) or _is_cli_command(fn):
            continue
        if any(name in vars(base) for base in cls.__mro__[1:]) or name in CHECKPOINT_CONTRACT:
            continue
        if _parameters(fn):
            found.append((f"{cls.__module__}.{cls.__qualname__}.{name}", fn))
    return found


def _objects() -> dict[str, object]:
    seen: dict[str, object] = {}
    for module_name in MODULES:
        for qualified, obj in _public(module_name):
            seen.setdefault(qualified, obj)
            if inspect.isclass(obj):
                for method_name, method in _methods(obj):
                    seen.setdefault(method_name, method)
    return seen


def _parameters(obj: object) -> list[str]:
    """Names a caller passes: a function's arguments, a class's constructor arguments (or fields)."""
    fields = getattr(obj, "model_fields", None)
    if inspect.isclass(obj) and fields is not None:
        return list(fields)
    if inspect.isclass(obj) and not getattr(obj.__init__, "__module__", "").startswith(OURS):
        return []  # object's, a Protocol's or a base library's constructor: nothing of ours to document
    try:
        signature = inspect.signature(obj)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return []
    return [p for p in signature.parameters if p not in ("self", "cls") and not p.startswith("_")]


def documented(doc: str) -> set[str]:
    """The names listed in a docstring's numpydoc ``Parameters`` section."""
    lines = inspect.cleandoc(doc).splitlines()
    names: set[str] = set()
    inside = False
    for i, line in enumerate(lines):
        if line.strip() == "Parameters" and i + 1 < len(lines) and set(lines[i + 1].strip()) == {"-"}:
            inside = True
            continue
        if not inside:
            continue
        if i + 1 < len(lines) and line.strip() and set(lines[i + 1].strip()) == {"-"}:
            break  # the next section
        if line and not line[0].isspace() and not set(line.strip()) <= {"-"}:
            head = line.split(" : ")[0]
            names.update(n.strip().lstrip("*") for n in head.split(","))
    return names


def _documented_with_bases(obj: object) -> set[str]:
    """A class's own ``Parameters`` and those of its bases of ours: shared fields are documented once."""
    classes = obj.__mro__ if inspect.isclass(obj) else (obj,)
    return {n for c in classes if c.__module__.startswith(OURS) for n in documented(c.__doc__ or "")}


def _described_fields(obj: object) -> set[str]:
    fields = getattr(obj, "model_fields", None) or {}
    return {name for name, info in fields.items() if info.description}


OBJECTS = _objects()


def test_the_checker_reads_numpydoc_sections() -> None:
    doc = """Summary.

    Parameters
    ----------
    alpha
        First.
    beta, gamma : int
        Both.
    **kwargs
        Passed on.

    Examples
    --------
    >>> delta = 1
    """
    assert documented(doc) == {"alpha", "beta", "gamma", "kwargs"}
    assert documented("Summary.\n\nalpha\n    not a section\n") == set()


def test_the_scope_is_not_empty() -> None:
    assert len(OBJECTS) > 150


@pytest.mark.parametrize("qualified", sorted(OBJECTS))
def test_public_api_documents_its_parameters(qualified: str) -> None:
    obj = OBJECTS[qualified]
    doc = obj.__doc__ or ""
    assert doc.strip(), f"{qualified} has no docstring: say what it is for and why"
    wanted = _parameters(obj)
    missing = [n for n in wanted if n not in _documented_with_bases(obj) | _described_fields(obj)]
    assert not missing, (
        f"{qualified} does not document {missing}: add them to a numpydoc 'Parameters' section of its "
        "docstring (or a Field(description=...) for a settings field)"
    )


def _commands(command: Any, path: tuple[str, ...]) -> list[tuple[tuple[str, ...], Any]]:
    """Every command under a group, by duck typing (Typer ships its own copy of click); a lazy one imported."""
    found = [(path, command)]
    for name in command.list_commands(None) if hasattr(command, "list_commands") else []:
        sub = command.get_command(None, name)
        found += _commands(sub.load() if hasattr(sub, "load") else sub, (*path, name))
    return found


def test_every_cli_command_and_option_has_help() -> None:
    from streams.cli import app

    commands = _commands(typer.main.get_command(app), ("eddyline",))
    assert len(commands) > 20, [" ".join(p) for p, _ in commands]
    missing = []
    for path, command in commands:
        if not (command.help or command.short_help):
            missing.append(" ".join(path))
        for param in command.params:
            if param.name not in ("help", "install_completion", "show_completion") and not getattr(param, "help", None):
                missing.append(f"{' '.join(path)} {param.name}")
    assert missing == [], f"without help text: {missing}"
