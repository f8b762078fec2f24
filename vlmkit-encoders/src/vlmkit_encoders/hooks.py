"""pluggy hook implementations of vlmkit-encoders (entry-point group ``vlmkit.hooks``).

Loaded whenever vlmkit builds its plugin manager, so this module imports neither torch nor an encoder;
the converters are imported when the hook is called.
"""

from __future__ import annotations

from typing import Any

from vlmkit.hooks import hookimpl


@hookimpl
def vlmkit_llava_converters() -> list[Any]:
    """HF Llava's CLIP vision tower <-> the ``clip`` encoder (``vlmkit import-hf`` / ``export-hf``)."""
    from .llava import CLIPLlavaVision

    return [CLIPLlavaVision()]
