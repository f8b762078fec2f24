"""One-line errors for the CLI: known user errors print ``error: ...`` and exit 2; ``--debug`` shows tracebacks."""

from __future__ import annotations

import functools
import traceback
from typing import Any, Callable

import typer

STATE = {"debug": False}


#: longer messages are cut (a library error can list thousands of names on one line)
MAX_MESSAGE = 600


def first_line(exc: BaseException) -> str:
    """The line to show. An error raised in a DataLoader worker arrives re-wrapped by torch as
    "Caught DataError in DataLoader worker process 0. Original Traceback ...": show the original."""
    text = str(exc)
    if text.startswith("Caught ") and "Original Traceback" in text:
        last = [ln for ln in text.splitlines() if ln.strip()][-1]
        name, sep, message = last.partition(": ")
        line = message if sep and name.rsplit(".", 1)[-1] == type(exc).__name__ else last
    else:
        line = text.splitlines()[0] if text else type(exc).__name__
    return line if len(line) <= MAX_MESSAGE else line[:MAX_MESSAGE] + f"... ({len(line):,} characters; --debug shows all)"


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
        except (typer.Exit, typer.Abort):
            raise
        except KeyboardInterrupt:
            typer.echo("\ninterrupted (Ctrl-C): stopped; files written before stay whole (a training run resumes "
                       "from its last complete checkpoint with --resume)", err=True)
            raise typer.Exit(130) from None
        except _user_error_types() as exc:
            if STATE["debug"]:
                traceback.print_exc()
            typer.echo(f"error: {first_line(exc)}", err=True)
            raise typer.Exit(2) from None
        except ModuleNotFoundError as exc:
            if STATE["debug"]:
                raise
            from .siblings import SIBLINGS, install_hint

            dist = {m: d for d, m in SIBLINGS.items()}.get((exc.name or "").split(".")[0])
            if dist is None:
                typer.echo(f"error: ModuleNotFoundError: {exc} (run with --debug for the traceback)", err=True)
                raise typer.Exit(1) from None
            typer.echo(f"error: this command needs {dist}, which is not installed: {install_hint(dist)}", err=True)
            raise typer.Exit(2) from None
        except Exception as exc:  # noqa: BLE001
            if STATE["debug"]:
                raise
            typer.echo(f"error: {type(exc).__name__}: {first_line(exc) if str(exc) else ''} "
                       "(run with --debug for the traceback)", err=True)
            raise typer.Exit(1) from None

    return wrapper


def fail(message: str, code: int = 2) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)

