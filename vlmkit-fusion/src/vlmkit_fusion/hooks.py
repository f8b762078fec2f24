"""pluggy hook implementations of vlmkit-fusion (entry-point group ``vlmkit.hooks``).

Loaded whenever vlmkit builds its plugin manager, so this module imports neither torch nor a connector;
the converters are imported when the hook is called.
"""

from __future__ import annotations

from typing import Any

from vlmkit.hooks import hookimpl


@hookimpl
def vlmkit_llava_converters() -> list[Any]:
    """HF Llava's projector <-> the ``mlp2x_gelu`` connector (``vlmkit import-hf`` / ``export-hf``)."""
    from .llava import MLP2xGeluLlavaProjector

    return [MLP2xGeluLlavaProjector()]
