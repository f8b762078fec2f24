"""Picture what the LLM's hidden states hold about an image: Ross's denoiser samples VAE latents from
the hidden states at the image's visual tokens, and the VAE decodes them (the original released no
code for this; users reported only noise from ad-hoc attempts, Ross issue #14).

Under a causal LLM the hidden states of an image's tokens depend only on what precedes them, so a
prompt that starts with the image (the default) gives the same states the denoiser trained on.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch
from PIL import Image

from vlmkit.errors import ConfigError

from .schedule import SAMPLE_CLIP


def ross_objective(model: Any, name: str | None = None) -> Any:
    """The model's Ross objective (the one named ``name`` when several are present)."""
    from .ross import RossObjective

    for key, obj in model.objectives.items():
        if isinstance(obj, RossObjective) and name in (None, key):
            return obj
    raise ConfigError("reconstruct: the model has no 'ross' objective" + (f" named '{name}'" if name else "")
                      + "; only checkpoints trained with the ross objective can reconstruct")


def to_pil(pixels: torch.Tensor) -> Image.Image:
    """(3, H, W) in [-1, 1] -> RGB image."""
    arr = ((pixels.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy()
    return Image.fromarray(np.ascontiguousarray(arr), "RGB")


@torch.no_grad()
def image_hidden_states(model: Any, images: Sequence[Image.Image], *, prompt: str = "<image>",
                        objective: str | None = None) -> tuple[torch.Tensor, tuple[int, int], torch.Tensor]:
    """Run the model on ``prompt`` with each image; return what Ross conditions on.

    ``(hidden (n, N, D_llm), grid, pixels (n, 3, H, W))``: the LLM's final hidden states at each image's
    main visual tokens, the token grid, and the normalised pixels the encoder saw (for the teacher).
    All images must give the same grid (true for fixed-size views).
    """
    from vlmkit.data.processing import MultimodalProcessor, collate
    from vlmkit.data.templates import Turn

    from .ross import gather_image_hidden

    obj = ross_objective(model, objective)
    if prompt.count("<image>") != 1:
        raise ConfigError("reconstruct: the prompt must hold exactly one <image>")
    if not images:
        raise ConfigError("reconstruct: no images given")
    processor = MultimodalProcessor.for_model(model)
    features = [processor([Turn("user", prompt)], [img], generation=True) for img in images]
    batch = collate(features, model.tokenizer.pad_token_id, views=list(model.views))
    device = next(obj.denoiser.parameters()).device
    batch = {k: ({v: t.to(device) for v, t in x.items()} if isinstance(x, dict) else x.to(device))
             for k, x in batch.items() if k != "labels"}
    was_training = model.training
    model.eval()
    try:
        out = model(**batch, compute_loss=False)
    finally:
        model.train(was_training)
    spans = out.image_spans
    grids = {tuple(s.grid or obj.grid) for s in spans}
    if len(grids) != 1:
        raise ConfigError(f"reconstruct: the images give different token grids {sorted(grids)}; "
                          "reconstruct them one at a time")
    pixels = batch["pixel_values"][obj.view.name]
    if not isinstance(pixels, torch.Tensor):
        pixels = torch.stack(list(pixels))
    return gather_image_hidden(out.hidden_states, spans), grids.pop(), pixels


@torch.no_grad()
def reconstruct_images(model: Any, images: Sequence[Image.Image], steps: int = 50, *, seed: int | None = 0,
                       prompt: str = "<image>", objective: str | None = None,
                       clip: float | None = SAMPLE_CLIP) -> list[Image.Image]:
    """DDPM-sample each image's latents from the model's hidden states and decode them with the VAE.

    Returns images of the VAE's working size (16 px per visual token, e.g. 384x384 for CLIP-336).
    ``steps`` evenly spaced steps of the 1000-step schedule (diffusers ``DDPMScheduler``); ``seed``
    fixes the sampling noise (None: fresh noise); ``clip`` clamps the predicted x0 (see
    ``RossObjective.sample``).
    """
    if steps < 1:
        raise ConfigError(f"reconstruct: steps must be >= 1, got {steps}")
    hidden, grid, _ = image_hidden_states(model, images, prompt=prompt, objective=objective)
    return sample_reconstructions(ross_objective(model, objective), hidden, grid, steps, seed=seed, clip=clip)


@torch.no_grad()
def sample_reconstructions(obj: Any, hidden: torch.Tensor, grid: tuple[int, int], steps: int = 50, *,
                           seed: int | None = 0, clip: float | None = SAMPLE_CLIP) -> list[Image.Image]:
    """Sample and decode from hidden states already gathered by :func:`image_hidden_states`."""
    generator = torch.Generator(device="cpu").manual_seed(seed) if seed is not None else None
    latents = obj.sample(hidden, grid, steps=steps, generator=generator, clip=clip)
    return [to_pil(x) for x in obj.decode(latents)]


def reconstruct(model: Any, image: Image.Image, steps: int = 50, *, seed: int | None = 0, prompt: str = "<image>",
                objective: str | None = None, clip: float | None = SAMPLE_CLIP) -> Image.Image:
    """One image: see :func:`reconstruct_images`."""
    return reconstruct_images(model, [image], steps, seed=seed, prompt=prompt, objective=objective, clip=clip)[0]


@torch.no_grad()
def teacher_reconstruction(model: Any, pixels: torch.Tensor, grid: tuple[int, int],
                           objective: str | None = None) -> torch.Tensor:
    """The VAE's own reconstruction (decoded posterior mean) of normalised pixels: the ceiling Ross can reach."""
    from .latents import group_latents

    obj = ross_objective(model, objective)
    mean, _ = obj.latent_moments(pixels, grid)
    return obj.decode(group_latents((mean - obj.latent_shift) * obj.latent_scale))


def comparison_sheet(rows: Sequence[Sequence[Image.Image]], labels: Sequence[str], scale: int = 2) -> Image.Image:
    """A picture with one column per entry of ``labels`` and one row per image (upscaled, nearest)."""
    from PIL import ImageDraw

    w, h = (s * scale for s in rows[0][0].size)
    pad, head = 4, 14
    sheet = Image.new("RGB", (len(labels) * (w + pad) + pad, head + len(rows) * (h + pad) + pad), "white")
    draw = ImageDraw.Draw(sheet)
    for j, label in enumerate(labels):
        draw.text((pad + j * (w + pad), 2), label, fill="black")
    for i, row in enumerate(rows):
        for j, img in enumerate(row):
            sheet.paste(img.convert("RGB").resize((w, h), Image.NEAREST), (pad + j * (w + pad), head + pad + i * (h + pad)))
    return sheet
