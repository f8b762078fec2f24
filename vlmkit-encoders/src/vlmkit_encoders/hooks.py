"""pluggy hook implementations of vlmkit-encoders (entry-point group ``vlmkit.hooks``).

Loaded whenever vlmkit builds its plugin manager, so this module imports neither torch nor an encoder;
the converters are imported when the hook is called.
"""

from __future__ import annotations

from typing import Any

from vlmkit.plugins.hooks import hookimpl


@hookimpl
def vlmkit_llava_converters() -> list[Any]:
    """LLaVA-family vision towers <-> this package's encoders (``vlmkit import`` / ``export``): transformers'
    Llava, VipLlava, LlavaNext and LlavaOnevision CLIP and SigLIP towers, and the LLaVA codebase's CLIP,
    ViP-LLaVA, S2, ConvLLaVA and (Ross's) SigLIP towers."""
    from .llava import CLIPLlavaVision, CLIPVipLlavaVision, SigLIPLlavaVision
    from .llava_repo import CLIPMultiLayerRepoTower, CLIPRepoTower, ConvNeXtRepoTower, S2RepoTower, SigLIPRepoTower

    return [CLIPLlavaVision(), CLIPVipLlavaVision(), SigLIPLlavaVision(),
            CLIPRepoTower(), CLIPMultiLayerRepoTower(), S2RepoTower(), ConvNeXtRepoTower(),
            SigLIPRepoTower()]


@hookimpl
def vlmkit_register_commands(cli: Any) -> None:
    """``vlmkit models timm|hf-vision [PATTERN]``: search the generic encoders' libraries offline."""
    from .models_command import make_command

    cli.command("models")(make_command())
