"""CLIP (LLaVA §0.1), ViP-LLaVA's multi-layer CLIP (§4.1) and SigLIP: parity with transformers,
paper-size shapes on meta, weights by path, partial unfreezing ("CLIP layers >= 12", §5.2/5.4)."""

from __future__ import annotations

import pytest
import torch

from vlmkit.errors import ConfigError
from vlmkit.model.assembly import build_component, build_model
from vlmkit.model.config import ModelConfig
from vlmkit.model.contracts import BuildOptions
from vlmkit.model.selectors import select_parameters

# 12 layers so that ViP's layer list [-2, -5, -8, -11, 6] is valid on a tiny tower
CLIP12 = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=12, num_attention_heads=4, image_size=28,
              patch_size=14, hidden_act="quick_gelu")
SIGLIP_TINY = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=3, num_attention_heads=4, image_size=30,
                   patch_size=14, hidden_act="gelu_pytorch_tanh", layer_norm_eps=1e-6)


def encoder(name: str, build: BuildOptions | None = None, **args):
    return build_component("encoder", {"name": name, "args": args}, build=build)


def test_clip_layers_match_transformers_hidden_states():
    torch.manual_seed(0)
    enc = encoder("clip", config=CLIP12).eval()
    x = torch.randn(2, 3, 28, 28)
    with torch.no_grad():
        ref = enc.vision(x, output_hidden_states=True).hidden_states
        mine = enc.hidden_states(x)
        assert len(mine) == len(ref) == 13
        for a, b in zip(mine, ref):
            assert torch.allclose(a, b, atol=1e-6)
        out = enc(x)
    assert torch.allclose(out.tokens, ref[-2][:, 1:], atol=1e-6)  # layer -2, CLS dropped
    assert out.grid == (2, 2)
    cls = encoder("clip", config=CLIP12, select="cls_patch").eval()
    cls.load_state_dict(enc.state_dict())
    with torch.no_grad():
        assert torch.allclose(cls(x).tokens, ref[-2], atol=1e-6) and cls(x).grid is None


def test_clip_multilayer_concatenates_layers_in_vip_order():
    torch.manual_seed(0)
    enc = encoder("clip-multilayer", config=CLIP12).eval()
    assert enc.feature_layers == [-2, -5, -8, -11, 6] and enc.output_dim == 5 * 32
    x = torch.randn(1, 3, 28, 28)
    with torch.no_grad():
        h = enc.vision(x, output_hidden_states=True).hidden_states
        ref = torch.cat([h[i] for i in (-2, -5, -8, -11, 6)], dim=-1)[:, 1:]
        assert torch.allclose(enc(x).tokens, ref, atol=1e-6)
    # layers are read up to the deepest one asked for: [1, 3] never runs layers 4..12
    shallow = encoder("clip-multilayer", config=CLIP12, layers=[3, 1])
    calls = []
    for i, layer in enumerate(shallow.vision.encoder.layers):
        layer.register_forward_hook(lambda *_, i=i: calls.append(i))
    assert shallow(x).tokens.shape == (1, 4, 64) and calls == [0, 1, 2]


def test_paper_sizes_on_meta():
    with torch.device("meta"):
        vip = encoder("clip-multilayer", config="large-336", build=BuildOptions(pretrained=False, meta=True))
        siglip = encoder("siglip", config="so400m-384", build=BuildOptions(pretrained=False, meta=True))
        assert tuple(vip(torch.empty(2, 3, 336, 336)).tokens.shape) == (2, 576, 5120)
        out = siglip(torch.empty(1, 3, 384, 384))
    assert tuple(out.tokens.shape) == (1, 729, 1152) and out.grid == (27, 27)
    assert siglip.spec().num_tokens == 729 and siglip.view.mean == (0.5, 0.5, 0.5)
    assert not hasattr(siglip.vision, "head")  # the pooling head is not a token feature: not built


