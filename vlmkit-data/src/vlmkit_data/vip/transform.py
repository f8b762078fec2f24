"""The ``vip`` transform: draw visual prompts on region records and name them in the conversation.

Runs before the processor's pad/resize (it draws on the original-resolution image, as ViP-LLaVA's
``vip_processor`` runs before ``expand2square``). Ordinary records pass through untouched, so the
ViP mix (LLaVA-665K + region records) goes through one transform.
"""

from __future__ import annotations

import math
import random
from typing import Any

from vlmkit.data.samples import Sample
from vlmkit.errors import ConfigError

from .assignment import assign_prompts
from .conversations import build_conversation
from .drawing import ANCHOR, draw_prompts
from .phrases import SHAPES
from .records import VIP_CONFIG, parse_region_record, sample_error


class VisualPromptTransform:
    """Draw ViP-LLaVA visual prompts on region-level records (refcocog, vg_rel, flickr30k, v7w,
    pointQA_twice, vcr) and rewrite their conversation with phrases such as "within the red rectangle".

    ``shapes``: draw only these shapes on every record (e.g. ``[point]`` with ``constant: true`` for
    ViP-LLaVA's VCR test style), instead of each dataset type's allowed list. ``constant``: fixed
    evaluation sizes (None: the type's style). ``alpha``: a fixed opacity (the evaluation scripts use
    128). ``width``: a fixed line width in pixels. ``meta_root``: the folder VCR ``meta_dir`` paths are
    relative to. ``anchor``: the canvas sizes refer to (336, CLIP-336's crop).

    At inference (``vlmkit generate --transform '{name: vip, args: {bbox: [x1, y1, x2, y2]}}'``), ``bbox``
    draws one prompt around that box (original pixels) on the first image of every sample, in ViP-LLaVA's
    evaluation style (``cli_vip.py``): the one shape of ``shapes`` (default rectangle), ``color`` (a named
    colour, ``r,g,b`` or ``#rrggbb``), opacity ``alpha`` (default 128), constant sizes unless ``constant``
    is false, ``polygons`` (flat ``[x1, y1, x2, y2, ...]`` outlines) for the mask-like shapes. Each
    ``{region}`` in the conversation becomes the phrase that names the prompt ("within the red rectangle").
    """

    def __init__(self, shapes: list[str] | None = None, constant: bool | None = None, alpha: int | None = None,
                 width: int | None = None, meta_root: str | None = None, anchor: int = ANCHOR,
                 bbox: list[float] | None = None, color: str = "red", polygons: list[list[float]] | None = None):
        if shapes is not None:
            bad = [s for s in shapes if s not in SHAPES]
            if bad or not shapes:
                raise ConfigError(f"vip: unknown shape(s) {bad or shapes}; shapes: {', '.join(SHAPES)}")
        if bbox is not None:
            from .inference import parse_bbox
            from .phrases import parse_color

            parse_bbox(bbox)
            parse_color(color)
            if shapes is not None and len(shapes) != 1:
                raise ConfigError(f"vip: with bbox, give one shape to draw (shapes: [rectangle]), got {shapes}")
            for k, poly in enumerate(polygons or []):
                if not all(isinstance(v, (int, float)) and math.isfinite(v) for v in poly) or len(poly) % 2:
                    raise ConfigError(f"vip: polygons[{k}]: expected finite x, y pairs (no NaN or inf), got {poly!r:.80}")
        elif polygons is not None:
            raise ConfigError("vip: polygons outline the object of bbox; give bbox too")
        if alpha is not None and not 0 <= alpha <= 255:
            raise ConfigError(f"vip: alpha must be in [0, 255], got {alpha}")
        if width is not None and width < 1:
            raise ConfigError(f"vip: width must be >= 1 pixel, got {width}")
        if anchor < 1:
            raise ConfigError(f"vip: anchor must be >= 1 pixel, got {anchor}")
        self.shapes = list(shapes) if shapes is not None else None
        self.constant, self.alpha, self.width = constant, alpha, width
        self.meta_root, self.anchor = meta_root, anchor
        self.bbox, self.color, self.polygons = bbox, color, polygons

    def __call__(self, sample: Sample, rng: random.Random) -> Sample:
        if self.bbox is not None:
            return self._prompt_first_image(sample, rng)
        record = parse_region_record(sample, self.meta_root)
        if record is None:
            return sample
        shapes, constant = VIP_CONFIG[record.type]
        if self.shapes is not None:
            shapes = tuple(self.shapes)
        if self.constant is not None:
            constant = self.constant
        fixed = "red" if record.type == "pointQA_twice" else None  # the exemplary box is always red
        try:
            prompts = assign_prompts(len(record.entities), shapes, rng, alpha=self.alpha, color=fixed)
        except ValueError as exc:
            raise sample_error(sample, str(exc), "bboxes") from None
        turns = build_conversation(record, prompts, rng)
        pairs = [(p, region) for p, regions in zip(prompts, record.entities) for region in regions]
        try:
            image = draw_prompts(sample.images[0], pairs, rng, constant=constant, width=self.width, anchor=self.anchor)
        except (ValueError, TypeError) as exc:  # PIL refuses degenerate geometry
            raise sample_error(sample, f"cannot draw the visual prompts: {exc}", "bboxes") from None
        drawn: list[dict[str, Any]] = [{"shape": p.shape, "color": p.color_name, "rgb": list(p.rgb), "alpha": p.alpha,
                                        "phrase": p.phrase} for p in prompts]
        meta = {**sample.meta, "region_type": record.type, "visual_prompts": drawn}
        return sample.replace(images=[image], turns=turns, meta=meta)


    def _prompt_first_image(self, sample: Sample, rng: random.Random) -> Sample:
        """Inference: draw the one configured prompt; name it where the conversation says ``{region}``."""
        from vlmkit.data.templates import Turn

        from .inference import prompt_inference_image

        if not sample.images:
            raise sample_error(sample, "vip with bbox draws on the sample's image, but it has none", "image")
        shape = self.shapes[0] if self.shapes else "rectangle"
        image, name = prompt_inference_image(
            sample.images[0], self.bbox, shape, self.color, polygons=self.polygons,
            alpha=128 if self.alpha is None else self.alpha, width=self.width,
            constant=True if self.constant is None else self.constant, seed=rng.randrange(2**31), anchor=self.anchor)
        turns = [Turn(t.role, t.text.replace("{region}", name)) for t in sample.turns]
        meta = {**sample.meta, "visual_prompts": [{"shape": shape, "color": self.color, "bbox": list(self.bbox),
                                                   "phrase": name}]}
        return sample.replace(images=[image, *sample.images[1:]], turns=turns, meta=meta)


__all__ = ["VisualPromptTransform"]
