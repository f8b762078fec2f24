"""Make the embedded Ross teacher ``builtin:shapes-tiny``: a tiny VAE trained on synthetic-shapes images.

The VAE has the ``tiny`` architecture (FLUX geometry: 8x downsampling, 16 latent channels) and is
trained with :func:`vlmkit_objectives.vae_training.train_vae` on the 5,000 training images of the
default synthetic-shapes dataset (seed 0, 64 px), then calibrated so its normalised latents have mean
0 and std 1. It writes the diffusers folder (config + safetensors, ~0.4 MB) into the package, next to
``teacher.json`` with the training settings and the measured statistics.

    python scripts/make_shapes_vae.py                 # rewrite the packaged teacher (~4 min on 2 cores)
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
DEFAULT_OUT = ROOT / "vlmkit-objectives" / "src" / "vlmkit_objectives" / "assets" / "shapes-tiny-vae"
SETTINGS = {"config": "tiny", "steps": 1500, "batch_size": 32, "lr": 2e-3, "kl_weight": 1e-6, "seed": 0}


def shapes_images(root: Path, split: str = "train") -> torch.Tensor:
    """The synthetic-shapes images of ``split`` as (N, 3, 64, 64) in [-1, 1]."""
    from vlmkit_data.synthetic import ensure_shapes

    paths = ensure_shapes(root)
    records = [json.loads(line) for line in Path(paths[split]).read_text().splitlines()]
    arr = np.stack([np.asarray(Image.open(Path(paths["root"]) / r["image"]).convert("RGB")) for r in records])
    return torch.from_numpy(arr).permute(0, 3, 1, 2).float() / 127.5 - 1.0


def main() -> int:
    from vlmkit_objectives.vae_training import calibrate_latents, save_vae, train_vae

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    ap.add_argument("--steps", type=int, default=SETTINGS["steps"])
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    settings = dict(SETTINGS, steps=args.steps)
    t0 = time.time()
    with tempfile.TemporaryDirectory() as tmp:
        images = shapes_images(Path(tmp))
    vae, log = train_vae(images, settings["config"], steps=settings["steps"], batch_size=settings["batch_size"],
                         lr=settings["lr"], kl_weight=settings["kl_weight"], seed=settings["seed"])
    stats = calibrate_latents(vae, images)
    save_vae(vae, args.out)
    record = {"made_by": "scripts/make_shapes_vae.py", "data": "synthetic-shapes train split (seed 0, 5000 images, 64 px)",
              "settings": settings, "seconds": round(time.time() - t0, 1),
              "statistics": {k: round(v, 6) for k, v in stats.items()}, "log": log[::6] + log[-1:]}
    (args.out / "teacher.json").write_text(json.dumps(record, indent=2) + "\n")
    print(json.dumps(record["statistics"], indent=2))
    print(f"wrote {args.out} in {record['seconds']} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
