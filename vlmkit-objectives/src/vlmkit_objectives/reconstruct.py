"""Picture what the LLM's hidden states hold about an image: Ross's denoiser samples VAE latents from
the hidden states at the image's visual tokens, and the VAE decodes them (the original released no
code for this; users reported only noise from ad-hoc attempts, Ross issue #14).

Under a causal LLM the hidden states of an image's tokens depend only on what precedes them, so a
prompt that starts with the image (the default) gives the same states the denoiser trained on.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from PIL import Image

from vlmkit.errors import ConfigError


def _ross(model: Any, name: str | None) -> Any:
    from .ross import RossObjective

    for key, obj in model.objectives.items():
        if isinstance(obj, RossObjective) and name in (None, key):
            return obj
    raise ConfigError("reconstruct: the model has no 'ross' objective" + (f" named '{name}'" if name else ""))


def to_pil(pixels: torch.Tensor) -> Image.Image:
    """(3, H, W) in [-1, 1] -> RGB image."""
    arr = ((pixels.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy()
    return Image.fromarray(np.ascontiguousarray(arr), "RGB")


@torch.no_grad()
def reconstruct(model: Any, image: Image.Image, steps: int = 50, *, seed: int | None = 0, prompt: str = "<image>",
                objective: str | None = None) -> Image.Image:
    """DDPM-sample the image's latents from the model's hidden states and decode them with the VAE.

    Returns an image of the VAE's working size (16 px per visual token, e.g. 384x384 for CLIP-336).
    ``steps`` evenly spaced steps of the 1000-step schedule (diffusers ``DDPMScheduler``).
    """
    from vlmkit.processing import MultimodalProcessor, collate
    from vlmkit.templates import Turn

    from .ross import gather_image_hidden

    if steps < 1:
        raise ConfigError(f"reconstruct: steps must be >= 1, got {steps}")
    obj = _ross(model, objective)
    if prompt.count("<image>") != 1:
        raise ConfigError("reconstruct: the prompt must hold exactly one <image>")
    processor = MultimodalProcessor.for_model(model)
    features = processor([Turn("user", prompt)], [image], generation=True)
    batch = collate([features], model.tokenizer.pad_token_id, views=list(model.views))
    device = next(obj.denoiser.parameters()).device
    batch = {k: ({v: t.to(device) for v, t in x.items()} if isinstance(x, dict) else x.to(device))
             for k, x in batch.items() if k != "labels"}
    was_training = model.training
    model.eval()
    try:
        out = model(**batch, compute_loss=False)
    finally:
        model.train(was_training)
    span = out.image_spans[0]
    grid = span.grid or obj.grid
    hidden = gather_image_hidden(out.hidden_states, [span])
    generator = torch.Generator(device="cpu").manual_seed(seed) if seed is not None else None
    latents = obj.sample(hidden, grid, steps=steps, generator=generator)
    return to_pil(obj.decode(latents)[0])
