"""``vlmkit``: build, train, generate, evaluate and inspect models made of plugins.

Only typer and the torch-free registry are imported at start-up; each command imports what it needs.
"""

from __future__ import annotations

from . import commands_core, commands_data, commands_train  # noqa: F401 - register the commands
from .app import app


def main() -> None:
    app()


if __name__ == "__main__":
    main()
