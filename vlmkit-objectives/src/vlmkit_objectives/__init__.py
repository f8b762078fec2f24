"""vlmkit training objectives beyond next-token prediction.

``ross``: Reconstructive Visual Instruction Tuning. A DiT denoiser, conditioned on the LLM's final
hidden states at an image's visual-token positions, learns to denoise the FLUX VAE latents of that
image. Importing this package stays light: the modules load torch/diffusers when used.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

__all__ = ["RossObjective", "RossDenoiser", "LatentCache", "build_latent_cache", "reconstruct"]

_LAZY = {
    "RossObjective": "vlmkit_objectives.ross",
    "RossDenoiser": "vlmkit_objectives.denoiser",
    "LatentCache": "vlmkit_objectives.latent_cache",
    "build_latent_cache": "vlmkit_objectives.latent_cache",
    "reconstruct": "vlmkit_objectives.reconstruct",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'vlmkit_objectives' has no attribute '{name}'")
