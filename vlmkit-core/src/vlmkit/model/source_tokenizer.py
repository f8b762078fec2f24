"""A model's tokenizer files as its source shipped them, kept beside the ones transformers writes.

Releases of the LLaVA codebase ship slow tokenizers only (``tokenizer.model`` for Llama/Vicuna, ``vocab.json`` +
``merges.txt`` for Qwen2), and their loaders read them with ``use_fast=False``. transformers 5 saves a
``tokenizer.json`` and no ``tokenizer.model``, so a checkpoint that kept only what it writes could not be
exported back into a folder those loaders read. A checkpoint's ``llm/source-tokenizer/`` keeps the source's
files verbatim; each later save carries it along, and exports that need the slow form write it.
"""

from __future__ import annotations

import shutil
from pathlib import Path

SOURCE_TOKENIZER = "source-tokenizer"
#: the vocabulary files of slow tokenizers (SentencePiece, BPE, WordPiece): what ``tokenizer.json`` replaces
SLOW_VOCABULARIES = ("tokenizer.model", "vocab.json", "merges.txt", "vocab.txt", "spiece.model")
#: every file a tokenizer may consist of
TOKENIZER_FILE_PATTERNS = ("tokenizer*", "special_tokens_map.json", "added_tokens.json", "vocab.*", "merges.txt",
                           "*.model", "chat_template.*")


def has_slow_vocabulary(folder: Path) -> bool:
    return any((folder / name).is_file() for name in SLOW_VOCABULARIES)


def tokenizer_files(folder: Path) -> list[Path]:
    found = {f for pattern in TOKENIZER_FILE_PATTERNS for f in folder.glob(pattern) if f.is_file()}
    return sorted(found)


def keep_source_tokenizer(source: str | Path | None, llm_dir: Path) -> None:
    """Copy ``source``'s tokenizer files into ``llm_dir/source-tokenizer`` when they hold a slow vocabulary
    (or carry an earlier checkpoint's ``source-tokenizer`` along). Nothing for hub ids or fast-only folders."""
    if source is None:
        return
    src = Path(str(source))
    if not src.is_dir():
        return
    dest = Path(llm_dir) / SOURCE_TOKENIZER
    if (src / SOURCE_TOKENIZER).is_dir():
        src = src / SOURCE_TOKENIZER
    elif not has_slow_vocabulary(src):
        return
    if src.resolve() == dest.resolve():
        return
    dest.mkdir(parents=True, exist_ok=True)
    for f in tokenizer_files(src):
        shutil.copy(f, dest / f.name)


def source_tokenizer(llm_dir: Path) -> Path | None:
    """The checkpoint's kept source tokenizer folder, if it has one."""
    folder = Path(llm_dir) / SOURCE_TOKENIZER
    return folder if folder.is_dir() and has_slow_vocabulary(folder) else None
