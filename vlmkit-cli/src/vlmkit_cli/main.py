"""``vlmkit``: build, train, generate, evaluate and inspect models made of plugins.

Only typer and the torch-free registry are imported at start-up; each command imports what it needs.
"""

from __future__ import annotations

from . import commands_core, commands_data, commands_sweep, commands_train  # noqa: F401 - register the commands
from .app import app

#: the exit status of a command stopped by Ctrl-C (128 + SIGINT, as shells report it)
INTERRUPTED = 130


def main() -> None:
    from .plugin_commands import add_plugin_commands

    try:
        add_plugin_commands(app)
        app()
    except SystemExit as exc:
        if exc.code != INTERRUPTED:
            raise
        # Ctrl-C: the command has said so and what it wrote is whole (files are written by rename). Leave now:
        # finalising torch, tokenizers and their thread pools took 0.8 s on a quiet machine
        import logging
        import os
        import sys

        logging.shutdown()  # log files keep their last lines
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(INTERRUPTED)
    except BrokenPipeError:  # `vlmkit ... | head`: the reader left; stop quietly, like other Unix tools
        import os
        import sys

        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # so the interpreter's final flush does not fail again
        sys.exit(0)


if __name__ == "__main__":
    main()
