"""Deterministic inputs for conformance checks: images, boxes and a small mixed batch.

The batch goes through the real data path (template, tokenizer, image views, collate), so a component
sees exactly what training would feed it: one row with one image, a text-only row, and a row with two
images; boxes (in original-image pixels) whenever the model needs them.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from PIL import Image

from vlmkit.data.processing import MultimodalProcessor, collate
from vlmkit.data.templates import Turn
from vlmkit.model.vlm import VisionLanguageModel

#: (width, height) of the test images: not square, so padding/resizing policies are exercised
IMAGE_SIZE = (48, 40)

CONVERSATIONS: list[tuple[list[Turn], int]] = [
    ([Turn("user", "<image>\nWhat shape is in the picture?"), Turn("assistant", "a red circle")], 1),
    ([Turn("user", "How many colours are there?"), Turn("assistant", "three")], 0),
    ([Turn("user", "<image> and <image>: which image is brighter?"), Turn("assistant", "the left one")], 2),
]


def random_images(n: int, seed: int = 0, size: tuple[int, int] = IMAGE_SIZE) -> list[Image.Image]:
    rng = np.random.default_rng(seed)
    w, h = size
    return [Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8), "RGB") for _ in range(n)]


def random_boxes(n_images: int, seed: int = 0, size: tuple[int, int] = IMAGE_SIZE, per_image: int = 2) -> list[np.ndarray]:
    """xyxy boxes inside each image, in original pixels (as a dataset delivers them)."""
    rng = np.random.default_rng(seed + 1)
    w, h = size
    out = []
    for _ in range(n_images):
        x0 = rng.uniform(0, w / 2, per_image)
        y0 = rng.uniform(0, h / 2, per_image)
        x1 = x0 + rng.uniform(4, w / 2, per_image)
        y1 = y0 + rng.uniform(4, h / 2, per_image)
        out.append(np.stack([x0, y0, x1, y1], 1).astype(np.float32))
    return out


def conversation_batch(model: VisionLanguageModel, *, images: bool = True, boxes: bool | None = None,
                       seed: int = 0) -> dict[str, Any]:
    """A collated batch for ``model``: input_ids, attention_mask, labels, pixel_values (and boxes)."""
    proc = MultimodalProcessor.for_model(model)
    with_boxes = model.needs_boxes if boxes is None else boxes
    rows = CONVERSATIONS if images else [c for c in CONVERSATIONS if c[1] == 0]
    feats = []
    for i, (turns, n) in enumerate(rows):
        imgs = random_images(n, seed + i)
        bxs = random_boxes(n, seed + i) if with_boxes else None
        feats.append(proc(turns, imgs, bxs))
    return collate(feats, model.tokenizer.pad_token_id, model.config.padding_side, views=list(model.views))


def move_batch(batch: Any, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> Any:
    """Move every tensor of a (nested) batch; ``dtype`` applies to floating tensors only."""
    if isinstance(batch, torch.Tensor):
        return batch.to(device=device, dtype=dtype if dtype is not None and batch.is_floating_point() else None)
    if isinstance(batch, dict):
        return {k: move_batch(v, device, dtype) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)):
        return type(batch)(move_batch(v, device, dtype) for v in batch)
    return batch


def devices() -> list[str]:
    """Devices to move components to: the CPU, and CUDA when there is one."""
    return ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
