"""Subcommands that plugins add through the ``vlmkit_register_commands`` hook.

Hook modules are loaded only when a plugin command can be wanted: the command name on the line is not
a built-in one, or the top-level help is asked for. Built-in commands therefore start as fast as
before, and a broken plugin cannot break them.
"""

from __future__ import annotations

import sys
from typing import Any, Callable

import typer

from .errors import friendly


class PluginCommands:
    """What a hook receives as ``cli``: ``@cli.command("name", help=...)`` registers a typer command."""

    def __init__(self, app: typer.Typer, builtin: set[str]):
        self.app = app
        self.builtin = builtin
        self.added: dict[str, str] = {}

    def command(self, name: str | None = None, **kwargs: Any) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        def register(fn: Callable[..., Any]) -> Callable[..., Any]:
            cmd = name or fn.__name__.replace("_", "-")
            where = f"{fn.__module__}.{fn.__qualname__}"
            if cmd in self.builtin:
                raise ValueError(f"plugin command '{cmd}' ({where}) clashes with a built-in vlmkit command")
            if cmd in self.added:
                raise ValueError(f"plugin command '{cmd}' is registered twice: {self.added[cmd]} and {where}")
            self.added[cmd] = where
            self.app.command(cmd, **kwargs)(friendly(fn))
            return fn

        return register


def builtin_commands(app: typer.Typer) -> set[str]:
    return {c.name or c.callback.__name__.replace("_", "-") for c in app.registered_commands if c.callback} | {
        g.name for g in app.registered_groups if g.name}


def wants_plugin_commands(argv: list[str], builtin: set[str]) -> bool:
    """True for ``vlmkit``, ``vlmkit --help`` and ``vlmkit <name that is not built in> ...``."""
    words = [a for a in argv if not a.startswith("-")]
    if not words:
        return True
    return words[0] not in builtin


#: apps whose plugin commands were added (once per process: tests call the CLI many times)
_added: dict[int, dict[str, str]] = {}


def add_plugin_commands(app: typer.Typer, argv: list[str] | None = None) -> dict[str, str]:
    """Let every hook module add its commands when ``argv`` may need them; returns name -> function.

    A hook that fails (a name clash, an import error) is reported on stderr and the other commands
    still work; ``VLMKIT_STRICT_PLUGINS=1`` makes it an error.
    """
    if id(app) in _added:
        return _added[id(app)]
    builtin = builtin_commands(app)
    if not wants_plugin_commands(sys.argv[1:] if argv is None else argv, builtin):
        return {}
    from vlmkit.plugins.hooks import get_plugin_manager
    from vlmkit.plugins.strict import strict_mode

    cli = PluginCommands(app, builtin)
    try:
        get_plugin_manager().hook.vlmkit_register_commands(cli=cli)
    except Exception as exc:  # noqa: BLE001 - one broken plugin must not take the built-in commands down
        if strict_mode():
            raise
        typer.echo(f"warning: plugin commands: {type(exc).__name__}: {exc}", err=True)
    _added[id(app)] = cli.added
    return cli.added