def test_siglip_layer_minus_two_matches_transformers():
    torch.manual_seed(0)
    enc = encoder("siglip", config=SIGLIP_TINY).eval()
    x = torch.randn(2, 3, 30, 30)
    with torch.no_grad():
        ref = enc.vision(x, output_hidden_states=True).hidden_states  # [0] = embeddings, [k] = layer k
        assert len(ref) == 4
        assert torch.allclose(enc(x).tokens, ref[-2], atol=1e-6)  # no CLS token to drop
        last = encoder("siglip", config=SIGLIP_TINY, feature_layer=-1).eval()
        last.load_state_dict(enc.state_dict())
        assert torch.allclose(last(x).tokens, ref[3], atol=1e-6)
    assert enc.grid(30, 30) == (2, 2)


def test_load_clip_and_siglip_by_path(tmp_path):
    from transformers import CLIPVisionConfig, CLIPVisionModel, SiglipVisionConfig, SiglipVisionModel

    torch.manual_seed(0)
    clip = CLIPVisionModel(CLIPVisionConfig(**CLIP12)).eval()
    clip.save_pretrained(tmp_path / "clip")
    siglip = SiglipVisionModel(SiglipVisionConfig(**SIGLIP_TINY)).eval()  # with its pooling head
    siglip.save_pretrained(tmp_path / "siglip")
    x = torch.randn(1, 3, 28, 28)
    with torch.no_grad():
        enc = encoder("clip", path=str(tmp_path / "clip")).eval()
        assert torch.equal(enc(x).tokens, clip(x, output_hidden_states=True).hidden_states[-2][:, 1:])
        vip = encoder("clip-multilayer", path=str(tmp_path / "clip")).eval()
        h = clip(x, output_hidden_states=True).hidden_states
        assert torch.equal(vip(x).tokens, torch.cat([h[i] for i in (-2, -5, -8, -11, 6)], -1)[:, 1:])
        y = torch.randn(1, 3, 30, 30)
        enc = encoder("siglip", path=str(tmp_path / "siglip")).eval()
        assert torch.equal(enc(y).tokens, siglip(y, output_hidden_states=True).hidden_states[-2])
    # a checkpoint rebuilds the architecture from arguments alone
    again = encoder("siglip", **enc.checkpoint_args({}), build=BuildOptions(pretrained=False))
    again.load_state_dict(enc.state_dict())
    with torch.no_grad():
        assert torch.equal(again.eval()(y).tokens, enc(y).tokens)


def test_clip_layers_from_12_selector_on_clip_large():
    cfg = ModelConfig.from_dict({"encoders": [{"name": "clip", "args": {"config": "large-336"}}],
                                 "connector": "mlp2x_gelu", "llm": "tiny-llama"})
    model = build_model(cfg, meta=True)
    chosen = select_parameters(model, ["encoder.clip:layers>=12"])
    layers = {int(n.split("encoder.layers.")[1].split(".")[0]) for n in chosen}
    assert layers == set(range(12, 24))
    assert all(".encoder.layers." in n for n in chosen)  # embeddings and norms stay frozen
    params = dict(model.named_parameters())
    assert sum(params[n].numel() for n in chosen) == 12 * 12_596_224 == 151_154_688


def test_partially_frozen_clip_runs_the_frozen_prefix_without_graph():
    torch.manual_seed(0)
    enc = encoder("clip", config=CLIP12)
    for name, p in enc.named_parameters():
        p.requires_grad_(any(f"layers.{k}." in name for k in range(6, 12)))
    x = torch.randn(2, 3, 28, 28)
    states = enc.hidden_states(x)
    assert all(s.grad_fn is None for s in states[:7])  # embeddings + layers 1..6 (0-based 0..5)
    assert all(s.requires_grad for s in states[7:])
    enc(x).tokens.sum().backward()
    grads = {n for n, p in enc.named_parameters() if p.grad is not None}
    # layer -2 is the output of layer 11 of 12: layers.11 gets no gradient (as in DenseFusion)
    assert grads and {int(n.split("layers.")[1].split(".")[0]) for n in grads} == set(range(6, 11))


def test_bad_clip_arguments():
    with pytest.raises(ConfigError, match="out of range"):
        encoder("clip", config="tiny", feature_layer=7)
    with pytest.raises(ConfigError, match="out of range"):
        encoder("clip-multilayer", config="tiny")  # 4 layers cannot give layer -11
    with pytest.raises(ConfigError, match="position embeddings"):
        encoder("siglip", config="tiny", image_size=112)
