"""The assembled model: encoders -> connectors -> splice -> LLM -> objectives.

A generic container in the spirit of torchtune's fusion model: it knows the contracts, never a
specific plugin. Frozen encoders run under ``torch.no_grad`` and stay in eval mode (no dropout or
stochastic depth in a frozen tower, unlike some originals).
"""

from __future__ import annotations

import dataclasses
from collections import OrderedDict
from typing import Any, Mapping, Sequence

import torch
from torch import nn

from vlmkit.model import packed_rows
from vlmkit.model.config import ModelConfig
from vlmkit.model.contracts import (
    IMAGE_PLACEHOLDER,
    Connector,
    ImageView,
    ModelOutput,
    Objective,
    StreamSpec,
    VisionEncoder,
    VisualContext,
    VisualFeatures,
    non_persistent_prefixes,
)
from vlmkit.model.llm import LanguageModel
from vlmkit.model.splice import splice
from vlmkit.model.tile_merge import TileMerge
from vlmkit.model.tiling import Tiling, count_tokens

PixelValues = Mapping[str, "torch.Tensor | Sequence[torch.Tensor]"]


def _frozen(module: nn.Module) -> bool:
    return not any(p.requires_grad for p in module.parameters())


class VisionLanguageModel(nn.Module):
    def __init__(self, config: ModelConfig, encoders: Sequence[VisionEncoder], connectors: Sequence[Connector],
                 llm: LanguageModel, objectives: Mapping[str, Objective], weights: Mapping[str, float],
                 visual_spec: StreamSpec | None, tiling: Tiling | None = None):
        super().__init__()
        self.config = config
        self.encoders = nn.ModuleList(encoders)
        self.connectors = nn.ModuleList(connectors)
        self.llm = llm
        self.objectives = nn.ModuleDict(objectives)
        self.loss_weights = dict(weights)
        self.visual_spec = visual_spec
        self._needs_hidden = any(getattr(o, "needs_hidden_states", False) for o in objectives.values())
        #: AnyRes (pinpoints in px of the first view, resolved at build), or None: one crop per image
        self.tiling = tiling
        if tiling is not None:
            enc = self.encoders[0]
            self.tile_merge = TileMerge(tiling, enc.view.size, visual_spec.grid if visual_spec else None,
                                        llm.hidden_size)

    # -- description -------------------------------------------------------------------------
    @property
    def views(self) -> dict[str, ImageView]:
        """The image views the data pipeline must produce, by name."""
        out: dict[str, ImageView] = {}
        for enc in self.encoders:
            v = enc.view
            if v.name in out and out[v.name] != v:
                raise ValueError(f"encoders disagree on view '{v.name}': {out[v.name]} vs {v}")
            out[v.name] = v
        return out

    @property
    def needs_boxes(self) -> bool:
        return any(getattr(c, "needs_boxes", False) for c in self.connectors)

    @property
    def tokenizer(self) -> Any:
        return self.llm.tokenizer

    def named_components(self) -> "OrderedDict[str, nn.Module]":
        """Addressable parts: ``encoder.<name>``, ``fusion.<name>``, ``connector``, ``tile_merge`` (tiling models),
        ``llm``, ``objective.<name>``."""
        parts: OrderedDict[str, nn.Module] = OrderedDict()
        for i, enc in enumerate(self.encoders):
            parts[f"encoder.{i}"] = enc
        for i, con in enumerate(self.connectors[:-1]):
            parts[f"fusion.{i}"] = con
        if len(self.connectors):
            parts["connector"] = self.connectors[-1]
        if self.tiling is not None:  # the image-newline embedding: trained with the connector in LLaVA-NeXT
            parts["tile_merge"] = self.tile_merge
        parts["llm"] = self.llm
        for name, obj in self.objectives.items():
            parts[f"objective.{name}"] = obj
        return parts

    def visual_tokens_per_image(self) -> int | None:
        return self.visual_spec.num_tokens if self.visual_spec is not None else None

    def visual_tokens(self, sizes: Mapping[str, tuple[int, int]], image_size: tuple[int, int] | None = None,
                      num_crops: int = 1) -> int:
        """Main visual tokens for one image whose views have these (h, w) sizes (text budgeting).

        Exact for fixed-size views; for native sizes the first encoder's count is scaled by the
        connector chain's ratio at the configured size. Extra groups (object tokens) are not counted.
        A tiling model also needs the image's original (h, w) ``image_size`` and its ``num_crops`` (1: the
        base crop only, else 1 + tiles): its count depends on the image (``vlmkit.model.tiling``).
        """
        if self.visual_spec is None:
            return 0
        enc = self.encoders[0]
        if self.tiling is not None:
            return count_tokens(self.tiling, self.visual_spec.grid or (1, self.visual_spec.num_tokens),
                                enc.view.size, image_size, num_crops)
        h, w = sizes[enc.view.name]
        configured = enc.spec().num_tokens
        return max(1, round(enc.num_tokens(h, w) * self.visual_spec.num_tokens / configured))

    def visual_tokens_for_image(self, height: int, width: int, images_in_sample: int = 1) -> int:
        """Main visual tokens an image of ``height`` x ``width`` px becomes, decided as the data pipeline decides
        (its views' sizes, tiled or not), without pixels: ``vlmkit build --meta --image-size``."""
        from vlmkit.model.tiling import grid_shape

        if self.visual_spec is None:
            return 0
        sizes = {name: v.pixel_size(width, height)[::-1] for name, v in self.views.items()}
        if self.tiling is None:
            return self.visual_tokens(sizes)
        crops = 1
        if self.tiling.tiles(images_in_sample):
            rows, cols = grid_shape((height, width), self.tiling.pinpoints, self.encoders[0].view.size)
            crops = 1 + rows * cols
        return self.visual_tokens(sizes, image_size=(height, width), num_crops=crops)

    def train(self, mode: bool = True) -> "VisionLanguageModel":
        super().train(mode)
        for enc in self.encoders:  # a frozen tower never trains: no dropout / drop-path noise
            if mode and _frozen(enc):
                enc.eval()
        return self

    # -- vision ------------------------------------------------------------------------------
    def encode_images(self, pixel_values: PixelValues, boxes: Mapping[str, Sequence[torch.Tensor]] | None = None,
                      image_sizes: "torch.Tensor | Sequence[Sequence[int]] | None" = None,
                      ) -> tuple[list[torch.Tensor], list[int], list[tuple[int, int] | None]]:
        """Run encoders and connectors. Returns one (n_k, D_llm) block per image, in input order.

        Images of different sizes (native aspect ratio) are processed in groups of equal size. A tiling
        model takes per image a (crops, 3, s, s) tensor and its original (h, w) in ``image_sizes``; every crop
        goes through the encoders and connectors as an image, then ``TileMerge`` lays out each image's crops.
        """
        if self.tiling is not None:
            return self._encode_tiled(pixel_values, image_sizes)
        return self._encode_crops(pixel_values, boxes)

    def _encode_tiled(self, pixel_values: PixelValues, image_sizes: Any
                      ) -> tuple[list[torch.Tensor], list[int], list[tuple[int, int] | None]]:
        views = list(self.views)
        per_image = {v: list(pixel_values[v]) for v in views}
        n_images = len(per_image[views[0]])
        if image_sizes is None or len(image_sizes) != n_images:
            got = "none" if image_sizes is None else len(image_sizes)
            raise ValueError(f"a tiling model needs image_sizes, one (height, width) per image: {n_images} images, "
                             f"{got} sizes")
        counts = [t.shape[0] if t.dim() == 4 else 1 for t in per_image[views[0]]]
        flat = {v: torch.cat([t if t.dim() == 4 else t[None] for t in per_image[v]]) for v in views}
        crops, _, _ = self._encode_crops(flat, None)
        blocks, at = [], 0
        for i, n in enumerate(counts):
            size = tuple(int(x) for x in image_sizes[i])
            blocks.append(self.tile_merge(torch.stack(crops[at:at + n]), size))
            at += n
        return blocks, [b.shape[0] for b in blocks], [None] * n_images

    def base_crops(self, pixel_values: PixelValues) -> dict[str, torch.Tensor]:
        """Each image's base crop per view, (N, 3, s, s): what objectives see of a tiled batch's pixels."""
        return {v: torch.stack([t[0] if t.dim() == 4 else t for t in pixel_values[v]]) for v in self.views}

    def _encode_crops(self, pixel_values: PixelValues, boxes: Mapping[str, Sequence[torch.Tensor]] | None
                      ) -> tuple[list[torch.Tensor], list[int], list[tuple[int, int] | None]]:
        views = list(self.views)
        first = pixel_values[views[0]]
        n_images = len(first)
        if n_images == 0:
            return [], [], []
        shapes = [tuple(tuple(pixel_values[v][i].shape[-2:]) for v in views) for i in range(n_images)]
        groups: dict[tuple, list[int]] = {}
        for i, s in enumerate(shapes):
            groups.setdefault(s, []).append(i)

        blocks: list[torch.Tensor | None] = [None] * n_images
        num_main = [0] * n_images
        grids: list[tuple[int, int] | None] = [None] * n_images
        for _, idx in groups.items():
            batch = {}
            for v in views:
                pv = pixel_values[v]
                if isinstance(pv, torch.Tensor) and len(idx) == pv.shape[0]:
                    batch[v] = pv
                elif isinstance(pv, torch.Tensor):
                    batch[v] = pv[torch.as_tensor(idx, device=pv.device)]
                else:
                    batch[v] = torch.stack([pv[i] for i in idx])
            streams: list[VisualFeatures] = []
            for enc in self.encoders:
                x = batch[enc.view.name]
                if _frozen(enc):
                    with torch.no_grad():
                        feats = enc(x)
                else:
                    feats = enc(x)
                streams.append(feats)
            ctx = VisualContext(
                image_sizes={v: tuple(batch[v].shape[-2:]) for v in views},
                boxes={v: [boxes[v][i] for i in idx] for v in boxes} if boxes else None,
            )
            for con in self.connectors:
                streams = con(streams, ctx)
            main = streams[0]
            for j, i in enumerate(idx):
                parts = [main.tokens[j]] + [group[j] for group in ctx.extra_groups]
                blocks[i] = torch.cat(parts, 0) if len(parts) > 1 else parts[0]
                num_main[i] = main.tokens.shape[1]
                grids[i] = main.grid
        scale = self.llm.visual_token_scale
        if scale != 1.0:  # the LLM rescales its input embeddings (Gemma): visual tokens are pre-divided, as PaliGemma
            blocks = [b * scale for b in blocks]
        return blocks, num_main, grids  # type: ignore[return-value]

    # -- full forward ------------------------------------------------------------------------
    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                labels: torch.Tensor | None = None, pixel_values: PixelValues | None = None,
                boxes: Mapping[str, Sequence[torch.Tensor]] | None = None,
                num_items_in_batch: torch.Tensor | int | None = None, compute_loss: bool | None = None,
                segment_ids: torch.Tensor | None = None, image_sizes: Any = None, **extra: Any) -> ModelOutput:
        """``segment_ids`` marks packed rows (several samples per row, see ``vlmkit.data.packing``);
        ``image_sizes`` gives a tiling model each image's original (height, width)."""
        has_images = bool((input_ids == IMAGE_PLACEHOLDER).any())
        if has_images and pixel_values is None:
            raise ValueError("input_ids hold image placeholders but no pixel_values were given")
        blocks, num_main, grids = (self.encode_images(pixel_values, boxes, image_sizes) if has_images
                                   else ([], [], []))
        sp = splice(input_ids, attention_mask, labels, blocks, self.llm.embed, num_main=num_main, grids=grids,
                    padding_side=self.config.padding_side,
                    max_length=None if segment_ids is not None else self.config.max_length, segment_ids=segment_ids)
        embeds, mask, positions, new_labels, spans = sp.inputs_embeds, sp.attention_mask, sp.position_ids, sp.labels, sp.spans
        llm_mask: torch.Tensor | None = mask
        if sp.segment_ids is not None:
            # packed: restarting position ids and no 2-D mask make transformers keep the samples apart
            valid = sp.segment_ids > 0
            positions, llm_mask = packed_rows.segment_position_ids(sp.segment_ids), None
            if self.llm.attn_implementation in packed_rows.FLAT_ONLY:
                embeds, positions, new_labels, spans = packed_rows.flatten_rows(embeds, positions, new_labels, valid, spans)
                valid = torch.ones(positions.shape, dtype=torch.bool, device=positions.device)
            mask = valid.long()
        elif self.config.padding_side == "right":
            # right padding: every row counts 0, 1, 2, ..., so one row broadcasts and the LLM's rotary tables
            # (cos and sin, kept for backward) are (1, L, head_dim) instead of (B, L, head_dim)
            positions = positions[:1]
        # no KV cache in a full forward: a cache would also switch off transformers' packed-sequence masking
        logits, hidden, _ = self.llm(embeds, llm_mask, positions, want_hidden=self._needs_hidden, use_cache=False)
        out = ModelOutput(logits=logits, losses={}, hidden_states=hidden, attention_mask=mask,
                          labels=new_labels, image_spans=spans, visual_tokens=list(blocks))
        if compute_loss is None:
            compute_loss = labels is not None
        if compute_loss:
            if self.tiling is not None and has_images:  # objectives see one (N, 3, s, s) base crop per image
                pixel_values = self.base_crops(pixel_values)
            batch = {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels,
                     "pixel_values": pixel_values, "boxes": boxes, "image_sizes": image_sizes,
                     "num_items_in_batch": num_items_in_batch, **extra}
            total = None
            for name, objective in self.objectives.items():
                terms = objective(out, batch)
                w = self.loss_weights.get(name, 1.0)
                for term_name, value in terms.items():
                    out.losses[term_name] = value
                    total = value * w if total is None else total + value * w
            if total is not None:  # loss first among the items, as the Trainer reads them (out[0], out[1:])
                out = dataclasses.replace(out, loss=total)
        return out

    # -- generation --------------------------------------------------------------------------
    @torch.no_grad()
    def generate(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                 pixel_values: PixelValues | None = None, boxes: Mapping[str, Sequence[torch.Tensor]] | None = None,
                 max_new_tokens: int = 32, image_sizes: Any = None, **gen_kwargs: Any) -> torch.Tensor:
        """Greedy by default; returns only the new token ids (B, T). Prompts are spliced left-padded."""
        has_images = bool((input_ids == IMAGE_PLACEHOLDER).any())
        blocks, num_main, grids = (self.encode_images(pixel_values, boxes, image_sizes) if has_images
                                   else ([], [], []))
        sp = splice(input_ids, attention_mask, None, blocks, self.llm.embed, num_main=num_main, grids=grids,
                    padding_side="left", max_length=self.config.max_length)
        tok = self.llm.tokenizer
        gen_kwargs.setdefault("do_sample", False)
        gen_kwargs.setdefault("pad_token_id", tok.pad_token_id)
        gen_kwargs.setdefault("eos_token_id", tok.eos_token_id)
        return self.llm.model.generate(inputs_embeds=sp.inputs_embeds, attention_mask=sp.attention_mask,
                                       max_new_tokens=max_new_tokens, **gen_kwargs)

    # -- bookkeeping -------------------------------------------------------------------------
    def persistent_state_dict(self) -> dict[str, torch.Tensor]:
        """State dict without frozen teachers that components declare non-persistent."""
        skip = non_persistent_prefixes(self)
        return {k: v for k, v in self.state_dict().items() if not any(k == s or k.startswith(s + ".") for s in skip)}

    def summary(self) -> dict[str, Any]:
        parts = []
        for name, module in self.named_components().items():
            total = sum(p.numel() for p in module.parameters())
            trainable = sum(p.numel() for p in module.parameters() if p.requires_grad)
            parts.append({"part": name, "component": getattr(module, "component_name", "") or type(module).__name__,
                          "parameters": total, "trainable": trainable})
        return {
            "parts": parts,
            "parameters": sum(p["parameters"] for p in parts),
            "trainable": sum(p["trainable"] for p in parts),
            "visual_tokens_per_image": self.visual_tokens_per_image(),
            "extra_tokens": [type(c).__name__ for c in self.connectors if getattr(c, "needs_boxes", False)],
            "views": {k: {"size": v.size, "resize": v.resize} for k, v in self.views.items()},
            "tiling": self.tiling.to_dict() if self.tiling is not None else None,
            "llm": self.llm.display_name,
            "d_llm": self.llm.hidden_size,
            "objectives": {k: self.loss_weights.get(k, 1.0) for k in self.objectives},
        }
