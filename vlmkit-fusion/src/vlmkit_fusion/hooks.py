"""pluggy hook implementations of vlmkit-fusion (entry-point group ``vlmkit.hooks``).

Loaded whenever vlmkit builds its plugin manager, so this module imports neither torch nor a connector;
the converters are imported when the hook is called.
"""

from __future__ import annotations

from typing import Any

from vlmkit.plugins.hooks import hookimpl


@hookimpl
def vlmkit_llava_converters() -> list[Any]:
    """LLaVA-family projectors <-> this package's connectors (``vlmkit import`` / ``export``): transformers'
    Llava projector, and the LLaVA codebase's linear / mlpNx_gelu / ViP-LLaVA projectors."""
    from .llava import LnMLPVipLlavaProjector, MLP2xGeluLlavaProjector
    from .llava_repo import MLPRepoProjector, VipRepoProjector

    return [MLP2xGeluLlavaProjector(), LnMLPVipLlavaProjector(), MLPRepoProjector(), VipRepoProjector()]


@hookimpl
def vlmkit_checkpoint_formats() -> list[Any]:
    """MG-LLaVA's XTuner checkpoints (``vlmkit import --format mg-llava``)."""
    from .mg_llava_format import MGLLaVAFormat

    return [MGLLaVAFormat()]
