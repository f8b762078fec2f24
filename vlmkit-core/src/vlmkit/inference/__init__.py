"""Using a trained model: generation from a prompt and images (``generation``) and scoring it on a
dataset (``evaluation``).

May import: ``vlmkit.errors``, ``vlmkit.progress``, ``vlmkit.plugins``, ``vlmkit.model``, ``vlmkit.data``.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

#: ``vlmkit.inference`` was the generation module before core had sub-packages: its names still resolve
_GENERATION_NAMES = ("generate", "generate_batch", "prompt_sample", "open_image", "build_prompt_turns")


def __getattr__(name: str) -> Any:
    if name in _GENERATION_NAMES:
        return getattr(import_module("vlmkit.inference.generation"), name)
    raise AttributeError(f"module 'vlmkit.inference' has no attribute '{name}'")
