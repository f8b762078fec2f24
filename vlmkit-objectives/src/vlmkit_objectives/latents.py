"""From an encoder's normalised pixels to the Ross target: VAE latents on the visual-token grid.

The VAE downsamples 8x and the target groups 2x2 latent cells into one token, so an image resized to
``grid * 16`` pixels gives exactly one 64-channel target per visual token (24x24 at 384 px for
CLIP-336, 27x27 at 432 px for SigLIP-384). Non-square grids (native aspect ratio) resize to
``(gh * 16, gw * 16)``.

The posterior is kept as (mean, std) so that a cache of moments gives the same objective as running
the VAE every step: the target is a fresh *sample* ``mean + std * eps`` each time, as in the original.
"""

from __future__ import annotations

import contextlib
from typing import ContextManager

import torch
import torch.nn.functional as F

from vlmkit.data.image_processing import denormalize
from vlmkit.model.contracts import ImageView

#: latent cells per visual token along each side, and pixels per latent cell
GROUP = 2
VAE_STRIDE = 8
PIXELS_PER_TOKEN = GROUP * VAE_STRIDE


def vae_pixels(pixel_values: torch.Tensor, view: ImageView, grid: tuple[int, int]) -> torch.Tensor:
    """(B,3,H,W) normalised pixels -> (B,3,gh*16,gw*16) in [-1,1] for the VAE (fp32).

    Bilinear, as the original; antialiased only where a side shrinks (a no-op when upsampling, so
    CLIP 336 -> 384 is the original's resize, while ConvNeXt 1536 -> 384 does not alias).
    """
    x = denormalize(pixel_values.float(), view) * 2.0 - 1.0
    size = (grid[0] * PIXELS_PER_TOKEN, grid[1] * PIXELS_PER_TOKEN)
    if tuple(x.shape[-2:]) == size:
        return x
    shrink = size[0] < x.shape[-2] or size[1] < x.shape[-1]
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=shrink)


def no_autocast(device: torch.device) -> ContextManager:
    """Leave any surrounding autocast (meta tensors have no autocast to leave)."""
    if device.type == "meta":
        return contextlib.nullcontext()
    return torch.autocast(device.type, enabled=False)


def posterior_moments(vae: torch.nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The VAE posterior's (mean, std), each (B, C, H/8, W/8), computed in fp32 without gradients."""
    dtype = next(vae.parameters()).dtype
    with torch.no_grad(), no_autocast(x.device):
        dist = vae.encode(x.to(dtype)).latent_dist
    return dist.mean.float(), dist.std.float()


def sample_latents(mean: torch.Tensor, std: torch.Tensor, scale: float, shift: float,
                   generator: torch.Generator | None = None) -> torch.Tensor:
    """``(posterior sample - shift) * scale``, the FLUX latent normalisation (as ``latent_dist.sample()``)."""
    eps = torch.randn(mean.shape, generator=generator, device=mean.device, dtype=mean.dtype)
    return (mean + std * eps - shift) * scale


def group_latents(z: torch.Tensor) -> torch.Tensor:
    """(B, C, 2h, 2w) -> (B, 4C, h, w); channel index ``c*4 + p1*2 + p2`` (c-major, then p1, p2): exactly
    ``pixel_unshuffle`` by 2."""
    return F.pixel_unshuffle(z, GROUP)


def ungroup_latents(x: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`group_latents` (``pixel_shuffle`` by 2)."""
    return F.pixel_shuffle(x, GROUP)
