"""Prismatic's DINOv2 + SigLIP backbone as vlmkit parts: two `timm` towers, `concat`, `fused-gelu-mlp`.

The fixture (``tests/fixtures/prismatic``) was made by Prismatic's own ``DinoSigLIPViTBackbone`` and
``FusedMLPProjector`` (TRI-ML/prismatic-vlms @ 874c5bbf, timm 0.9.10, run unchanged by
``scripts/seed_fixtures/prismatic_original.py``) at a tiny size; it also records the parameter counts Prismatic's
code builds at release size, which the ``prismatic-dinosiglip-384`` preset must give.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from vlmkit.model.assembly import build_component, build_model
from vlmkit.model.config import ModelConfig
from vlmkit.model.contracts import VisualContext

FIXTURE = Path(__file__).parent / "fixtures" / "prismatic"
REF = json.loads((FIXTURE / "reference.json").read_text())
TOL = 1e-5


@pytest.fixture(scope="module")
def tensors():
    return load_file(str(FIXTURE / "reference.safetensors"))


def _tower(name: str, view: str, tensors, tmp_path):
    weights = {k[len(name) + 1:]: v for k, v in tensors.items() if k.startswith(name + ".")}
    save_file(weights, str(tmp_path / f"{name}.safetensors"))
    tiny = REF["tiny"]
    return build_component("encoder", {"name": "timm", "args": {
        "model": REF["towers"][name], "layer": -2, "image_size": tiny["img_size"], "prune": False,
        "file": str(tmp_path / f"{name}.safetensors"), "view": view, "resize": "resize",
        "model_args": {k: tiny[k] for k in ("embed_dim", "depth", "num_heads", "patch_size")}}}).eval()


def test_fused_patches_and_projection_equal_prismatics_own_code(tensors, tmp_path):
    dino = _tower("dino", "dino", tensors, tmp_path)
    siglip = _tower("siglip", "siglip", tensors, tmp_path)
    concat = build_component("connector", "concat", inputs=[dino.spec(), siglip.spec()], d_llm=REF["tiny"]["d_llm"])
    proj = build_component("connector", "fused-gelu-mlp", inputs=concat.output_specs(), d_llm=REF["tiny"]["d_llm"])
    proj.load_state_dict({"proj." + k.removeprefix("projector.projector."): v for k, v in tensors.items()
                          if k.startswith("projector.")})
    context = VisualContext({"dino": (28, 28), "siglip": (28, 28)})
    with torch.no_grad():
        fused = concat([dino(tensors["pixels_dino"]), siglip(tensors["pixels_siglip"])], context)
        projected = proj(fused, context)[0].tokens
    assert fused[0].tokens.shape == tensors["fused"].shape == (2, REF["tiny"]["tokens"], REF["tiny"]["fused_dim"])
    assert (fused[0].tokens - tensors["fused"]).abs().max() <= TOL
    assert (projected - tensors["projected"]).abs().max() <= TOL
    # the comparison sees both towers: swapping their pixels moves the result
    with torch.no_grad():
        swapped = concat([dino(tensors["pixels_siglip"]), siglip(tensors["pixels_dino"])], context)[0].tokens
    assert (swapped - tensors["fused"]).abs().max() > 1e-2


def test_the_preset_has_the_parameter_counts_prismatics_code_builds():
    from vlmkit.plugins.presets import load_preset

    model = build_model(ModelConfig.from_dict(load_preset("preset", "prismatic-dinosiglip-384")), meta=True)
    counts = REF["full_size_parameters"]

    def n(module):
        return sum(p.numel() for p in module.parameters())

    assert n(model.encoders[0]) == counts["dino_featurizer"]
    assert n(model.encoders[1]) == counts["siglip_featurizer"]
    assert n(model.connectors[-1]) == counts["projector_into_4096"]
    assert model.connectors[-1].input.dim == counts["fused_vision_dim"] == 2176
    assert model.visual_spec.num_tokens == 729  # 384 px / 14 = 27 x 27 patches from each tower, fused on channels
    views = {name: (v.mean, v.std) for name, v in model.views.items()}
    assert views["dino"][0] == pytest.approx((0.485, 0.456, 0.406)) and views["siglip"][0] == pytest.approx((0.5,) * 3)
