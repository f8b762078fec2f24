"""What a checkpoint's files must prove before they are used: their digests, and where their components came from.

A checkpoint records the SHA-256 of every file it consists of (``vlmkit.yaml`` ``files:``, format 2), and a
periodic training checkpoint's completion manifest records the digest of every file of its save (optimizer,
scheduler, RNG and trainer state included). A file that no longer matches is refused by name. What the data
cannot do is switch this off: a checkpoint with no digests is refused, not trusted, and only the caller can
accept one (``allow_unverified`` / ``--allow-unverified`` / ``VLMKIT_ALLOW_UNVERIFIED=1``), or record digests
for it on purpose (``vlmkit checkpoint seal``). Likewise a component recorded as coming from one distribution
is not silently built by another that happens to use its name (``allow_other_plugins``).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any, Iterable

#: caller-side switches (environment, set by the CLI's root options): never read from a checkpoint
ALLOW_UNVERIFIED_ENV = "VLMKIT_ALLOW_UNVERIFIED"
ALLOW_OTHER_PLUGINS_ENV = "VLMKIT_ALLOW_OTHER_PLUGINS"
UNVERIFIED_HOW = ("pass --allow-unverified (Python: allow_unverified=True; environment: VLMKIT_ALLOW_UNVERIFIED=1) to "
                  "use it anyway, or `vlmkit checkpoint seal PATH` to record digests once you trust its files")


def file_sha256(path: str | Path, chunk: int = 1 << 22) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")


def allow_unverified(explicit: bool | None = None) -> bool:
    """The caller's choice: an explicit argument, else the environment (the CLI's ``--allow-unverified``)."""
    return bool(explicit) if explicit is not None else _env_flag(ALLOW_UNVERIFIED_ENV)


def allow_other_plugins(explicit: bool | None = None) -> bool:
    return bool(explicit) if explicit is not None else _env_flag(ALLOW_OTHER_PLUGINS_ENV)


def folder_digests(root: str | Path, names: Iterable[str]) -> dict[str, str]:
    """``{relative name: sha256}`` of the given files of ``root``."""
    r = Path(root)
    return {name: file_sha256(r / name) for name in sorted(names)}


def digest_problems(root: str | Path, recorded: Any, where: str, covered: Iterable[str] = ()) -> list[str]:
    """What does not match a ``{name: sha256}`` record: malformed entries, missing or changed files, and files
    under the ``covered`` folders that the record does not list (a file slipped in after the save)."""
    r = Path(root)
    if not isinstance(recorded, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in recorded.items()):
        return [f"{where}: 'files' must map file names to SHA-256 hex digests, got {type(recorded).__name__}"]
    problems = []
    for name, digest in recorded.items():
        f = r / name
        if Path(name).is_absolute() or ".." in Path(name).parts:
            problems.append(f"{where}: 'files' names {name!r}, outside the checkpoint")
        elif not f.is_file():
            problems.append(f"{f}: missing (the checkpoint records its SHA-256)")
        elif file_sha256(f) != digest:
            problems.append(f"{f}: changed since it was saved (SHA-256 differs from the record in {where})")
    for folder in covered:
        d = r / folder
        if d.is_dir():
            for f in sorted(d.rglob("*")):
                rel = f.relative_to(r).as_posix()
                if f.is_file() and rel not in recorded:
                    problems.append(f"{f}: not part of the checkpoint as saved (no digest recorded for it)")
    return problems
