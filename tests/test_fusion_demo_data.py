"""Both Conv-Gate variants (two encoders with RoI object tokens; one hierarchical encoder) train through
the recipe runner on the demo's synthetic data, whose records carry boxes."""

from __future__ import annotations

import json

import pytest

from vlmkit.training.recipe import parse_recipe
from vlmkit.training.runner import run_recipe

LLM = {"name": "tiny-llama", "args": {"hidden_size": 64, "num_layers": 1, "num_heads": 2, "intermediate_size": 128}}
TWO_ENCODERS = {  # MG-LLaVA's shape: low-res stream + high-res stream on its own view, object tokens
    "encoders": [{"name": "tiny-conv", "args": {"image_size": 32, "width": 32}},
                 {"name": "tiny-conv", "args": {"image_size": 64, "width": 48, "view": "hires"}}],
    "fusion": [{"name": "roi", "args": {"stream": 1}}, "convgate"], "connector": "mlp2x_gelu", "llm": LLM,
    "max_length": 128,
}
ONE_ENCODER = {  # a single hierarchical encoder: its coarse grid fused with its own finer map
    "encoders": [{"name": "tiny-conv", "args": {"image_size": 64, "width": 32}}],
    "fusion": ["convgate"], "connector": "mlp2x_gelu", "llm": LLM, "max_length": 128,
}


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    from vlmkit_data.synthetic import generate_shapes

    return generate_shapes(tmp_path_factory.mktemp("shapes"), n_train=96, n_test=8, seed=2)


@pytest.mark.parametrize("model", [TWO_ENCODERS, ONE_ENCODER], ids=["clip+convnext-like", "single-hierarchical"])
def test_convgate_trains_on_demo_data(shapes, tmp_path, model):
    doc = {"model": model, "output_dir": str(tmp_path / "run"), "seed": 0, "stages": [{
        "name": "fuse", "trainable": ["fusion", "connector", "llm"], "lr": 3e-3, "max_steps": 24, "batch_size": 8,
        "logging_steps": 1, "save_steps": 1000, "warmup_ratio": 0.0, "schedule": "constant",
        "data": {"dataset": "llava-json", "args": {"path": shapes["train"], "image_root": shapes["root"], "boxes": True},
                 "template": {"name": "vicuna_v1", "args": {"system": ""}}},
    }]}
    final = run_recipe(parse_recipe(doc))
    losses = [h["loss"] for h in json.loads((final / "log_history.json").read_text()) if "loss" in h]
    assert sum(losses[-4:]) / 4 < 0.7 * sum(losses[:4]) / 4, losses
