"""Python generation API: a checkpoint (or model), images and a prompt -> text."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any, Sequence

import torch
from PIL import Image

from vlmkit.data.image_files import UndecodableImage, decode_image
from vlmkit.data.processing import MultimodalProcessor, collate
from vlmkit.data.samples import Sample
from vlmkit.data.templates import IMAGE_TOKEN, Turn
from vlmkit.model.vlm import VisionLanguageModel


def _load_model(model: str | Path | VisionLanguageModel) -> VisionLanguageModel:
    if isinstance(model, VisionLanguageModel):
        return model
    from vlmkit.model.checkpoint import load_checkpoint

    return load_checkpoint(model)


def open_image(path: str | Path | Image.Image) -> Image.Image:
    if isinstance(path, Image.Image):
        return path.convert("RGB")
    from vlmkit.errors import DataError

    try:
        return decode_image(path)
    except FileNotFoundError as exc:
        raise DataError(str(exc), file=str(path), field="image", kind="missing_image") from None
    except UndecodableImage as exc:
        raise DataError(str(exc), file=str(path), field="image", kind="corrupt_image") from None


def build_prompt_turns(prompt: str, n_images: int) -> list[Turn]:
    if n_images and IMAGE_TOKEN not in prompt:
        prompt = (IMAGE_TOKEN + "\n") * n_images + prompt
    return [Turn("user", prompt)]


@torch.no_grad()
def generate_batch(model: VisionLanguageModel, conversations: Sequence[Sequence[Turn]],
                   images: Sequence[Sequence[Image.Image]], *, template: str | None = None,
                   max_new_tokens: int = 32, processor: MultimodalProcessor | None = None,
                   boxes: Sequence[Any] | None = None, **gen_kwargs: Any) -> list[str]:
    processor = processor or MultimodalProcessor.for_model(model, template=template)
    feats = [processor(turns, imgs, boxes[i] if boxes else None, generation=True)
             for i, (turns, imgs) in enumerate(zip(conversations, images))]
    batch = collate(feats, model.tokenizer.pad_token_id, "left", list(model.views))
    device = next(model.parameters()).device
    pv = batch.get("pixel_values")
    if pv is not None:
        pv = {k: (v.to(device) if isinstance(v, torch.Tensor) else [t.to(device) for t in v]) for k, v in pv.items()}
    out = model.generate(batch["input_ids"].to(device), batch["attention_mask"].to(device), pv,
                         boxes=batch.get("boxes"), max_new_tokens=max_new_tokens, image_sizes=batch.get("image_sizes"),
                         **gen_kwargs)
    return [model.tokenizer.decode(row, skip_special_tokens=True).strip() for row in out]


def prompt_sample(images: Sequence[str | Path | Image.Image], prompt: str, *, transforms: Sequence[Any] = (),
                  seed: int = 0) -> Sample:
    """The sample a prompt makes: images opened, ``<image>`` placeholders first unless the prompt places
    them, then ``transforms`` applied in order with the random stream ``Random(seed)``.

    ``transforms``: transform components (``vlmkit.transforms``) as names, ``{"name": ..., "args": {...}}``
    specs or built objects, the same components data recipes apply (e.g. a plugin that draws a visual
    prompt on the image and names it in the text).
    """
    from vlmkit.model.assembly import build_component

    sample = Sample(id="prompt", turns=build_prompt_turns(prompt, len(images)),
                    images=[open_image(p) for p in images], source="prompt")
    rng = random.Random(seed)
    for t in transforms:
        fn = t if callable(t) else build_component("transform", t)
        sample = fn(sample, rng)
    return sample


def generate(model: str | Path | VisionLanguageModel, images: Sequence[str | Path | Image.Image], prompt: str, *,
             max_new_tokens: int = 64, template: str | None = None, do_sample: bool = False,
             transforms: Sequence[Any] = (), seed: int = 0, **gen_kwargs: Any) -> str:
    """Greedy (default) answer to ``prompt`` about ``images`` (after ``transforms``, see :func:`prompt_sample`)."""
    m = _load_model(model)
    m.eval()
    sample = prompt_sample(images, prompt, transforms=transforms, seed=seed)
    return generate_batch(m, [list(sample.turns)], [list(sample.images)], template=template,
                          max_new_tokens=max_new_tokens, do_sample=do_sample, **gen_kwargs)[0]
