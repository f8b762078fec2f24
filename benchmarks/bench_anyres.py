"""AnyRes data throughput: images per second through vlmkit's tiled view vs transformers' LLaVA-NeXT image
processors, on the same images with the same settings.

The images are LLaVA-1.6-sized work: photographs-like noise at the sizes a VQA mix has (640x480, 1024x768,
500x1333, 1920x1080, 336x336, 800x200), each turned into its base crop plus tiles on LLaVA-1.6's pinpoints
(336 px tiles, CLIP mean/std). Per round, each processor handles the whole set once, one image per call, as a
data loader worker does; the rounds interleave (``common.interleave``) and the claim is the median of the
per-round time ratios vlmkit / transformers (target <= 1.0: "not slower"). Each of vlmkit's two resamplers is
compared with the transformers backend that gives the same pixels (asserted equal before timing):
``resampler: pil`` with ``LlavaNextImageProcessorPil`` (the original LLaVA code's PIL resampling) and
``resampler: torch`` with ``LlavaNextImageProcessor`` (torchvision, the ``AutoImageProcessor`` default).

    python benchmarks/bench_anyres.py            # writes benchmarks/results/anyres.json
    python benchmarks/bench_anyres.py --quick    # seconds: checks the script runs
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

from vlmkit.data.tiled_view import tile_grid, tiled_crops  # noqa: E402
from vlmkit.model.contracts import CLIP_MEAN, CLIP_STD, ImageView  # noqa: E402
from vlmkit.model.tiling import Tiling  # noqa: E402

PINPOINTS = [[336, 672], [672, 336], [672, 672], [1008, 336], [336, 1008]]
SIZES = [(640, 480), (1024, 768), (500, 1333), (1920, 1080), (336, 336), (800, 200)]  # (width, height)


def images(sizes, seed: int = 0) -> list[Image.Image]:
    rng = np.random.default_rng(seed)
    out = []
    for w, h in sizes:  # smooth noise (upsampled), closer to a photo than white noise for the resampler
        small = rng.integers(0, 255, (max(1, h // 8), max(1, w // 8), 3), dtype=np.uint8)
        out.append(Image.fromarray(small).resize((w, h), Image.BILINEAR))
    return out


def main() -> None:
    p = common.parser(__doc__.splitlines()[0], "anyres.json")
    p.add_argument("--rounds", type=int, default=15)
    args = p.parse_args()
    torch.set_num_threads(1)  # a data loader worker: one thread each
    from transformers import LlavaNextImageProcessor, LlavaNextImageProcessorPil

    imgs = images(SIZES[:2] if args.quick else SIZES)
    rounds = 2 if args.quick else args.rounds
    view = ImageView("base", 336, CLIP_MEAN, CLIP_STD)
    tiling = Tiling.from_dict({"pinpoints": PINPOINTS})
    kw = dict(size={"shortest_edge": 336}, crop_size={"height": 336, "width": 336}, image_mean=list(CLIP_MEAN),
              image_std=list(CLIP_STD), image_grid_pinpoints=PINPOINTS)
    hf_pil, hf_tv = LlavaNextImageProcessorPil(**kw), LlavaNextImageProcessor(**kw)

    def vlmkit_pil():
        for im in imgs:
            tiled_crops(im, view, tile_grid((im.height, im.width), tiling, 336), "pil")

    def vlmkit_torch():
        for im in imgs:
            tiled_crops(im, view, tile_grid((im.height, im.width), tiling, 336), "torch")

    def pil_all():
        for im in imgs:
            hf_pil(images=[im], return_tensors="pt")

    def tv_all():
        for im in imgs:
            hf_tv(images=[im], return_tensors="pt")

    # the same crops as the matching transformers backend, checked on every image before timing
    for im in imgs:
        grid = tile_grid((im.height, im.width), tiling, 336)
        for resampler, hf in (("pil", hf_pil), ("torch", hf_tv)):
            ours = tiled_crops(im, view, grid, resampler)
            theirs = hf(images=[im], return_tensors="pt")["pixel_values"][0][:ours.shape[0]]
            assert torch.equal(ours, theirs), f"vlmkit's {resampler} tiles differ from transformers'"

    monitor = common.LoadMonitor()
    monitor.sample()
    times = common.interleave({"vlmkit-pil": vlmkit_pil, "hf-pil": pil_all, "vlmkit-torch": vlmkit_torch,
                               "hf-torchvision": tv_all}, rounds)
    monitor.sample()
    n = len(imgs)
    stats = {k: common.spread(v) for k, v in times.items()}
    metrics = []
    for ours, ref in (("vlmkit-pil", "hf-pil"), ("vlmkit-torch", "hf-torchvision")):
        metrics.append(common.metric(
            f"images/s, {ours} vs transformers {ref}", n / stats[ours]["median"], "images/s",
            reference=n / stats[ref]["median"], ratio=common.paired_ratio(times[ours], times[ref]),
            target="<= 1.0", detail={"vlmkit_s_per_round": stats[ours], "reference_s_per_round": stats[ref]}))
    config = {"image_sizes_wxh": [list(s) for s in (SIZES[:2] if args.quick else SIZES)], "pinpoints": PINPOINTS,
              "tile": 336, "rounds": rounds, "threads": 1}
    method = ("Each round processes every image once per processor, one image per call, interleaved in alternating "
              "order; ratio = median over rounds of (vlmkit time / reference time), below 1 means vlmkit is faster.")
    notes = ["Each vlmkit resampler's crops equal its transformers backend's exactly (asserted before timing). The "
             "two backends differ from each other: torchvision's antialiased bicubic is another kernel than PIL's.",
             "vlmkit resizes each image twice (base crop, tile canvas) and cuts the tiles from one tensor; "
             "transformers resizes, pads, cuts, then resizes and normalises every tile."]
    out = common.write_result(args.out, "anyres", title="AnyRes tiling throughput: vlmkit vs transformers' "
                              "LLaVA-NeXT image processors", quick=args.quick,
                              command=common.command_line("bench_anyres.py", sys.argv[1:]), config=config,
                              metrics=metrics, notes=notes, method=method, load=monitor.summary())
    print(f"wrote {out}")
    for m in metrics:
        print(f"  {m['name']}: {m['value']:.1f} vs {m['reference']:.1f} {m['unit']}  ratio {m['ratio']:.3f}")


if __name__ == "__main__":
    main()
