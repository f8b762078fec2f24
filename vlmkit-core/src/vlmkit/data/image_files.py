"""Reading an image file: the one decode path of datasets, inference and tools.

A file is read completely (``load``) while it is open, so a truncated or corrupt image fails here, at
its record, and not later inside a collator or a data worker; every reason PIL gives is one error type
that callers turn into a message naming their file, record and field.
"""

from __future__ import annotations

from pathlib import Path

from PIL import Image, UnidentifiedImageError

#: what PIL raises for a file it cannot read as an image (unknown format, truncated, corrupt, a decompression bomb)
_PIL_DECODE_ERRORS = (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError)


class UndecodableImage(ValueError):
    """The file exists but is not an image PIL can read; the message names the file and PIL's reason."""


def decode_image(path: str | Path) -> Image.Image:
    """The image at ``path``, fully read, in RGB. A missing file is ``FileNotFoundError``; one that does not
    decode is ``UndecodableImage``."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"image file not found: {path}")
    try:
        with Image.open(path) as im:
            im.load()
            return im.convert("RGB")
    except _PIL_DECODE_ERRORS as exc:
        raise UndecodableImage(f"cannot decode image {path}: {type(exc).__name__}: {exc}") from None
