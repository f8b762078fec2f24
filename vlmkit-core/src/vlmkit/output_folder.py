"""Folders vlmkit writes into (checkpoints, exports, a run's output_dir), made or refused with a named error.

A path that is an existing file, or whose parent is one, or that cannot be created, is a user's mistake to be
told about by name (``output_dir r/x: exists and is a file``), never an ``OSError`` from deep inside a save.
"""

from __future__ import annotations

from pathlib import Path

from vlmkit.errors import ConfigError


def prepare_output_folder(path: str | Path, what: str) -> Path:
    """``path`` as a folder ready to write into (created with its parents); ``what`` names it in errors."""
    p = Path(path)
    if p.exists() and not p.is_dir():
        raise ConfigError(f"{what} {p}: exists and is a file, not a folder; choose another path or move the file")
    try:
        p.mkdir(parents=True, exist_ok=True)
    except FileExistsError as exc:
        blocker = next((a for a in p.parents if a.exists() and not a.is_dir()), None)
        raise ConfigError(f"{what} {p}: cannot be created" + (f" ({blocker} is a file)" if blocker else "")) from exc
    except NotADirectoryError as exc:
        raise ConfigError(f"{what} {p}: cannot be created (a part of the path is a file)") from exc
    except OSError as exc:
        raise ConfigError(f"{what} {p}: cannot be created ({exc.strerror or exc})") from exc
    return p
