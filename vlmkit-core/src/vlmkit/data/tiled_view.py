"""AnyRes pixels: one image -> its base crop plus a grid of tiles, per encoder view.

The data side of ``vlmkit.model.tiling``, in LLaVA-NeXT's order of operations (haotian-liu/LLaVA
``process_anyres_image``, transformers' ``LlavaNextImageProcessor``): choose the pinpoint; scale the image,
aspect kept, to fit it (bicubic, sides rounded up); paste it centred on a black canvas of the pinpoint's
size; cut the canvas into view-sized tiles row by row; and put first the whole image squashed to one
view-sized square (the base crop). Each crop is then normalised with the view's mean and std.

With several views (e.g. a low-resolution and a high-resolution encoder) the grid is chosen once, in the
first view's pixels, and each view cuts the same rows and columns at its own size, so tile k of every
view shows the same part of the image.
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image
from torch.nn.functional import interpolate

from vlmkit.data.image_processing import expand_to_square, mean_colour, preprocess
from vlmkit.model.contracts import ImageView
from vlmkit.model.tiling import Tiling, fitted_size, grid_shape


def tile_grid(size: tuple[int, int], tiling: Tiling, tile: int) -> tuple[int, int]:
    """(rows, columns) for an image of (height, width) ``size``; ``tile`` is the first view's size."""
    return grid_shape(size, tiling.pinpoints, tile)


def _normalised(img: Image.Image, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """(3, h, w) float32 of an RGB image: x / 255, then (x - mean) / std, the same float operations in the same
    order as ``image_processing.to_tensor`` and transformers' PIL processors (equal results, not just close)."""
    x = torch.from_numpy(np.array(img)).permute(2, 0, 1).to(torch.float32)
    return x.div_(255.0).sub_(mean).div_(std)


def _placement(img: Image.Image, grid: tuple[int, int], s: int) -> tuple[tuple[int, int], int, int, int, int]:
    """Where the scaled image sits on the black canvas of ``grid`` tiles of ``s`` px: (canvas h, w), top, left,
    scaled h, w (centred, as the original pastes it)."""
    target = (grid[0] * s, grid[1] * s)
    nh, nw = fitted_size((img.height, img.width), target)
    return target, (target[0] - nh) // 2, (target[1] - nw) // 2, nh, nw


def _cut(canvas: torch.Tensor, tiles: torch.Tensor, grid: tuple[int, int], s: int) -> None:
    """(3, rows*s, cols*s) -> ``tiles`` (rows*cols, 3, s, s), row by row, in one copy."""
    rows, cols = grid
    tiles.view(rows, cols, 3, s, s).copy_(canvas.view(3, rows, s, cols, s).permute(1, 3, 0, 2, 4))


def tiled_crops(img: Image.Image, view: ImageView, grid: tuple[int, int] | None,
                resampler: str = "pil") -> torch.Tensor:
    """(1 + rows*cols, 3, s, s) normalised crops of ``img`` for ``view``: base first, then the tiles row by
    row. An image that is not tiled (``grid`` None: OneVision's images in a multi-image sample) is (1, 3, s, s):
    the view's own policy (``pad``: expanded to a mean-colour square, then resized), as OneVision does.
    ``resampler``: ``pil`` or ``torch`` (``vlmkit.model.tiling.RESAMPLERS``)."""
    img = img.convert("RGB")
    if resampler == "torch":
        return _tiled_crops_torch(img, view, grid)
    if grid is None:
        return preprocess(img, view)[0][None]
    s = view.size
    mean, std = torch.tensor(view.mean).view(3, 1, 1), torch.tensor(view.std).view(3, 1, 1)
    out = torch.empty(1 + grid[0] * grid[1], 3, s, s)
    out[0] = _normalised(img.resize((s, s), Image.BICUBIC), mean, std)
    target, top, left, nh, nw = _placement(img, grid, s)
    # black padding, normalised like any black pixel; the scaled image pasted in the middle
    canvas = torch.zeros(3, 1, 1).div_(255.0).sub_(mean).div_(std).expand(3, *target).contiguous()
    canvas[:, top:top + nh, left:left + nw] = _normalised(img.resize((nw, nh), Image.BICUBIC), mean, std)
    _cut(canvas, out[1:], grid, s)
    return out


def _tiled_crops_torch(img: Image.Image, view: ImageView, grid: tuple[int, int] | None) -> torch.Tensor:
    """The same layout resampled as transformers' torchvision processors do: antialiased bicubic on uint8, black
    padding, then one fused normalisation ``(x - 255 mean) / (255 std)`` in float32."""
    s = view.size
    if grid is None and view.resize == "pad":
        img = expand_to_square(img, mean_colour(view.mean))[0]
    x = torch.from_numpy(np.array(img)).permute(2, 0, 1)[None]  # (1, 3, H, W) uint8
    crops = torch.zeros(1 + (grid[0] * grid[1] if grid else 0), 3, s, s, dtype=torch.uint8)
    crops[0] = interpolate(x, (s, s), mode="bicubic", antialias=True)[0]
    if grid is not None:
        target, top, left, nh, nw = _placement(img, grid, s)
        canvas = torch.zeros(3, *target, dtype=torch.uint8)
        canvas[:, top:top + nh, left:left + nw] = interpolate(x, (nh, nw), mode="bicubic", antialias=True)[0]
        _cut(canvas, crops[1:], grid, s)
    mean = (torch.tensor(view.mean) * 255.0).view(3, 1, 1)
    std = (torch.tensor(view.std) * 255.0).view(3, 1, 1)
    return crops.to(torch.float32).sub_(mean).div_(std)
