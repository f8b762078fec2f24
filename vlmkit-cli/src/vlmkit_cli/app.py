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
def _root(ctx: typer.Context,
          debug: bool = typer.Option(False, "--debug", help="Show full tracebacks on errors."),
          allow_unverified: bool = typer.Option(
              False, "--allow-unverified",
              help="Use checkpoints that record no digests of their files (written before vlmkit 0.2, or edited)."),
          allow_other_plugins: bool = typer.Option(
              False, "--allow-other-plugins",
              help="Build a checkpoint's component with an installed plugin of the same name from another "
                   "distribution than the one that saved it.")) -> None:
    import os

    STATE["debug"] = debug
    # the caller's choices, in the environment so that training workers (torchrun) inherit them; for this
    # command only (an in-process caller, a test, must not keep them for the next one)
    for flag, name in ((allow_unverified, "VLMKIT_ALLOW_UNVERIFIED"), (allow_other_plugins, "VLMKIT_ALLOW_OTHER_PLUGINS")):
        if flag:
            before = os.environ.get(name)
            os.environ[name] = "1"
            ctx.call_on_close(lambda name=name, before=before: os.environ.pop(name, None) if before is None
                              else os.environ.__setitem__(name, before))
