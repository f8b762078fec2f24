"""Make the Prismatic DINOv2 + SigLIP parity fixture with the ORIGINAL Prismatic code (TRI-ML/prismatic-vlms @ 874c5bbf).

Prismatic's ``DinoSigLIPViTBackbone`` (``prismatic/models/backbones/vision/dinosiglip_vit.py``) and its
``FusedMLPProjector`` (``prismatic/util/nn_utils.py``) are imported from ``--repo`` and run unchanged, in vlmkit's
own environment: Prismatic pins timm 0.9.10 (newer timm returns lists where its ``unpack_tuple`` expects tuples),
so a venv with torch 2.14.1, torchvision 0.29.1 and timm 0.9.10 (see README.md here). The package ``__init__``
files, which import the LLM side and the training stack, are skipped by registering the packages' paths only.
It writes
``tests/fixtures/prismatic/``:

* ``reference.safetensors``: the two featurizers' weights (``dino.*``, ``siglip.*``, timm state dicts), the
  projector's (``projector.*``), the per-tower pixels, Prismatic's fused patches and its projector's output;
* ``reference.json``: commit, versions, the tiny sizes, and the parameter counts Prismatic's own code builds at
  full size for ``dinosiglip-vit-so-384px`` + ``fused-gelu-mlp`` into Llama-2 7B's width (on the meta device).

The one stand-in: timm's ``create_model`` is redirected, for the two hub names the backbone asks for, to the same
architecture at a tiny width and depth with random weights (``pretrained=False``), as the other fixtures redirect
``from_pretrained`` to local tiny towers. Everything Prismatic computes (which block it reads, how it fuses, the
projector) is its own code.

    python scripts/seed_fixtures/prismatic_original.py --repo repos/prismatic --out tests/fixtures/prismatic
"""

from __future__ import annotations

import argparse
import json
import sys
import types
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))

BACKBONE = "dinosiglip-vit-so-384px"
TOWERS = {"dino": "vit_large_patch14_reg4_dinov2.lvd142m", "siglip": "vit_so400m_patch14_siglip_384"}
TINY = dict(embed_dim=32, depth=3, num_heads=2, patch_size=7)
IMAGE = 28
D_LLM = 48


def import_original(repo: Path):
    """Prismatic's modules without running its package __init__ files (they pull the LLM and training code)."""
    for pkg in ("prismatic", "prismatic.models", "prismatic.models.backbones", "prismatic.models.backbones.vision",
                "prismatic.util"):
        module = types.ModuleType(pkg)
        module.__path__ = [str(repo / pkg.replace(".", "/"))]
        sys.modules[pkg] = module
    import importlib

    vision = importlib.import_module("prismatic.models.backbones.vision.dinosiglip_vit")
    nn_utils = importlib.import_module("prismatic.util.nn_utils")
    return vision.DinoSigLIPViTBackbone, nn_utils.FusedMLPProjector


def redirect_timm(tiny: bool):
    """timm.create_model for the backbone's two hub names: no download; tiny sizes unless ``tiny`` is False."""
    import timm

    real = timm.create_model

    def create_model(name, pretrained=False, **kwargs):
        if name in TOWERS.values():
            kwargs = {**kwargs, **(TINY if tiny else {})}
            pretrained = False
        return real(name, pretrained=pretrained, **kwargs)

    timm.create_model = create_model
    return real


def full_size_counts(backbone_cls, projector_cls) -> dict[str, int]:
    """Parameter counts of Prismatic's own modules at release size (random weights: no download; timm 0.9.10
    cannot build on the meta device)."""
    import timm

    real = redirect_timm(tiny=False)
    try:
        backbone = backbone_cls(BACKBONE, "resize-naive", default_image_size=384)
    finally:
        timm.create_model = real
    projector = projector_cls(backbone.embed_dim, 4096)

    def count(m):
        return sum(p.numel() for p in m.parameters())

    return {"dino_featurizer": count(backbone.dino_featurizer), "siglip_featurizer": count(backbone.siglip_featurizer),
            "fused_vision_dim": int(backbone.embed_dim), "projector_into_4096": count(projector)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repo", type=Path, required=True, help="a work tree of TRI-ML/prismatic-vlms")
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args()
    torch.set_num_threads(1)
    from safetensors.torch import save_file

    backbone_cls, projector_cls = import_original(args.repo.resolve())
    counts = full_size_counts(backbone_cls, projector_cls)
    import timm

    real = redirect_timm(tiny=True)
    try:
        torch.manual_seed(0)
        backbone = backbone_cls(BACKBONE, "resize-naive", default_image_size=IMAGE).eval()
    finally:
        timm.create_model = real
    with torch.no_grad():  # the towers' random init leaves some tensors at 0 or 1: perturb every one
        for t in backbone.parameters():
            t.add_(torch.randn_like(t) * 0.05)
    torch.manual_seed(1)
    projector = projector_cls(backbone.embed_dim, D_LLM).eval()
    g = torch.Generator().manual_seed(2)
    pixels = {"dino": torch.randn(2, 3, IMAGE, IMAGE, generator=g), "siglip": torch.randn(2, 3, IMAGE, IMAGE, generator=g)}
    with torch.no_grad():
        fused = backbone(pixels)
        projected = projector(fused)
    tensors = {f"dino.{k}": v.contiguous() for k, v in backbone.dino_featurizer.state_dict().items()}
    tensors |= {f"siglip.{k}": v.contiguous() for k, v in backbone.siglip_featurizer.state_dict().items()}
    tensors |= {f"projector.{k}": v.contiguous() for k, v in projector.state_dict().items()}
    tensors |= {"pixels_dino": pixels["dino"], "pixels_siglip": pixels["siglip"], "fused": fused.contiguous(),
                "projected": projected.contiguous()}
    args.out.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(args.out / "reference.safetensors"))
    from llava_original import _commit

    commit = _commit(args.repo)
    (args.out / "reference.json").write_text(json.dumps({
        "made_by": "scripts/seed_fixtures/prismatic_original.py", "original": "TRI-ML/prismatic-vlms", "commit": commit,
        "timm": timm.__version__, "torch": torch.__version__, "backbone": BACKBONE, "towers": TOWERS,
        "tiny": {**TINY, "img_size": IMAGE, "d_llm": D_LLM, "fused_dim": int(backbone.embed_dim),
                 "tokens": int(fused.shape[1])},
        "full_size_parameters": counts,
        "stubs": ["timm.create_model for the two tower names: the same architecture at a tiny size, pretrained=False"],
    }, indent=1) + "\n")
    print(f"wrote {args.out}: fused {tuple(fused.shape)}, projected {tuple(projected.shape)}; full size {counts}")


if __name__ == "__main__":
    main()
