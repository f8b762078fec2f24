"""Core stands alone; each sibling works with nothing but core beside it."""

from __future__ import annotations

import importlib.util
import os

import pytest
import torch

from vlmkit.model.contracts import Connector, ImageView, StreamSpec, VisionEncoder, VisualFeatures, single_stream
from vlmkit.testing import ConnectorConformance, EncoderConformance

SIBLINGS = {"vlmkit-encoders": "vlmkit_encoders", "vlmkit-fusion": "vlmkit_fusion",
            "vlmkit-objectives": "vlmkit_objectives", "vlmkit-data": "vlmkit_data", "vlmkit-cli": "vlmkit_cli"}
PRESENT = os.environ.get("VLMKIT_EXPECT_SIBLINGS", "")


def test_only_the_expected_siblings_are_installed():
    for dist, module in SIBLINGS.items():
        installed = importlib.util.find_spec(module) is not None
        assert installed == (dist == PRESENT), f"{module} installed={installed}, expected only {PRESENT or 'core'}"


def test_registry_lists_only_installed_components():
    from vlmkit.plugins.registry import registry

    dists = {e.distribution for e in registry.entries()}
    assert dists <= {"vlmkit-core", PRESENT} if PRESENT else dists == {"vlmkit-core"}
    assert all(e.static_status() == "ok" for e in registry.entries())


class PatchEncoder(VisionEncoder):
    """An encoder written by a user, registered in-process (no packaging)."""

    def __init__(self, dim: int = 16):
        super().__init__()
        self.view = ImageView("base", 32, (0.5,) * 3, (0.5,) * 3, "pad")
        self.output_dim = dim
        self.conv = torch.nn.Conv2d(3, dim, 8, 8)

    def grid(self, h: int, w: int) -> tuple[int, int]:
        return h // 8, w // 8

    def forward(self, x: torch.Tensor) -> VisualFeatures:
        f = self.conv(x.to(self.conv.weight.dtype))
        return VisualFeatures(f.flatten(2).transpose(1, 2), (f.shape[2], f.shape[3]))


class Proj(Connector):
    """A projector written by a user."""

    def __init__(self, inputs: list[StreamSpec], d_llm: int):
        super().__init__()
        self.s = single_stream(inputs, "proj")
        self.lin = torch.nn.Linear(self.s.dim, d_llm)
        self.d = d_llm

    def output_specs(self) -> list[StreamSpec]:
        return [StreamSpec("proj", self.d, self.s.num_tokens, self.s.grid, self.s.view)]

    def forward(self, streams: list[VisualFeatures], context: object) -> list[VisualFeatures]:
        return [VisualFeatures(self.lin(streams[0].tokens.to(self.lin.weight.dtype)), streams[0].grid)]


def _user_parts():
    from vlmkit.plugins.registry import register

    register("encoder", "user-patch", PatchEncoder)
    register("connector", "user-proj", Proj)


def _train_step(cfg_dict):
    from vlmkit.model.assembly import build_model
    from vlmkit.model.config import ModelConfig

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


@pytest.mark.skipif(PRESENT != "vlmkit-cli", reason="needs vlmkit-cli installed")
@pytest.mark.parametrize("args, needs", [
    (["build"], "vlmkit-encoders"),                                   # the default preset
    (["build", "--encoder", "clip"], "vlmkit-fusion"),                 # the default connector
    (["demo", "--output", "{tmp}/demo"], "vlmkit-encoders vlmkit-fusion vlmkit-data"),
    (["data", "check", "{tmp}/x.jsonl"], "vlmkit-data"),
    (["data", "preview", "{tmp}/x.jsonl"], "vlmkit-data"),
])
def test_cli_without_siblings_names_what_to_install(tmp_path, args, needs):
    """With only vlmkit-cli beside core, a command that needs a sibling fails with one line naming it."""
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-m", "vlmkit_cli", *[a.format(tmp=tmp_path) for a in args]],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    assert f"pip install {needs}" in lines[0] and 'vlmkit-cli[all]' in lines[0], lines[0]
    assert not (tmp_path / "demo").exists()  # nothing ran before the check


def test_every_installed_component_imports():
    from vlmkit.plugins.registry import registry

    results = registry.check_all()
    assert results and all(status == "ok" for _, status in results), [(e.name, s) for e, s in results if s != "ok"]


# -- the conformance kit needs no sibling: it brings its own partner components -----------------------
class TestUserEncoderConformance(EncoderConformance):
    component = PatchEncoder


class TestUserConnectorConformance(ConnectorConformance):
    component = Proj


# -- core names no plugin: no default connector, and import-hf says what to install ----------------------
def test_a_model_without_connector_is_refused_with_the_installed_ones():
    from vlmkit.errors import ConfigError
    from vlmkit.model.assembly import build_model
    from vlmkit.model.config import ModelConfig

    _user_parts()
    cfg = ModelConfig.from_dict({"encoders": ["user-patch"], "llm": {"name": "tiny-llama", "args": {"hidden_size": 32}}})
    with pytest.raises(ConfigError, match=r"model\.connector: not set.*installed connectors: .*user-proj"):
        build_model(cfg)


def test_import_hf_names_the_missing_converter_and_its_package(tmp_path):
    from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig

    from vlmkit.errors import ConfigError
    from vlmkit.interop.hf_llava import import_hf
    from vlmkit.model.tiny_tokenizer import build_tiny_tokenizer

    tok = build_tiny_tokenizer()
    LlavaConfig(vision_config=CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                               num_attention_heads=4, image_size=56, patch_size=14),
                text_config=LlamaConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                        num_attention_heads=4, vocab_size=len(tok))).save_pretrained(tmp_path / "hf")
    tok.save_pretrained(tmp_path / "hf")
    if PRESENT == "vlmkit-encoders":  # the tower converts; nothing converts the projector
        expected = r"multi_modal_projector: no installed plugin converts HF Llava's projector.*vlmkit-fusion"
    else:
        expected = (r"vision_config\.model_type 'clip_vision_model': no installed plugin converts this HF vision "
                    r"tower.*vlmkit-encoders")
    with pytest.raises(ConfigError, match=expected):
        import_hf(tmp_path / "hf", tmp_path / "out")
    assert not (tmp_path / "out").exists()
