"""The Typer application object; command modules register on it."""

from __future__ import annotations

import sys

import typer

from .errors import STATE


def interactive() -> bool:
    """Whether a person is reading stdout (a terminal), not a pipe, a file or shell completion.

    Rich rendering (help panels, tables) costs ~80 ms of imports per call; it is worth it for a person
    at a terminal and wasted on scripts, which get plain text (and ``--json`` where offered).
    """
    return sys.stdout.isatty()


app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  rich_markup_mode="rich" if interactive() else None,
                  help="vlmkit: LLaVA-style vision-language models from interchangeable plugins.")


@app.callback()
def _root(debug: bool = typer.Option(False, "--debug", help="Show full tracebacks on errors.")) -> None:
    STATE["debug"] = debug
