"""One-line errors for the CLI: known user errors print ``error: ...`` and exit 2; ``--debug`` shows tracebacks."""

from __future__ import annotations

import functools
import sys
import traceback
from typing import Any, Callable

import typer

STATE = {"debug": False}


def _user_error_types() -> tuple[type[BaseException], ...]:
    from vlmkit.errors import VlmkitError

    types: list[type[BaseException]] = [VlmkitError, FileNotFoundError, IsADirectoryError, PermissionError]
    return tuple(types)


def friendly(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Wrap a command so that user errors become one line and a non-zero exit."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except (typer.Exit, typer.Abort, KeyboardInterrupt):
            raise
        except _user_error_types() as exc:
            if STATE["debug"]:
                traceback.print_exc()
            msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            typer.echo(f"error: {msg}", err=True)
            raise typer.Exit(2) from None
        except Exception as exc:  # noqa: BLE001
            if STATE["debug"]:
                raise
            typer.echo(f"error: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''} "
                       "(run with --debug for the traceback)", err=True)
            raise typer.Exit(1) from None

    return wrapper


def fail(message: str, code: int = 2) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def debug_enabled() -> bool:
    return STATE["debug"] or "--debug" in sys.argv
