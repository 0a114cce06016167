"""Command groups that import a command's module only when that command runs, so every ``eddyline`` command
starts without importing every other one's modules (numpy, the engines, MLflow).

A group lists its lazy commands from a table (name, ``module:function``, short help) without importing
them; a command's module is imported when it runs or its own ``--help`` is asked for. Commands that plugins
register by entry point (``eddyline bench``) are listed by their entry-point names alone: their help lives in the
plugin, shown by the command's own ``--help``, so listing the group imports none of them.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any, NamedTuple

import typer
from typer.core import TyperCommand, TyperGroup

from streams.cli.errors import friendly


class Lazy(NamedTuple):
    """One command of a group, imported when it runs.

    Parameters
    ----------
    name
        The command's name in its group.
    target
        ``module:function``: the Typer command function.
    help
        Its help as the group's ``--help`` lists it: the function docstring's first paragraph (a test checks
        that they agree).
    """

    name: str
    target: str
    help: str


class LazyCommand(TyperCommand):
    """Stands in a group for a command whose module is not imported yet: it has the name and help to be listed,
    and hands parsing (and so running, and its own ``--help``) to the real command, imported then.

    Parameters
    ----------
    name
        The command's name.
    target
        ``module:function``.
    help
        The line the group's ``--help`` shows (empty for a plugin: its help is in the plugin).
    wrap
        Applied to the command function when it is imported.
    """

    def __init__(self, name: str, target: str, help: str,
                 wrap: Callable[[Callable[..., Any]], Callable[..., Any]]) -> None:
        self._real: Any = None
        self.target = target
        self.wrap = wrap
        super().__init__(name=name, callback=None, help=help)

    def load(self) -> Any:
        """The real command (its module imported on the first call)."""
        if self._real is None:
            module, _, attr = self.target.partition(":")
            one = typer.Typer(rich_markup_mode=None)
            one.command(self.name)(self.wrap(getattr(importlib.import_module(module), attr)))
            self._real = typer.main.get_command(one)
        return self._real

    def make_context(self, info_name: str | None, args: list[str], parent: Any = None, **extra: Any) -> Any:
        return self.load().make_context(info_name, args, parent=parent, **extra)


class LazyGroup(TyperGroup):
    """A Typer group that also holds lazy commands: those of ``table`` and those registered under the
    entry-point group ``plugins``. Made per group by ``lazy_group``."""

    table: tuple[Lazy, ...] = ()
    plugins: str | None = None
    wrap: Callable[[Callable[..., Any]], Callable[..., Any]] = staticmethod(friendly)
    _added = False

    def _add_lazy(self) -> None:
        if self._added:
            return
        self._added = True
        lazy = {c.name: LazyCommand(c.name, c.target, c.help, self.wrap) for c in self.table}
        if self.plugins is not None:
            from importlib.metadata import entry_points

            for ep in sorted(entry_points(group=self.plugins), key=lambda e: e.name):
                lazy.setdefault(ep.name, LazyCommand(ep.name, ep.value, "", self.wrap))
        groups = {n: c for n, c in self.commands.items() if isinstance(c, TyperGroup)}
        plain = {n: c for n, c in self.commands.items() if n not in groups}
        self.commands = {**plain, **lazy, **groups}  # commands before groups, as Typer lists them

    def list_commands(self, ctx: Any) -> list[str]:
        self._add_lazy()
        return super().list_commands(ctx)

    def resolve_command(self, ctx: Any, args: list[str]) -> Any:
        name, command, rest = super().resolve_command(ctx, args)
        if command is not None and not isinstance(command, TyperGroup):
            refuse_repeats(command.load() if isinstance(command, LazyCommand) else command, rest)
        return name, command, rest

    def get_command(self, ctx: Any, cmd_name: str) -> Any:
        self._add_lazy()
        return super().get_command(ctx, cmd_name)


def refuse_repeats(command: Any, args: list[str]) -> None:
    """Refuse an option given twice (``--devices 3 ... --devices 4``, ``--calls --no-calls``) that takes one value:
    Click would keep the last one without a word, and a command line edited in a hurry then runs with a value
    the operator did not mean.

    Parameters
    ----------
    command
        The command about to parse ``args``.
    args
        Its arguments, as typed.
    """
    single: dict[str, Any] = {}
    for param in command.params:
        if param.param_type_name == "option" and not param.multiple and not param.count:
            single.update(dict.fromkeys([*param.opts, *param.secondary_opts], param))
    given: dict[str, list[str]] = {}
    for i, arg in enumerate(args):
        if arg == "--":
            break
        param = single.get(arg.split("=", 1)[0])
        if param is None:
            continue
        said = given.setdefault(param.name, [])
        said.append(arg if "=" in arg or param.is_flag or i + 1 == len(args) else f"{arg} {args[i + 1]}")
        if len(said) > 1:
            raise typer.BadParameter(f"given {len(said)} times ({', then '.join(said)}); give it once", param=param)


def lazy_group(*table: Lazy, plugins: str | None = None,
               wrap: Callable[[Callable[..., Any]], Callable[..., Any]] = friendly) -> type[TyperGroup]:
    """A group class for ``typer.Typer(cls=...)`` that holds these lazy commands.

    Parameters
    ----------
    table
        The group's lazy commands.
    plugins
        An entry-point group whose entries (``name = "module:function"``) are commands of this group too.
    wrap
        Applied to each command function when it is imported; by default the CLI's error handling (``friendly``:
        an error says what to do and exits 2), as every ``eddyline`` command has it.
    """
    return type("LazyGroup", (LazyGroup,), {"table": table, "plugins": plugins, "wrap": staticmethod(wrap)})


def group(help: str, **kwargs: Any) -> typer.Typer:
    """A command group as every ``eddyline`` group is made. Help is plain text: rich markup would eat the
    bracketed config section names (``[mlflow]``) our help is full of."""
    kwargs.setdefault("cls", lazy_group())  # refuses repeated options (``refuse_repeats``) as every group does
    return typer.Typer(help=help, no_args_is_help=True, rich_markup_mode=None, **kwargs)
