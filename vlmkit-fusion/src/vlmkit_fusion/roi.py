"""RoI object tokens (MG-LLaVA's ``align_box`` + ``bbox_projector``): one LLM token per detected box.

For each image, every stage map of one stream is bilinearly upsampled (``align_corners=False``, in
fp32) to the finest map's size and concatenated on channels (2880 channels for ConvNeXt-L at 768 px:
192x192). Each box is pooled with ``torchvision.ops.roi_align`` (``output_size`` 56, adaptive
sampling, ``aligned=False``) and averaged over the bins, giving one C-vector per box, which the
module's own MLP (``Linear(C, D) -> GELU -> Linear(D, D)``) maps to the LLM width.

The tokens are appended to ``context.extra_groups`` as one group, so the model places them right
after the image's main tokens. The feature streams pass through unchanged.

Box rules:

* boxes come from ``context.boxes[view]`` in that view's pixels; ``spatial_scale`` is the map size
  over the actual view size (not a hard-coded 768);
* boxes are clamped to the view; a box with zero area after clamping (fully outside the image, or
  degenerate to begin with) is dropped. An image left with no box gets no object tokens (a
  zero-length group; the projector still runs, so its parameters stay in the graph);
* ``max_boxes`` keeps the first boxes of an image (box files deliver them best score first);
* a forward without any boxes (``context.boxes is None``, e.g. plain chat) adds no object tokens.

The maps must be in the pixel frame of the view their stream reads; in a two-encoder model put
``roi`` before ``convgate`` (``fusion: [roi, convgate]``), since the fused stream lives in the
low-resolution view and no longer carries the other view's maps.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from vlmkit.errors import ConfigError, Incompatible
from vlmkit.model.contracts import Connector, StreamSpec, VisualContext, VisualFeatures

#: elements of one roi_align output chunk (boxes x C x S x S); bounds peak memory (256 MB in fp32)
_CHUNK_ELEMENTS = 64 * 1024 * 1024


def multi_level_map(maps: Sequence[torch.Tensor]) -> torch.Tensor:
    """Upsample every (B, C_l, H_l, W_l) map to the finest size (bilinear, fp32) and concatenate channels."""
    size = max((m.shape[-2:] for m in maps), key=lambda s: s[0] * s[1])
    levels = [m.float() if m.shape[-2:] == size else
              F.interpolate(m.float(), size=tuple(size), mode="bilinear", align_corners=False) for m in maps]
    return torch.cat(levels, 1)


def clamp_boxes(boxes: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Clamp xyxy boxes to the image and drop those with zero area afterwards (or NaN coordinates)."""
    b = boxes.reshape(-1, 4).float().clone()
    b[:, 0::2] = b[:, 0::2].clamp(0, width)
    b[:, 1::2] = b[:, 1::2].clamp(0, height)
    keep = (b[:, 2] > b[:, 0]) & (b[:, 3] > b[:, 1])
    return b[keep]


