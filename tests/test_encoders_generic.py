"""The generic encoders `timm` and `hf-vision`: the library's own models, read through the library's own APIs.

Parity: for tiny random configs of several architectures per library, the encoder's tokens equal what the
library computes itself (timm's ``forward_features`` / ``get_intermediate_layers``, transformers'
``hidden_states``) to 0.0 in fp32. Plus the conformance kit, checkpoints, and the errors a user meets.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import timm
import torch
from transformers import AutoConfig, AutoModel

from vlmkit.errors import ConfigError
from vlmkit.model.contracts import BuildOptions
from vlmkit.testing import EncoderConformance
from vlmkit_encoders.hf_vision import HFVisionEncoder
from vlmkit_encoders.timm_tower import TimmEncoder

RANDOM = BuildOptions(pretrained=False)
VIT = dict(img_size=32, patch_size=8, embed_dim=32, depth=3, num_heads=2)


def _twin(name: str, args: dict) -> torch.nn.Module:
    torch.manual_seed(0)
    return timm.create_model(name, pretrained=False, num_classes=0, **args).eval()


def _ours(name: str, args: dict, **kw) -> TimmEncoder:
    torch.manual_seed(0)
    return TimmEncoder(name, model_args=args, build=RANDOM, **kw).eval()


@pytest.mark.parametrize("name, args, size", [
    ("vit_tiny_patch16_224", VIT, 32),
    ("vit_small_patch14_reg4_dinov2", dict(img_size=28, patch_size=7, embed_dim=32, depth=2, num_heads=2), 28),
    ("eva02_tiny_patch14_224", dict(img_size=28, patch_size=7, embed_dim=32, depth=2, num_heads=2), 28),
    ("convnext_atto", {}, 64),
    ("resnet18", {}, 64),
])
def test_timm_last_layer_with_norm_equals_timms_forward_features(name, args, size):
    ours = _ours(name, args, norm=True)
    ref = _twin(name, args)
    x = torch.randn(2, 3, size, size)
    with torch.no_grad():
        got = ours(x)
        want = ref.forward_features(x)
    want = want.flatten(2).transpose(1, 2) if want.dim() == 4 else want[:, ref.num_prefix_tokens:]
    assert got.tokens.shape == want.shape and got.grid == ours.grid(size, size)
    assert torch.equal(got.tokens, want)


@pytest.mark.parametrize("name, args", [
    ("vit_tiny_patch16_224", VIT),
    ("vit_small_patch14_reg4_dinov2", dict(img_size=32, patch_size=8, embed_dim=32, depth=3, num_heads=2)),
])
def test_timm_a_middle_block_equals_get_intermediate_layers_and_later_blocks_are_pruned(name, args):
    ours = _ours(name, args, layer=-2)
    ref = _twin(name, args)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        (want,) = ref.get_intermediate_layers(x, n=[1], reshape=True)
        got = ours(x)
    assert torch.equal(got.tokens, want.flatten(2).transpose(1, 2))
    assert len(ours.net.blocks) == 2  # block 3 is never run nor trained
    assert ours.spec().num_tokens == 16 and ours.output_dim == 32


def test_timm_keeps_prefix_tokens_on_request_and_then_has_no_grid():
    reg = dict(img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=2)
    ours = _ours("vit_small_patch14_reg4_dinov2", reg, keep_prefix=True)
    assert ours.prefix_tokens == 5 and ours.grid(32, 32) is None and ours.spec().num_tokens == 21
    with torch.no_grad():
        assert ours(torch.randn(1, 3, 32, 32)).tokens.shape == (1, 21, 32)


def test_timm_view_comes_from_the_pretrained_config_and_image_size_resamples_vits():
    conv = _ours("convnext_atto", {})
    assert conv.view.size == 224 and conv.view.mean == pytest.approx((0.485, 0.456, 0.406))
    vit = _ours("vit_tiny_patch16_224", dict(VIT, img_size=32), image_size=48)
    assert vit.view.size == 48 and vit.spec().num_tokens == 36


def test_timm_errors_name_the_model_and_what_to_do():
    with pytest.raises(ConfigError, match=r"unknown model 'vit_tiny_patch16_2244'; close matches: vit_tiny_patch16_224"):
        TimmEncoder("vit_tiny_patch16_2244", build=RANDOM)
    with pytest.raises(ConfigError, match=r"layer 7 out of range .*\(3 blocks/stages: -3..2\)"):
        TimmEncoder("vit_tiny_patch16_224", model_args=VIT, layer=7, build=RANDOM)


def test_timm_weights_not_available_offline_name_the_model_and_the_flags(tmp_path):
    code = ("from vlmkit_encoders.timm_tower import TimmEncoder\n"
            "TimmEncoder('vit_tiny_patch16_224', model_args=dict(img_size=32, patch_size=8, embed_dim=32, depth=2, "
            "num_heads=2))\n")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "empty-cache")}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode != 0
    assert "weights of 'vit_tiny_patch16_224' are not available offline" in proc.stderr
    assert "--set encoder.file=PATH" in proc.stderr and "--set encoder.pretrained=false" in proc.stderr


def test_timm_local_weights_file_is_read_and_pickles_only_with_weights_only(tmp_path):
    src = _twin("vit_tiny_patch16_224", VIT)
    from safetensors.torch import save_file

    save_file(src.state_dict(), str(tmp_path / "w.safetensors"))
    ours = TimmEncoder("vit_tiny_patch16_224", model_args=VIT, file=str(tmp_path / "w.safetensors")).eval()
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(ours(x).tokens, src.forward_intermediates(x, indices=[2], intermediates_only=True)[0]
                           .flatten(2).transpose(1, 2))

    class Payload:
        def __reduce__(self):
            return (os.system, ("echo pwned > " + str(tmp_path / "pwned"),))

    torch.save({"pos_embed": Payload()}, tmp_path / "evil.bin")
    with pytest.raises(ConfigError, match=r"evil\.bin: torch\.load\(weights_only=True\) refused it"):
        TimmEncoder("vit_tiny_patch16_224", model_args=VIT, file=str(tmp_path / "evil.bin"))
    assert not (tmp_path / "pwned").exists()


HF_TINY = dict(hidden_size=32, num_hidden_layers=3, num_attention_heads=2, intermediate_size=64, image_size=28,
               patch_size=7)


@pytest.mark.parametrize("model_type, extra, prefix", [
    ("dinov2", {}, 1),
    ("dinov2_with_registers", {"num_register_tokens": 4}, 5),
    ("siglip_vision_model", {}, 0),
    ("vit", {}, 1),
    ("clip_vision_model", {}, 1),
])
@pytest.mark.parametrize("layer", [-1, -2, 1])
def test_hf_vision_equals_the_models_own_hidden_states(model_type, extra, prefix, layer):
    cfg = {"model_type": model_type, **HF_TINY, **extra}
    torch.manual_seed(0)
    ours = HFVisionEncoder(config=cfg, layer=layer).eval()
    torch.manual_seed(0)
    ref = AutoModel.from_config(AutoConfig.for_model(model_type, **HF_TINY, **extra)).eval()
    x = torch.randn(2, 3, 28, 28)
    with torch.no_grad():
        got = ours(x)
        want = ref(pixel_values=x, output_hidden_states=True).hidden_states[layer][:, prefix:]
    assert ours.prefix_tokens == prefix and got.grid == (4, 4)
    assert torch.equal(got.tokens, want)


def test_hf_vision_reads_a_saved_folder_with_its_processor_and_a_composite_models_vision_part(tmp_path):
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel

    clip = CLIPModel(CLIPConfig(text_config=dict(hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                                                 intermediate_size=32, vocab_size=50),
                                vision_config=dict(HF_TINY), projection_dim=8)).eval()
    clip.save_pretrained(tmp_path / "clip")
    CLIPImageProcessor(size={"shortest_edge": 28}, crop_size={"height": 28, "width": 28}).save_pretrained(tmp_path / "clip")
    ours = HFVisionEncoder(path=str(tmp_path / "clip"), layer=-2).eval()
    assert ours.view.mean == pytest.approx((0.48145466, 0.4578275, 0.40821073))  # the folder's processor
    assert not any("text" in n for n, _ in ours.named_parameters())
    x = torch.randn(1, 3, 28, 28)
    with torch.no_grad():
        want = clip.vision_model(pixel_values=x, output_hidden_states=True).hidden_states[-2][:, 1:]
        assert torch.equal(ours(x).tokens, want)


def test_hf_vision_errors():
    with pytest.raises(ConfigError, match=r"give either path .* or config"):
        HFVisionEncoder()
    with pytest.raises(ConfigError, match=r"layer 9 out of range for a 3-layer model"):
        HFVisionEncoder(config={"model_type": "vit", **HF_TINY}, layer=9)
    with pytest.raises(ConfigError, match=r"cannot load '/nonexistent/tower'"):
        HFVisionEncoder(path="/nonexistent/tower")


@pytest.mark.parametrize("encoder", [
    {"name": "timm", "args": {"model": "convnext_atto", "pretrained": False, "image_size": 64}},
    {"name": "hf-vision", "args": {"config": {"model_type": "dinov2", **HF_TINY}}},
])
def test_a_model_with_a_generic_encoder_saves_and_loads_back_equal(encoder, tmp_path):
    from vlmkit.model.assembly import build_model
    from vlmkit.model.checkpoint import load_checkpoint, save_checkpoint
    from vlmkit.model.config import ModelConfig

    model = build_model(ModelConfig.from_dict({"encoders": [encoder], "connector": "mlp2x_gelu",
                                               "llm": "tiny-llama"})).eval()
    save_checkpoint(model, tmp_path / "ck")
    again = load_checkpoint(tmp_path / "ck").eval()
    a, b = model.state_dict(), again.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


class TestTimmConformance(EncoderConformance):
    component = "timm"


class TestHFVisionConformance(EncoderConformance):
    component = "hf-vision"


def test_models_command_searches_the_libraries_offline():
    def run(*args):
        return subprocess.run([sys.executable, "-m", "vlmkit_cli", "models", *args], capture_output=True, text=True,
                              timeout=300)

    out = run("timm", "*dinov2*", "--limit", "0")
    assert out.returncode == 0 and "vit_large_patch14_dinov2" in out.stdout.split()
    assert "use one with: vlmkit build --encoder timm --set encoder.model=NAME" in out.stderr
    hf = run("hf-vision", "*dino*")
    assert {"dinov2", "dinov2_with_registers"} <= set(hf.stdout.split())
    bad = run("nope")
    assert bad.returncode == 2 and "unknown library 'nope'; one of timm, hf-vision" in bad.stderr


TIMM_VIT = {"name": "timm", "args": {"model": "vit_tiny_patch16_224", "pretrained": False, "model_args": VIT}}
TIMM_CONVNEXT = {"name": "timm", "args": {"model": "convnext_atto", "pretrained": False, "image_size": 64}}
HF_DINO = {"name": "hf-vision", "args": {"config": {"model_type": "dinov2", **HF_TINY}}}


@pytest.mark.parametrize("name, config", [
    ("s2 over a timm ViT", {"encoders": [{"name": "s2", "args": {"encoder": TIMM_VIT, "scales": [32, 64]}}]}),
    ("s2 over hf-vision DINOv2", {"encoders": [{"name": "s2", "args": {"encoder": HF_DINO, "scales": [28, 56]}}]}),
    ("Conv-Gate: hf-vision low-res + timm ConvNeXt high-res (its own view, as MG-LLaVA's aux tower)",
     {"encoders": [HF_DINO, {"name": "timm", "args": {**TIMM_CONVNEXT["args"], "view": "aux"}}],
      "fusion": ["convgate"]}),
    ("RoI object tokens over a timm grid", {"encoders": [TIMM_VIT], "fusion": ["roi"]}),
    ("Ross over hf-vision", {"encoders": [HF_DINO], "objectives": ["lm", {"name": "ross", "args": {
        "vae_config": "tiny", "width": 32, "depth": 1, "heads": 4}}]}),
])
def test_seed_ideas_compose_over_generic_backbones(name, config):
    """The paper modules take any backbone whose contract fits: built, one training step, finite loss, grads."""
    from vlmkit.model.assembly import build_model
    from vlmkit.model.config import ModelConfig
    from vlmkit.testing import conversation_batch

    torch.manual_seed(0)
    model = build_model(ModelConfig.from_dict({**config, "connector": "mlp2x_gelu", "llm": "tiny-llama"}))
    batch = conversation_batch(model)
    loss = model(**batch).loss
    loss.backward()
    assert torch.isfinite(loss)
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.connectors.parameters())


def test_a_generic_encoder_without_a_grid_is_refused_by_what_needs_one():
    from vlmkit.errors import IncompatibleComponentsError
    from vlmkit.model.assembly import build_model
    from vlmkit.model.config import ModelConfig

    keep = {"name": "timm", "args": {**TIMM_VIT["args"], "keep_prefix": True}}  # class token kept: no grid
    with pytest.raises(IncompatibleComponentsError, match=r"fusion 'convgate' cannot be combined with the output of "
                                                          r"'timm'.*grid"):
        build_model(ModelConfig.from_dict({"encoders": [keep], "fusion": ["convgate"], "connector": "mlp2x_gelu",
                                           "llm": "tiny-llama"}))


# -- open_clip -----------------------------------------------------------------------------------------------
def _open_clip_folder(tmp_path, name: str, model_cfg: dict, preprocess: dict | None = None):
    """A folder as open_clip saves a model (open_clip_config.json + open_clip_model.safetensors)."""
    import json

    import open_clip
    from open_clip import factory
    from safetensors.torch import save_file

    factory._MODEL_CONFIGS.setdefault(name, model_cfg)
    torch.manual_seed(0)
    model = open_clip.create_model(name).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    folder = tmp_path / name
    folder.mkdir()
    (folder / "open_clip_config.json").write_text(json.dumps({"model_cfg": model_cfg,
                                                              "preprocess_cfg": preprocess or {}}))
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(folder / "open_clip_model.safetensors"))
    return folder, model.visual


TEXT = {"context_length": 8, "vocab_size": 64, "width": 16, "heads": 2, "layers": 1}
OPEN_CLIP_TOWERS = {
    "vit": {"embed_dim": 16, "vision_cfg": {"image_size": 32, "layers": 3, "width": 32, "head_width": 16,
                                            "patch_size": 8}, "text_cfg": TEXT},
    "vit-attn-pool": {"embed_dim": 16, "vision_cfg": {"image_size": 32, "layers": 3, "width": 32, "head_width": 16,
                                                      "patch_size": 8, "attentional_pool": True, "attn_pooler_queries": 4,
                                                      "attn_pooler_heads": 2}, "text_cfg": TEXT},
    "timm-convnext": {"embed_dim": 16, "vision_cfg": {"timm_model_name": "convnext_atto", "timm_model_pretrained": False,
                                                      "timm_pool": "", "timm_proj": "linear", "image_size": 64},
                      "text_cfg": TEXT},
}


@pytest.mark.parametrize("kind", sorted(OPEN_CLIP_TOWERS))
@pytest.mark.parametrize("layer", [-1, -2])
def test_open_clip_saved_folders_give_what_open_clip_computes(kind, layer, tmp_path):
    from vlmkit_encoders.open_clip_tower import OpenCLIPEncoder

    folder, visual = _open_clip_folder(tmp_path, f"t-{kind}", OPEN_CLIP_TOWERS[kind],
                                       {"mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25]})
    ours = OpenCLIPEncoder(f"local-dir:{folder}", layer=layer).eval()
    size = ours.view.size
    x = torch.randn(2, 3, size, size)
    with torch.no_grad():
        got = ours(x)
        if kind == "timm-convnext" and layer == -1:  # the timm trunk's own forward
            want = visual.trunk.forward_features(x)
        else:  # open_clip's own intermediate-feature API
            want = visual.forward_intermediates(x, indices=[layer], intermediates_only=True)["image_intermediates"][0]
    assert ours.view.mean == (0.5, 0.5, 0.5) and ours.view.std == (0.25, 0.25, 0.25)  # the folder's preprocess_cfg
    assert torch.equal(got.tokens, want.flatten(2).transpose(1, 2)) and got.grid == ours.grid(size, size)
    assert not any(n.startswith("transformer.") or "token_embedding" in n for n, _ in ours.named_parameters())


def test_open_clip_vit_last_block_equals_its_token_output(tmp_path):
    """Against open_clip's ordinary forward with output_tokens (ln_post'd patch tokens): norm=True, last block."""
    from vlmkit_encoders.open_clip_tower import OpenCLIPEncoder

    cfg = {**OPEN_CLIP_TOWERS["vit"], "vision_cfg": {**OPEN_CLIP_TOWERS["vit"]["vision_cfg"], "output_tokens": True}}
    folder, visual = _open_clip_folder(tmp_path, "t-vit-tokens", cfg)
    ours = OpenCLIPEncoder(f"local-dir:{folder}", norm=True).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        _, tokens = visual(x)
        got = ours(x).tokens
    assert tokens.shape == got.shape and (got - tokens).abs().max() <= 1e-6


def test_open_clip_errors():
    from vlmkit_encoders.open_clip_tower import OpenCLIPEncoder

    with pytest.raises(ConfigError, match=r"unknown model 'ViT-L-144'; close matches: .*ViT-L-14"):
        OpenCLIPEncoder("ViT-L-144", build=RANDOM)
    with pytest.raises(ConfigError, match=r"layer 5 out of range"):
        OpenCLIPEncoder("vlmkit-tiny-vit", layer=5, build=RANDOM)


class TestOpenCLIPConformance(EncoderConformance):
    component = "open-clip"


def test_convllava_stage5_on_a_timm_convnext_computes_what_the_convnext5_stage_computes():
    """The fifth stage made of timm's ConvNeXt modules equals ConvLLaVA's (vlmkit's convnext5 stage, itself checked
    against the original conv-llava code) given the same weights: LN + 2x2/2 conv, blocks with layer scale 1e-6."""
    from transformers import ConvNextConfig
    from transformers.models.convnext.modeling_convnext import ConvNextStage

    args = dict(depths=(1, 1, 1, 1), dims=(8, 16, 24, 32))
    torch.manual_seed(0)
    ours = TimmEncoder("convnext_tiny", model_args=args, stage5={"width": 64, "depth": 2}, image_size=128,
                       build=RANDOM).eval()
    assert ours.spec().grid == (2, 2) and ours.output_dim == 64 and ours.view.multiple == 64
    hf = ConvNextStage(ConvNextConfig(hidden_sizes=[8, 16, 24, 32], depths=[1, 1, 1, 1], layer_scale_init_value=1e-6),
                       32, 64, kernel_size=2, stride=2, depth=2, drop_path_rates=[0.0, 0.0]).eval()
    with torch.no_grad():
        for p in ours.stage5.parameters():
            p.add_(torch.randn_like(p) * 0.1)  # not the init: a real comparison of every tensor
    names = {"downsample.0": "downsampling_layer.0", "downsample.1": "downsampling_layer.1", "conv_dw": "dwconv",
             "norm": "layernorm", "mlp.fc1": "pwconv1", "mlp.fc2": "pwconv2", "gamma": "layer_scale_parameter",
             "blocks.": "layers."}
    state = {}
    for k, v in ours.stage5.state_dict().items():
        for a, b in names.items():
            k = k.replace(a, b)
        state[k] = v
    hf.load_state_dict(state, strict=True)
    x = torch.randn(2, 32, 4, 4)
    with torch.no_grad():
        assert (ours.stage5(x) - hf(x)).abs().max() <= 1e-6
        full = ours(torch.randn(1, 3, 128, 128))
    assert full.tokens.shape == (1, 4, 64) and "stage4" in full.maps


def test_stage5_is_refused_where_it_does_not_fit():
    with pytest.raises(ConfigError, match=r"stage5 adds a ConvNeXt stage and needs a timm ConvNeXt; .* VisionTransformer"):
        TimmEncoder("vit_tiny_patch16_224", model_args=VIT, stage5={"depth": 1}, build=RANDOM)
    with pytest.raises(ConfigError, match=r"stage5 follows the last stage"):
        TimmEncoder("convnext_atto", layer=-2, stage5={"depth": 1}, build=RANDOM)


def test_hf_vision_checkpoint_keeps_the_folders_normalisation(tmp_path):
    """A rebuild from a checkpoint has no folder to read the image processor from: the view it recorded is kept."""
    from transformers import CLIPImageProcessor, Dinov2Config, Dinov2Model

    from vlmkit.model.assembly import build_model
    from vlmkit.model.checkpoint import load_checkpoint, save_checkpoint
    from vlmkit.model.config import ModelConfig

    Dinov2Model(Dinov2Config(**HF_TINY)).save_pretrained(tmp_path / "dino")
    CLIPImageProcessor(image_mean=[0.1, 0.2, 0.3], image_std=[0.4, 0.5, 0.6]).save_pretrained(tmp_path / "dino")
    model = build_model(ModelConfig.from_dict({"encoders": [{"name": "hf-vision", "args": {"path": str(tmp_path / "dino")}}],
                                               "connector": "mlp2x_gelu", "llm": "tiny-llama"}))
    assert model.encoders[0].view.mean == pytest.approx((0.1, 0.2, 0.3))
    save_checkpoint(model, tmp_path / "ck")
    again = load_checkpoint(tmp_path / "ck").encoders[0]
    assert again.view.mean == pytest.approx((0.1, 0.2, 0.3)) and again.view.std == pytest.approx((0.4, 0.5, 0.6))


def test_hf_vision_runs_siglip2_naflex_as_transformers_own_processor_feeds_it():
    """SigLIP2's NaFlex models take patch sequences with their grid shapes. The reference is the model fed by
    transformers' own Siglip2ImageProcessor (no resize, rescale or normalisation: the pixels are already the
    encoder's input), at a square and at a non-square size."""
    from transformers import Siglip2ImageProcessor

    cfg = {"model_type": "siglip2_vision_model", "hidden_size": 32, "num_hidden_layers": 3, "num_attention_heads": 2,
           "intermediate_size": 64, "patch_size": 4, "num_patches": 16}
    torch.manual_seed(0)
    ours = HFVisionEncoder(config=cfg, layer=-2).eval()
    torch.manual_seed(0)
    ref = AutoModel.from_config(AutoConfig.for_model(**cfg)).eval()
    assert ours.view.size == 16 and ours.prefix_tokens == 0
    for h, w in ((16, 16), (12, 24)):
        x = torch.rand(2, 3, h, w)
        proc = Siglip2ImageProcessor(patch_size=4, max_num_patches=(h // 4) * (w // 4), do_resize=False,
                                     do_rescale=False, do_normalize=False)
        batch = proc(images=list(x), return_tensors="pt")
        assert batch["spatial_shapes"].tolist() == [[h // 4, w // 4]] * 2  # the processor kept the size
        with torch.no_grad():
            want = ref(pixel_values=batch["pixel_values"], pixel_attention_mask=batch["pixel_attention_mask"],
                       spatial_shapes=batch["spatial_shapes"], output_hidden_states=True).hidden_states[-2]
            got = ours(x)
        assert got.grid == (h // 4, w // 4)
        assert torch.equal(got.tokens, want)
