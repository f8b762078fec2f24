"""Image preprocessing per encoder view: pad (mean-colour square), square (resize + centre crop),
resize (stretch) and native (keep aspect, snap to a multiple). Boxes follow the same mapping.

Every policy is an affine map of coordinates, ``x' = x * sx + tx`` (and y likewise), so boxes drawn
on the original image are remapped exactly through padding, resizing and cropping.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

from vlmkit.model.contracts import ImageView

RESIZE_POLICIES = ("pad", "square", "resize", "native")


@dataclass(frozen=True)
class Affine:
    sx: float
    sy: float
    tx: float
    ty: float
    width: int
    height: int

    def boxes(self, xyxy: torch.Tensor | np.ndarray) -> torch.Tensor:
        b = torch.as_tensor(xyxy, dtype=torch.float32).reshape(-1, 4).clone()
        b[:, 0::2] = b[:, 0::2] * self.sx + self.tx
        b[:, 1::2] = b[:, 1::2] * self.sy + self.ty
        b[:, 0::2] = b[:, 0::2].clamp(0, self.width)
        b[:, 1::2] = b[:, 1::2].clamp(0, self.height)
        return b

    def point(self, x: float, y: float) -> tuple[float, float]:
        return x * self.sx + self.tx, y * self.sy + self.ty


def mean_colour(mean: tuple[float, float, float]) -> tuple[int, int, int]:
    """LLaVA's pad colour: int(m*255) per channel, (122,116,104) for the CLIP mean."""
    return tuple(int(m * 255) for m in mean)  # type: ignore[return-value]


def expand_to_square(img: Image.Image, background: tuple[int, int, int]) -> tuple[Image.Image, int, int]:
    """Paste centred on a ``max(W,H)`` square; returns the canvas and the paste offset (dx, dy)."""
    w, h = img.size
    if w == h:
        return img, 0, 0
    side = max(w, h)
    canvas = Image.new(img.mode, (side, side), background)
    dx, dy = (side - w) // 2, (side - h) // 2
    canvas.paste(img, (dx, dy))
    return canvas, dx, dy


def native_size(w: int, h: int, size: int, multiple: int) -> tuple[int, int]:
    """(width, height) of the ``native`` policy: ``ImageView.pixel_size``, the one place that computes it."""
    return ImageView(size=size, resize="native", multiple=multiple).pixel_size(w, h)


def transform_image(img: Image.Image, view: ImageView, policy: str | None = None) -> tuple[Image.Image, Affine]:
    """Resize/pad/crop a PIL image for ``view``; returns the new image and the coordinate map."""
    policy = policy or view.resize
    if policy not in RESIZE_POLICIES:
        raise ValueError(f"unknown resize policy '{policy}'; valid: {', '.join(RESIZE_POLICIES)}")
    img = img.convert("RGB")
    w, h = img.size
    s = view.size
    if policy == "pad":
        sq, dx, dy = expand_to_square(img, mean_colour(view.mean))
        side = sq.size[0]
        out = sq.resize((s, s), Image.BICUBIC)
        k = s / side
        return out, Affine(k, k, dx * k, dy * k, s, s)
    if policy == "square":
        k = s / min(w, h)
        nw, nh = max(s, round(w * k)), max(s, round(h * k))
        resized = img.resize((nw, nh), Image.BICUBIC)
        left, top = (nw - s) // 2, (nh - s) // 2
        out = resized.crop((left, top, left + s, top + s))
        return out, Affine(nw / w, nh / h, -left, -top, s, s)
    if policy == "resize":
        out = img.resize((s, s), Image.BICUBIC)
        return out, Affine(s / w, s / h, 0.0, 0.0, s, s)
    nw, nh = native_size(w, h, s, max(1, view.multiple))
    out = img.resize((nw, nh), Image.BICUBIC)
    return out, Affine(nw / w, nh / h, 0.0, 0.0, nw, nh)


def to_tensor(img: Image.Image, view: ImageView) -> torch.Tensor:
    arr = np.asarray(img, dtype=np.float32) / 255.0
    t = torch.from_numpy(arr).permute(2, 0, 1)
    mean = torch.tensor(view.mean).view(3, 1, 1)
    std = torch.tensor(view.std).view(3, 1, 1)
    return (t - mean) / std


def preprocess(img: Image.Image, view: ImageView, policy: str | None = None) -> tuple[torch.Tensor, Affine]:
    out, aff = transform_image(img, view, policy)
    return to_tensor(out, view), aff


def denormalize(pixels: torch.Tensor, view: ImageView) -> torch.Tensor:
    """Back to [0, 1] RGB (for objectives that reconstruct pixels, and for previews)."""
    mean = torch.tensor(view.mean, device=pixels.device, dtype=pixels.dtype).view(-1, 3, 1, 1)
    std = torch.tensor(view.std, device=pixels.device, dtype=pixels.dtype).view(-1, 3, 1, 1)
    return (pixels * std + mean).clamp(0, 1)