def roi_mean(features: torch.Tensor, boxes: list[torch.Tensor], output_size: int, scale: tuple[float, float]
             ) -> torch.Tensor:
    """Mean of ``roi_align`` bins per box: (sum n_i, C). ``boxes[i]`` are image i's xyxy boxes, in pixels
    that ``scale`` (sx, sy) maps to feature-map coordinates."""
    from torchvision.ops import roi_align

    c = features.shape[1]
    rois = torch.cat([torch.cat([b.new_full((len(b), 1), float(i)), b], 1) for i, b in enumerate(boxes)]) \
        if boxes else features.new_zeros(0, 5)
    if rois.shape[0] == 0:
        return features.new_zeros(0, c)
    sx, sy = scale
    if abs(sx - sy) <= 1e-6 * max(sx, sy):
        spatial_scale = sx
    else:  # non-square map/view ratio: move boxes to map coordinates ourselves
        rois = rois * rois.new_tensor([1.0, sx, sy, sx, sy])
        spatial_scale = 1.0
    step = max(1, _CHUNK_ELEMENTS // (c * output_size * output_size))
    out = [roi_align(features, chunk, output_size, spatial_scale=spatial_scale, sampling_ratio=-1,
                     aligned=False).mean((2, 3)) for chunk in rois.split(step)]
    return torch.cat(out)


class RoIObjectTokens(Connector):
    """Object tokens from RoIAlign over a multi-level map, projected by a 2-layer MLP to the LLM width.

    ``stream`` picks the stream whose maps are pooled (index or source name; default: the only
    stream that carries maps); ``maps`` picks which of its maps (default: all, as declared).
    """

    needs_boxes = True

    def __init__(self, inputs: Sequence[StreamSpec], d_llm: int, stream: int | str | None = None,
                 maps: list[str] | None = None, output_size: int = 56, max_boxes: int | None = None):
        super().__init__()
        self.inputs = list(inputs)
        self.stream_index = self._pick_stream(self.inputs, stream)
        spec = self.inputs[self.stream_index]
        declared = {m[0]: m for m in spec.maps}
        if maps is not None:
            unknown = [n for n in maps if n not in declared]
            if unknown or not maps:
                raise Incompatible(f"feature maps {maps} of '{spec.source}'", "names among its maps",
                                   ", ".join(declared) or "no maps", "leave maps unset to use them all")
        self.map_names = list(maps) if maps is not None else list(declared)
        if spec.view is None:
            raise Incompatible(f"image view of '{spec.source}'", "a named view (for the boxes' pixel frame)", "none")
        if output_size < 1:
            raise ConfigError(f"connector 'roi': output_size must be >= 1, got {output_size}")
        if max_boxes is not None and max_boxes < 0:
            raise ConfigError(f"connector 'roi': max_boxes must be None or >= 0, got {max_boxes}")
        self.view_name = spec.view.name
        self.output_size = output_size
        self.max_boxes = max_boxes
        self.in_channels = sum(declared[n][1] for n in self.map_names)
        self.d_llm = d_llm
        self.projector = nn.Sequential(nn.Linear(self.in_channels, d_llm), nn.GELU(), nn.Linear(d_llm, d_llm))

    @staticmethod
    def _pick_stream(inputs: list[StreamSpec], stream: int | str | None) -> int:
        names = ", ".join(f"{i}:{s.source}" for i, s in enumerate(inputs))
        if isinstance(stream, int):
            if not 0 <= stream < len(inputs):
                raise Incompatible("roi stream index", f"0..{len(inputs) - 1}", stream, f"streams: {names}")
            idx = stream
        elif isinstance(stream, str):
            found = [i for i, s in enumerate(inputs) if s.source == stream]
            if len(found) != 1:
                raise Incompatible("roi stream name", "exactly one stream with that source", f"{len(found)} for "
                                   f"'{stream}'", f"streams: {names}; or give the index")
            idx = found[0]
        else:
            with_maps = [i for i, s in enumerate(inputs) if s.maps]
            if len(with_maps) > 1:
                raise Incompatible("streams with feature maps", "exactly one (or set stream=)",
                                   ", ".join(inputs[i].source for i in with_maps), "set roi's stream argument")
            if not with_maps:
                raise Incompatible("feature maps for RoIAlign", "a stream with stage maps (convnext, tiny-conv, ...)",
                                   f"none in {names or 'no stream'}",
                                   "in a two-encoder model put roi before convgate (fusion: [roi, convgate])")
            idx = with_maps[0]
        if not inputs[idx].maps:
            raise Incompatible(f"feature maps of '{inputs[idx].source}'", "at least one map", "none",
                               "roi pools stage maps of a hierarchical encoder")
        return idx

    def output_specs(self) -> list[StreamSpec]:
        return list(self.inputs)

    def named_parts(self) -> dict[str, list[str]]:
        return {"projector": ["projector"]}

    def image_boxes(self, context: VisualContext, n_images: int, device: torch.device) -> list[torch.Tensor]:
        """Clamped, capped boxes per image of this group, in view pixels (float32)."""
        if context.boxes is None:
            return [torch.zeros(0, 4, device=device) for _ in range(n_images)]
        if self.view_name not in context.boxes:
            raise ValueError(f"roi: no boxes for view '{self.view_name}' (got views: {', '.join(context.boxes)})")
        per_image = context.boxes[self.view_name]
        if len(per_image) != n_images:
            raise ValueError(f"roi: {len(per_image)} box lists for {n_images} images in view '{self.view_name}'")
        h, w = context.image_sizes[self.view_name]
        out = []
        for b in per_image:
            b = clamp_boxes(torch.as_tensor(b, device=device), h, w)
            out.append(b[: self.max_boxes] if self.max_boxes is not None else b)
        return out

    def object_features(self, feats: VisualFeatures, context: VisualContext) -> tuple[torch.Tensor, list[int]]:
        """Pooled (sum n_i, C) box features of a group and the box count per image."""
        multi = multi_level_map([feats.maps[n] for n in self.map_names])
        boxes = self.image_boxes(context, multi.shape[0], multi.device)
        h, w = context.image_sizes[self.view_name]
        scale = (multi.shape[-1] / w, multi.shape[-2] / h)
        return roi_mean(multi, boxes, self.output_size, scale), [len(b) for b in boxes]

    def forward(self, streams: list[VisualFeatures], context: VisualContext) -> list[VisualFeatures]:
        pooled, counts = self.object_features(streams[self.stream_index], context)
        tokens = self.projector(pooled.to(self.projector[0].weight.dtype))
        context.extra_groups.append(list(tokens.split(counts)))
        return streams
