"""From a conversation and its images to model inputs, and from samples to a batch.

Shared by training data (vlmkit-data) and inference (``generate``), so both see exactly the same
template, preprocessing and token budget.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

import torch
from PIL import Image

from vlmkit.data.image_processing import Affine, preprocess
from vlmkit.data.templates import ChatTemplate, Encoded, Turn, get_template, truncate
from vlmkit.data.tiled_view import tile_grid, tiled_crops
from vlmkit.errors import DataError
from vlmkit.model.contracts import IGNORE_INDEX, IMAGE_PLACEHOLDER, ImageView
from vlmkit.model.tiling import Tiling


class LabelPolicyError(DataError, ValueError):
    """A sample would have no supervised token (all labels masked), cannot fit the length budget, or its image
    placeholders and images do not pair up. A user error (``DataError``); still a ``ValueError`` for callers
    that caught it as one."""


@dataclass
class Features:
    """One processed sample, not yet padded."""

    input_ids: list[int]
    labels: list[int]
    pixel_values: dict[str, list[torch.Tensor]] = field(default_factory=dict)
    boxes: dict[str, list[torch.Tensor]] | None = None
    num_images: int = 0
    meta: dict[str, Any] = field(default_factory=dict)
    #: tiling models: each image's original (height, width); its pixel values are (crops, 3, s, s)
    image_sizes: list[tuple[int, int]] = field(default_factory=list)

    def visual_sizes(self, i: int) -> tuple[dict[str, tuple[int, int]], dict[str, Any]]:
        """What ``visual_tokens`` needs of image ``i``: each view's (h, w), and for a tiled image its original
        size and crop count as keyword arguments."""
        sizes = {v: tuple(t[i].shape[-2:]) for v, t in self.pixel_values.items()}
        if not self.image_sizes:
            return sizes, {}
        first = next(iter(self.pixel_values.values()))[i]
        return sizes, {"image_size": self.image_sizes[i], "num_crops": first.shape[0] if first.dim() == 4 else 1}


class MultimodalProcessor:
    """Template + tokenizer + image views + length budget."""

    def __init__(self, tokenizer: Any, template: ChatTemplate | str | dict[str, Any], views: Mapping[str, ImageView],
                 max_length: int, visual_tokens: Callable[[Mapping[str, tuple[int, int]]], int],
                 resize_policy: str | None = None, tiling: Tiling | None = None):
        self.tokenizer = tokenizer
        #: AnyRes: pinpoints in px of the first view (a built model's ``tiling``), or None
        self.tiling = tiling
        self.template = template if isinstance(template, ChatTemplate) else get_template(template)
        self.views = dict(views)
        self.max_length = max_length
        self.visual_tokens = visual_tokens
        self.resize_policy = resize_policy

    @classmethod
    def for_model(cls, model: Any, template: str | dict[str, Any] | None = None, resize_policy: str | None = None,
                  max_length: int | None = None) -> "MultimodalProcessor":
        return cls(model.tokenizer, template or model.config.template, model.views,
                   max_length or model.config.max_length, model.visual_tokens, resize_policy,
                   getattr(model, "tiling", None))

    def images(self, images: Sequence[Image.Image]) -> tuple[dict[str, list[torch.Tensor]], dict[str, list[Affine]]]:
        pix: dict[str, list[torch.Tensor]] = {v: [] for v in self.views}
        aff: dict[str, list[Affine]] = {v: [] for v in self.views}
        if self.tiling is not None:
            first = next(iter(self.views.values()))
            tile = self.tiling.tiles(len(images))
            for img in images:
                grid = tile_grid((img.height, img.width), self.tiling, first.size) if tile else None
                for name, view in self.views.items():
                    pix[name].append(tiled_crops(img, view, grid, self.tiling.resampler))
            return pix, aff
        for img in images:
            for name, view in self.views.items():
                t, a = preprocess(img, view, self.resize_policy if view.resize != "native" else None)
                pix[name].append(t)
                aff[name].append(a)
        return pix, aff

    def __call__(self, turns: Sequence[Turn], images: Sequence[Image.Image] = (),
                 boxes: Sequence[Any] | None = None, *, generation: bool = False) -> Features:
        enc: Encoded = self.template.encode(turns, self.tokenizer, generation=generation)
        n_placeholders = enc.input_ids.count(IMAGE_PLACEHOLDER)
        if n_placeholders != len(images):
            raise LabelPolicyError(f"{n_placeholders} <image> placeholder(s) in the conversation but {len(images)} image(s)")
        pix, aff = self.images(images)
        sizes = [(img.height, img.width) for img in images] if self.tiling is not None else []
        probe = Features([], [], pix, None, len(images), image_sizes=sizes)
        visual = 0
        for i in range(len(images)):
            view_sizes, extra = probe.visual_sizes(i)
            visual += self.visual_tokens(view_sizes, **extra)
        budget = self.max_length - visual + n_placeholders
        if budget <= n_placeholders:
            raise LabelPolicyError(f"images take {visual} tokens, leaving no room for text within max_length={self.max_length}")
        full_length = len(enc.input_ids) - n_placeholders + visual
        try:
            enc = truncate(enc, budget)
        except ValueError as exc:
            raise LabelPolicyError(str(exc)) from exc
        if not generation and enc.num_supervised == 0:
            raise LabelPolicyError("no supervised token left: every label is masked"
                                   + (" after truncation to max_length" if budget < len(enc.labels) + 1 else ""))
        feats = Features(enc.input_ids, enc.labels, pix, None, len(images), image_sizes=sizes)
        if full_length > self.max_length:  # cut at the end to fit: counted in the stage's data report
            feats.meta["truncated_from"] = full_length
        if boxes is not None and self.views and self.tiling is None:
            feats.boxes = {v: [aff[v][i].boxes(b) if b is not None and len(b) else torch.zeros(0, 4)
                               for i, b in enumerate(boxes)] for v in self.views}
        return feats


def collate(features: Sequence[Features], pad_token_id: int, padding_side: str = "right",
            views: Sequence[str] | None = None) -> dict[str, Any]:
    """Pad ids/labels/mask; stack pixel values per view (a list when sizes differ)."""
    n = max(len(f.input_ids) for f in features)
    ids = torch.full((len(features), n), pad_token_id, dtype=torch.long)
    labels = torch.full((len(features), n), IGNORE_INDEX, dtype=torch.long)
    mask = torch.zeros((len(features), n), dtype=torch.long)
    for i, f in enumerate(features):
        L = len(f.input_ids)
        sl = slice(n - L, n) if padding_side == "left" else slice(0, L)
        ids[i, sl] = torch.tensor(f.input_ids, dtype=torch.long)
        labels[i, sl] = torch.tensor(f.labels, dtype=torch.long)
        mask[i, sl] = 1
    batch: dict[str, Any] = {"input_ids": ids, "attention_mask": mask, "labels": labels}
    view_names = list(views) if views is not None else sorted({v for f in features for v in f.pixel_values})
    batch.update(stack_images(features, view_names))
    return batch


def stack_images(features: Sequence[Features], views: Sequence[str]) -> dict[str, Any]:
    """``pixel_values`` (and ``boxes``) of a batch, images in sample order; a list per view when sizes differ."""
    out: dict[str, Any] = {}
    if not any(f.num_images for f in features):
        return out
    pv: dict[str, Any] = {}
    for v in views:
        imgs = [t for f in features for t in f.pixel_values.get(v, [])]
        same = len({tuple(t.shape) for t in imgs}) == 1
        pv[v] = torch.stack(imgs) if same else imgs
    out["pixel_values"] = pv
    if any(f.image_sizes for f in features):  # a tiling model's images: their original (height, width)
        out["image_sizes"] = torch.tensor([s for f in features for s in f.image_sizes], dtype=torch.long)
    if any(f.boxes is not None for f in features):
        out["boxes"] = {v: [b for f in features for b in (f.boxes or {}).get(v, [torch.zeros(0, 4)] * f.num_images)]
                        for v in views}
    return out
