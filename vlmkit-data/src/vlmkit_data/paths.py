"""Image paths stay under their dataset's image root.

A record's ``image`` is resolved against the root without touching the file system, so ``../`` steps
and absolute paths that lead elsewhere (``/etc/passwd``) are caught before anything is opened. Symlinks
inside the root are the user's own layout and are followed as usual. ``allow_outside_root=True`` (a
dataset argument) turns the check off on purpose.
"""

from __future__ import annotations

import os

#: the ``kind`` of the DataError (and the skip-report entry) for such a path
OUTSIDE_ROOT = "outside_root"


def resolve_under(root: str, rel: str) -> tuple[str, bool]:
    """``(path, inside)``: ``rel`` joined to ``root`` (or taken as is when absolute), and whether it stays
    under ``root``."""
    path = rel if os.path.isabs(rel) else os.path.join(root, rel)
    base = os.path.normpath(os.path.abspath(root))
    full = os.path.normpath(os.path.abspath(path))
    return path, full == base or full.startswith(base.rstrip(os.sep) + os.sep)


def outside_message(rel: str, root: str) -> str:
    return (f"image path {rel!r} leads outside the image root {root} (refused: a data file may only name images "
            "under its root; pass image_root= the folder that holds them, or allow_outside_root: true on purpose)")
