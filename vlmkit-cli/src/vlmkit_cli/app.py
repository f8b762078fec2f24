"""The Typer application object; command modules register on it."""

from __future__ import annotations

import typer

from .errors import STATE

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="vlmkit: LLaVA-style vision-language models from interchangeable plugins.")


@app.callback()
def _root(debug: bool = typer.Option(False, "--debug", help="Show full tracebacks on errors.")) -> None:
    STATE["debug"] = debug
