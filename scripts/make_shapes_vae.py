"""Make the embedded Ross teachers: tiny VAEs trained on the synthetic images they will reconstruct.

``builtin:shapes-tiny`` (default) is trained on synthetic-shapes images (64 px); ``builtin:details-tiny``
(``--data details``) on synthetic-details images (128 px), for the Ross claim in docs/claims.md. For the
latter the script also measures how much of the stripes, the task's detail, survives the teacher: a
teacher that blurs them away gives Ross nothing about the detail to reconstruct.

The VAE has the ``tiny`` architecture (FLUX geometry: 8x downsampling, 16 latent channels) and is
trained with :func:`vlmkit_objectives.vae_training.train_vae` on the 5,000 training images of the
default synthetic-shapes dataset (seed 0, 64 px), then calibrated so its normalised latents have mean
0 and std 1. It writes the diffusers folder (config + safetensors, ~0.4 MB) into the package, next to
``teacher.json`` with the training settings and the measured statistics.

    python scripts/make_shapes_vae.py                 # rewrite the packaged teacher (~4 min on 2 cores)
    python scripts/make_shapes_vae.py --data details  # the details teacher (~10 min on 2 cores)
    python scripts/make_shapes_vae.py --out DIR       # somewhere else

Test images are never seen: the Ross evidence (``benchmarks/bench_ross_evidence.py``) evaluates on the
test split, whose random stream is separate.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
ASSETS = ROOT / "vlmkit-objectives" / "src" / "vlmkit_objectives" / "assets"
DEFAULT_OUT = ASSETS / "shapes-tiny-vae"
SETTINGS = {"config": "tiny", "steps": 1500, "batch_size": 32, "lr": 2e-3, "kl_weight": 1e-6, "seed": 0}
#: per data set: where it goes, its training settings and what it is trained on
TEACHERS = {
    "shapes": {"out": DEFAULT_OUT, "settings": SETTINGS,
               "data": "synthetic-shapes train split (seed 0, 5000 images, 64 px)"},
    "details": {"out": ASSETS / "details-tiny-vae", "settings": dict(SETTINGS, steps=800),
                "data": "synthetic-details train split (seed 0, 6000 images, 128 px)"},
}


def split_images(paths: dict[str, str], split: str) -> torch.Tensor:
    """Every image of a generated split (``paths`` as the generators return them) as (N, 3, H, W) in [-1, 1]."""
    records = [json.loads(line) for line in Path(paths[split]).read_text().splitlines()]
    arr = np.stack([np.asarray(Image.open(Path(paths["root"]) / r["image"]).convert("RGB")) for r in records])
    return torch.from_numpy(arr).permute(0, 3, 1, 2).float() / 127.5 - 1.0


def shapes_images(root: Path, split: str = "train") -> torch.Tensor:
    """The synthetic-shapes images of ``split`` as (N, 3, 64, 64) in [-1, 1]."""
    from vlmkit_data.synthetic import ensure_shapes

    return split_images(ensure_shapes(root), split)


def details_images(root: Path, split: str = "train") -> torch.Tensor:
    """The synthetic-details images of ``split`` (the claim's 128 px) as (N, 3, 128, 128) in [-1, 1]."""
    from vlmkit_data.synthetic_details import SyntheticDetailsDataset

    return split_images(SyntheticDetailsDataset(str(root), split=split, image_size=128, progress=False).paths, split)


@torch.no_grad()
def stripe_visibility(vae, n: int = 64, image_size: int = 128, seed: int = 5) -> dict[str, float]:
    """How much of the stripes the teacher keeps: pairs of images that differ only in the square being
    striped or plain; ``kept`` = energy of (reconstructed striped - reconstructed plain) over energy of
    (striped - plain): 1 keeps them whole, 0 blurs them away. ``latent_separation``: the pairs' posterior
    means apart, over the spread of posterior means across the pairs' images."""
    import random

    from vlmkit_data.synthetic import COLORS
    from vlmkit_data.synthetic_details import draw_square

    rng = random.Random(seed)
    side = image_size // 4
    pairs = []
    for _ in range(n):
        color, cell, horizontal = COLORS[rng.choice(list(COLORS))], rng.randrange(16), rng.random() < 0.5
        x0, y0 = (cell % 4) * side, (cell // 4) * side
        pairs.append([draw_square(image_size, x0, y0, side, color, s, horizontal) for s in (True, False)])
    arr = torch.from_numpy(np.asarray(pairs)).permute(0, 1, 4, 2, 3).float() / 127.5 - 1.0  # (n, 2, 3, H, W)
    striped, plain = arr[:, 0], arr[:, 1]
    z_s, z_p = vae.encode(striped).latent_dist.mean, vae.encode(plain).latent_dist.mean
    r_s, r_p = vae.decode(z_s).sample, vae.decode(z_p).sample
    kept = float((r_s - r_p).pow(2).sum() / (striped - plain).pow(2).sum())
    separation = float((z_s - z_p).pow(2).mean().sqrt() / torch.cat([z_s, z_p]).std())
    return {"kept": kept, "latent_separation": separation}


def main() -> int:
    from vlmkit_objectives.vae_training import calibrate_latents, save_vae, train_vae

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", choices=sorted(TEACHERS), default="shapes")
    ap.add_argument("--out", type=Path, default=None, help="default: the packaged folder of --data's teacher")
    ap.add_argument("--steps", type=int, default=None)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    teacher = TEACHERS[args.data]
    out = args.out or teacher["out"]
    settings = dict(teacher["settings"], **({"steps": args.steps} if args.steps else {}))
    t0 = time.time()
    with tempfile.TemporaryDirectory() as tmp:
        images = shapes_images(Path(tmp)) if args.data == "shapes" else details_images(Path(tmp))
    vae, log = train_vae(images, settings["config"], steps=settings["steps"], batch_size=settings["batch_size"],
                         lr=settings["lr"], kl_weight=settings["kl_weight"], seed=settings["seed"])
    stats = calibrate_latents(vae, images)
    if args.data == "details":
        stats.update({f"stripes_{k}": v for k, v in stripe_visibility(vae).items()})
    save_vae(vae, out)
    record = {"made_by": "scripts/make_shapes_vae.py" + (f" --data {args.data}" if args.data != "shapes" else ""),
              "data": teacher["data"], "settings": settings, "seconds": round(time.time() - t0, 1),
              "statistics": {k: round(v, 6) for k, v in stats.items()}, "log": log[::6] + log[-1:]}
    (out / "teacher.json").write_text(json.dumps(record, indent=2) + "\n")
    print(json.dumps(record["statistics"], indent=2))
    print(f"wrote {out} in {record['seconds']} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
