"""Core stands alone; each sibling works with nothing but core beside it."""

from __future__ import annotations

import importlib.util
import os

import pytest
import torch

SIBLINGS = {"vlmkit-encoders": "vlmkit_encoders", "vlmkit-fusion": "vlmkit_fusion",
            "vlmkit-objectives": "vlmkit_objectives", "vlmkit-data": "vlmkit_data", "vlmkit-cli": "vlmkit_cli"}
PRESENT = os.environ.get("VLMKIT_EXPECT_SIBLINGS", "")


def test_only_the_expected_siblings_are_installed():
    for dist, module in SIBLINGS.items():
        installed = importlib.util.find_spec(module) is not None
        assert installed == (dist == PRESENT), f"{module} installed={installed}, expected only {PRESENT or 'core'}"


def test_registry_lists_only_installed_components():
    from vlmkit.registry import registry

    dists = {e.distribution for e in registry.entries()}
    assert dists <= {"vlmkit-core", PRESENT} if PRESENT else dists == {"vlmkit-core"}
    assert all(e.static_status() == "ok" for e in registry.entries())


def _user_parts():
    """An encoder and a projector written by a user, registered in-process (no packaging)."""
    from vlmkit.contracts import Connector, ImageView, StreamSpec, VisionEncoder, VisualFeatures, single_stream
    from vlmkit.registry import register

    class PatchEncoder(VisionEncoder):
        def __init__(self, dim: int = 16):
            super().__init__()
            self.view = ImageView("base", 32, (0.5,) * 3, (0.5,) * 3, "pad")
            self.output_dim = dim
            self.conv = torch.nn.Conv2d(3, dim, 8, 8)

        def grid(self, h, w):
            return h // 8, w // 8

        def forward(self, x):
            f = self.conv(x)
            return VisualFeatures(f.flatten(2).transpose(1, 2), (f.shape[2], f.shape[3]))

    class Proj(Connector):
        def __init__(self, inputs, d_llm):
            super().__init__()
            self.s = single_stream(inputs, "proj")
            self.lin = torch.nn.Linear(self.s.dim, d_llm)
            self.d = d_llm

        def output_specs(self):
            return [StreamSpec("proj", self.d, self.s.num_tokens, self.s.grid, self.s.view)]

        def forward(self, streams, context):
            return [VisualFeatures(self.lin(streams[0].tokens), streams[0].grid)]

    register("encoder", "user-patch", PatchEncoder)
    register("connector", "user-proj", Proj)


def _train_step(cfg_dict):
    from vlmkit.assembly import build_model
    from vlmkit.config import ModelConfig

    model = build_model(ModelConfig.from_dict(cfg_dict))
    ids = torch.tensor([[2, -200, 30, 31], [2, 40, 41, 42]])
    out = model(ids, torch.ones_like(ids), labels=ids.clamp(min=0), pixel_values={"base": torch.randn(1, 3, 32, 32)})
    out.loss.backward()
    return model, out


def test_core_with_user_components_trains():
    _user_parts()
    model, out = _train_step({"encoders": ["user-patch"], "connector": "user-proj",
                              "llm": {"name": "tiny-llama", "args": {"hidden_size": 32, "num_layers": 1}}})
    assert torch.isfinite(out.loss)
    assert model.encoders[0].conv.weight.grad is not None


@pytest.mark.skipif(PRESENT != "vlmkit-fusion", reason="needs vlmkit-fusion installed (nox -s isolation-fusion)")
def test_core_plus_fusion_with_own_encoder():
    _user_parts()
    model, out = _train_step({"encoders": ["user-patch"], "connector": "mlp2x_gelu",
                              "llm": {"name": "tiny-llama", "args": {"hidden_size": 32, "num_layers": 1}}})
    assert model.connectors[0].component_name == "mlp2x_gelu"
    assert torch.isfinite(out.loss)


@pytest.mark.skipif(PRESENT != "vlmkit-encoders", reason="needs vlmkit-encoders installed")
def test_core_plus_encoders_with_own_projector():
    _user_parts()
    _, out = _train_step({"encoders": [{"name": "tiny-conv", "args": {"image_size": 32}}], "connector": "user-proj",
                          "llm": {"name": "tiny-llama", "args": {"hidden_size": 32, "num_layers": 1}}})
    assert torch.isfinite(out.loss)


@pytest.mark.skipif(PRESENT != "vlmkit-cli", reason="needs vlmkit-cli installed")
def test_cli_lists_core_components_only():
    import json
    import subprocess
    import sys

    rows = json.loads(subprocess.run([sys.executable, "-m", "vlmkit_cli", "plugins", "--json"], capture_output=True,
                                     text=True, check=True).stdout)
    assert {r["distribution"] for r in rows} == {"vlmkit-core"}


def test_every_installed_component_imports():
    from vlmkit.registry import registry

    results = registry.check_all()
    assert results and all(status == "ok" for _, status in results), [(e.name, s) for e, s in results if s != "ok"]
