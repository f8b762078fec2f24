"""A released model's tokenizer, taken as its files alone.

Imports copy the tokenizer files out of a foreign folder before loading them, so transformers never
reads that folder's ``config.json`` (its model type, its ``auto_map`` code) just to load a tokenizer.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from vlmkit.errors import ConfigError
from vlmkit.model.source_tokenizer import TOKENIZER_FILE_PATTERNS, tokenizer_files

__all__ = ["TOKENIZER_FILES", "TOKENIZER_FILE_PATTERNS", "has_tokenizer", "require_tokenizer", "copy_tokenizer"]

#: any one of these means a folder holds a tokenizer
TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "tokenizer_config.json", "vocab.json")

DEFAULT_HINT = "a vlmkit checkpoint carries its tokenizer: pass --tokenizer <folder or hub id>"


def has_tokenizer(folder: Path) -> bool:
    return any((Path(folder) / name).is_file() for name in TOKENIZER_FILES)


def require_tokenizer(folder: Path, hint: str = DEFAULT_HINT) -> None:
    """An error naming the folder and the files looked for, when it holds no tokenizer."""
    if not has_tokenizer(folder):
        raise ConfigError(f"{folder}: no tokenizer files ({', '.join(TOKENIZER_FILES)}); {hint}")


def copy_tokenizer(src: Path, dest: Path, hint: str = DEFAULT_HINT) -> Path:
    """Copy ``src``'s tokenizer files (and nothing else) into ``dest``; return ``dest``."""
    src, dest = Path(src), Path(dest)
    require_tokenizer(src, hint)
    for f in tokenizer_files(src):
        shutil.copy(f, dest / f.name)
    return dest
