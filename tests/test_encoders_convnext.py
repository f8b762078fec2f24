"""ConvNeXt towers: MG-LLaVA's 4-stage trunk (`convnext`) and ConvLLaVA's 5-stage tower (`convnext5`).

Paper-size facts (components.md §1.2-1.8) are checked on the meta device; behaviour on tiny towers.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from PIL import Image

from vlmkit.errors import ConfigError
from vlmkit.model.assembly import build_component, build_model
from vlmkit.model.config import ModelConfig
from vlmkit.model.contracts import BuildOptions
from vlmkit.model.selectors import select_parameters

TINY_TRUNK = {"hidden_sizes": [16, 32, 48, 64], "depths": [1, 1, 2, 1]}


def encoder(name: str, build: BuildOptions | None = None, **args):
    return build_component("encoder", {"name": name, "args": args}, build=build)


def n_params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@pytest.fixture(scope="module")
def paper_towers():
    with torch.device("meta"):
        return {"c5": encoder("convnext5", config="large", image_size=1536, build=BuildOptions(pretrained=False, meta=True)),
                "c4": encoder("convnext", config="large", build=BuildOptions(pretrained=False, meta=True))}


# -- paper-size facts (meta) -----------------------------------------------------------------------
def test_stage5_parameter_count_and_shapes(paper_towers):
    stage5 = paper_towers["c5"].stages[4]
    assert n_params(stage5) == 472_934_400
    assert n_params(stage5.downsample) == 18_880_512
    assert tuple(stage5.downsample[1].weight.shape) == (3072, 1536, 2, 2)
    assert len(stage5.blocks) == 6
    block = stage5.blocks[0]
    assert n_params(block) == 75_675_648
    assert tuple(block.conv_dw.weight.shape) == (3072, 1, 7, 7)
    assert tuple(block.mlp.fc1.weight.shape) == (12288, 3072)
    assert tuple(block.mlp.fc2.weight.shape) == (3072, 12288)
    assert tuple(block.gamma.shape) == (3072,)
    # the trunk is ConvNeXt-L (convnext_large_d_320 layout)
    assert paper_towers["c5"].widths == [192, 384, 768, 1536, 3072]
    assert [len(s.blocks) for s in paper_towers["c4"].stages] == [3, 3, 27, 3]


@pytest.mark.parametrize("hw, tokens", [((1536, 1536), 576), ((1024, 1024), 256), ((768, 768), 144),
                                        ((1536, 768), 288), ((1000, 1000), 225)])
def test_convnext5_tokens_at_paper_resolutions(paper_towers, hw, tokens):
    enc = paper_towers["c5"]
    feats = enc(torch.empty(1, 3, *hw, device="meta"))
    assert tuple(feats.tokens.shape) == (1, tokens, 3072)
    assert feats.grid == (hw[0] // 64, hw[1] // 64)
    assert enc.num_tokens(*hw) == tokens


def test_four_stage_trunk_at_1536_and_its_maps(paper_towers):
    enc = paper_towers["c4"]
    feats = enc(torch.empty(1, 3, 1536, 1536, device="meta"))
    assert tuple(feats.tokens.shape) == (1, 2304, 1536)
    assert enc.feature_maps() == (("stage0", 192, 4), ("stage1", 384, 8), ("stage2", 768, 16), ("stage3", 1536, 32))
    # MG-LLaVA's 768 view: 192/96/48/24 px maps, 576 tokens that line up with CLIP-336's grid
    assert enc.view.size == 768 and enc.view.name == "hires" and enc.spec().num_tokens == 576
    feats = enc(torch.empty(2, 3, 768, 768, device="meta"))
    assert {k: tuple(v.shape) for k, v in feats.maps.items()} == {
        "stage0": (2, 192, 192, 192), "stage1": (2, 384, 96, 96), "stage2": (2, 768, 48, 48),
        "stage3": (2, 1536, 24, 24)}
    assert paper_towers["c5"].feature_maps()[-1] == ("stage4", 3072, 64)


# -- behaviour on tiny towers --------------------------------------------------------------------
def test_tokens_are_the_raw_last_stage_and_maps_every_stage():
    torch.manual_seed(0)
    enc = encoder("convnext5", config="tiny").eval()
    x = torch.randn(2, 3, 200, 130)
    with torch.no_grad():
        feats = enc(x)
        # reference: apply the modules by hand, no final norm
        h = enc.stem(x)
        ref = []
        for stage in enc.stages:
            h = stage(h)
            ref.append(h)
    assert feats.grid == (3, 2) == enc.grid(200, 130)
    assert list(feats.maps) == ["stage0", "stage1", "stage2", "stage3", "stage4"]
    for (name, channels, stride), r in zip(enc.feature_maps(), ref):
        assert torch.equal(feats.maps[name], r)
        assert feats.maps[name].shape[1] == channels and feats.maps[name].shape[-1] == 130 // stride
    assert torch.equal(feats.tokens, ref[-1].permute(0, 2, 3, 1).reshape(2, 6, -1))


def test_new_stage5_starts_near_identity():
    """Layer scale 1e-6 at init: each block is ~identity, the stage output ~ its downsampler output."""
    torch.manual_seed(0)
    enc = encoder("convnext5", config="tiny").eval()
    stage5 = enc.stages[4]
    for block in stage5.blocks:
        assert torch.equal(block.gamma, torch.full_like(block.gamma, 1e-6))
    x = torch.randn(1, 64, 8, 8)
    with torch.no_grad():
        down = stage5.downsample[1](stage5.downsample[0](x))
        assert torch.allclose(stage5(x), down, atol=1e-4)


def test_named_parts_and_selectors():
    cfg = ModelConfig.from_dict({"encoders": [{"name": "convnext5", "args": {"config": "tiny"}}],
                                 "connector": "mlp2x_gelu", "llm": "tiny-llama"})
    model = build_model(cfg)
    enc = model.encoders[0]
    parts = enc.named_parts()
    assert {"stem", "embeddings", "stages.0", "stages.4", "stage5"} <= set(parts)
    assert parts["stage5"] == parts["stages.4"] and parts["stage5"]
    assert parts["embeddings"] == parts["stem"] and parts["stem"]  # the part's name before 0.2 still selects it
    later = select_parameters(model, ["encoder.convnext5:stages>=2"])
    expected = {f"encoders.0.{n}" for n, _ in enc.named_parameters() if n.split(".")[:2] in
                (["stages", "2"], ["stages", "3"], ["stages", "4"])}
    assert later == expected
    assert select_parameters(model, ["encoder.convnext5:stage5"]) == {
        f"encoders.0.{n}" for n, _ in enc.stages[4].named_parameters(prefix="stages.4")}


def test_partially_frozen_tower_builds_no_graph_through_frozen_stages():
    torch.manual_seed(0)
    enc = encoder("convnext5", config="tiny")
    for name, p in enc.named_parameters():
        p.requires_grad_(name.startswith("stages.4."))
    x = torch.randn(2, 3, 128, 128)
    packed = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: packed.append(t.shape) or t, lambda t: t):
        feats = enc(x)
    for name in ("stage0", "stage1", "stage2", "stage3"):
        assert feats.maps[name].grad_fn is None and not feats.maps[name].requires_grad
    assert feats.tokens.requires_grad
    # exactly what the trainable stage alone saves for backward: nothing from the frozen prefix
    alone = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: alone.append(t.shape) or t, lambda t: t):
        enc.stages[4](feats.maps["stage3"])
    assert packed == alone
    feats.tokens.sum().backward()
    for name, p in enc.named_parameters():
        assert (p.grad is not None) == name.startswith("stages.4."), name


def test_frozen_prefix_has_no_stochastic_depth_in_train_mode():
    """A frozen stage never trains: drop path (MG-LLaVA's quirk) must be off there, on in trainable stages."""
    enc = encoder("convnext5", config={**TINY_TRUNK, "drop_path_rate": 0.5}, stage5_width=32, stage5_depth=1)
    for name, p in enc.named_parameters():
        p.requires_grad_(name.startswith("stages.4."))
    enc.train()
    assert enc.stages[4].training and not enc.stages[3].training and not enc.stem.training
    x = torch.randn(4, 3, 128, 128)
    torch.manual_seed(1)
    a = enc(x).maps["stage3"]
    torch.manual_seed(2)
    b = enc(x).maps["stage3"]
    assert torch.equal(a, b)
    for p in enc.parameters():
        p.requires_grad_(True)
    enc.train()
    torch.manual_seed(1)
    a = enc(x).maps["stage3"]
    torch.manual_seed(2)
    b = enc(x).maps["stage3"]
    assert not torch.equal(a, b)


def test_bad_arguments_are_refused():
    with pytest.raises(ConfigError, match="resize"):
        encoder("convnext", config="tiny", resize="crop")
    with pytest.raises(ConfigError, match="unknown config"):
        encoder("convnext", config="huge")
    with pytest.raises(ConfigError, match="4-stage"):
        encoder("convnext5", config={"hidden_sizes": [8, 16, 32], "depths": [1, 1, 1]})
    with pytest.raises(ConfigError, match="expects"):
        encoder("convnext5", config="tiny", stage5_width="wide")


# -- loading weights by path ---------------------------------------------------------------------
def _hf_convnext(sizes, depths):
    from transformers import ConvNextConfig, ConvNextModel

    torch.manual_seed(0)
    return ConvNextModel(ConvNextConfig(hidden_sizes=sizes, depths=depths, num_stages=len(depths))).eval()


def test_load_hf_folder_four_stages(tmp_path):
    hf = _hf_convnext([16, 32, 48, 64], [1, 1, 2, 1])
    hf.save_pretrained(tmp_path)
    x = torch.randn(1, 3, 96, 64)
    with torch.no_grad():
        ref = hf(x, output_hidden_states=True).hidden_states  # embeddings, then each stage
        trunk = encoder("convnext", path=str(tmp_path)).eval()
        feats = trunk(x)
        for i in range(4):
            assert torch.equal(feats.maps[f"stage{i}"], ref[i + 1])
        # convnext5 on a 4-stage folder: same trunk, a new (default-init) stage appended
        tower = encoder("convnext5", path=str(tmp_path), stage5_width=96, stage5_depth=2).eval()
        out = tower(torch.randn(1, 3, 128, 128))
        assert tuple(out.tokens.shape) == (1, 4, 96)
        assert torch.equal(tower(x).maps["stage3"], ref[4])


def test_load_convllava_five_stage_folder(tmp_path):
    hf = _hf_convnext([16, 32, 48, 64, 96], [1, 1, 2, 1, 2])  # ConvLLaVA's tower saved after stage 1
    hf.save_pretrained(tmp_path)
    x = torch.randn(2, 3, 192, 128)
    tower = encoder("convnext5", path=str(tmp_path)).eval()
    assert (tower.stage5_width, tower.stage5_depth) == (96, 2)
    with torch.no_grad():
        ref = hf(x).last_hidden_state
        assert torch.equal(tower(x).tokens, ref.flatten(2).transpose(1, 2))
    with pytest.raises(ConfigError, match="already has a fifth stage"):
        encoder("convnext5", path=str(tmp_path), stage5_width=3072)


def test_convert_open_clip_trunk_from_safetensors(tmp_path):
    from safetensors.torch import save_file

    timm_trunk, state = _open_clip_state()
    save_file(state, str(tmp_path / "open_clip_model.safetensors"))
    enc = encoder("convnext", path=str(tmp_path / "open_clip_model.safetensors"), image_size=64).eval()
    x = torch.randn(2, 3, 64, 96)
    with torch.no_grad():
        h = timm_trunk.stem(x)
        for i, stage in enumerate(timm_trunk.stages):
            h = stage(h)
            assert torch.allclose(enc(x).maps[f"stage{i}"], h, atol=1e-5)
    # the architecture is read from the header alone when no weights are wanted
    with torch.device("meta"):
        shell = encoder("convnext", path=str(tmp_path / "open_clip_model.safetensors"),
                        build=BuildOptions(pretrained=False, meta=True))
    assert shell.widths == [16, 32, 48, 64] and n_params(shell) == n_params(enc)


# -- a full model with native aspect ratios ------------------------------------------------------
def test_mixed_aspect_batch_through_a_full_model(tmp_path):
    from vlmkit.data.processing import MultimodalProcessor, collate
    from vlmkit.data.templates import Turn
    from vlmkit.model.checkpoint import load_checkpoint, save_checkpoint

    torch.manual_seed(0)
    cfg = ModelConfig.from_dict({"encoders": [{"name": "convnext5", "args": {"config": "tiny", "image_size": 256,
                                                                            "resize": "native"}}],
                                 "connector": "mlp2x_gelu", "llm": "tiny-llama", "max_length": 256})
    model = build_model(cfg)
    view = model.views["base"]
    assert view.resize == "native" and view.multiple == 64
    proc = MultimodalProcessor.for_model(model)
    wide, square = Image.new("RGB", (512, 256), (200, 10, 10)), Image.new("RGB", (300, 300), (10, 200, 10))
    samples = [proc([Turn("user", "<image>\nColour?"), Turn("assistant", "red")], [wide]),
               proc([Turn("user", "<image>\nColour?"), Turn("assistant", "green")], [square]),
               proc([Turn("user", "<image> and <image>?"), Turn("assistant", "both")], [wide, square])]
    batch = collate(samples, model.tokenizer.pad_token_id, views=list(model.views))
    assert isinstance(batch["pixel_values"]["base"], list)  # sizes differ: not stackable
    out = model(**batch)
    # long side scaled to 256, both sides snapped to 64: 512x256 -> 256x128 px -> 2x4 = 8 tokens; 300x300 -> 4x4
    assert [s.num_main for s in out.image_spans] == [8, 16, 8, 16]
    assert [s.grid for s in out.image_spans] == [(2, 4), (4, 4), (2, 4), (4, 4)]
    out.loss.backward()
    assert torch.isfinite(out.loss)
    # the checkpoint rebuilds the same tower from its arguments (no path, no download)
    model.eval()
    save_checkpoint(model, tmp_path / "ck")
    again = load_checkpoint(tmp_path / "ck").eval()
    with torch.no_grad():
        assert torch.allclose(model(**batch).logits, again(**batch).logits, atol=1e-6)


# -- the forms LAION ConvNeXt towers come in -------------------------------------------------------
def _open_clip_state(seed: int = 0):
    """A tiny timm ConvNeXt trunk and its weights as an open_clip file names them."""
    from timm.models.convnext import ConvNeXt

    torch.manual_seed(seed)
    trunk = ConvNeXt(depths=(1, 1, 2, 1), dims=(16, 32, 48, 64), num_classes=0).eval()
    for p in trunk.parameters():  # non-trivial layer scales so every block matters
        p.data.add_(torch.randn_like(p) * 0.1)
    state = {f"visual.trunk.{k}": v for k, v in trunk.state_dict().items()}
    state["text.token_embedding.weight"] = torch.zeros(4, 4)  # an open_clip file also holds the text tower
    return trunk, state


@pytest.mark.parametrize("form", ["open_clip_pytorch_model.bin", "open_clip_model.safetensors", "model.safetensors",
                                  "pytorch_model.bin", "folder:open_clip_pytorch_model.bin",
                                  "folder:open_clip_model.safetensors", "folder:timm"])
def test_every_laion_convnext_form_loads_the_same_trunk(tmp_path, form):
    """MG-LLaVA reads LAION's open_clip_pytorch_model.bin; users also have the safetensors, timm's files and
    folders holding them. Each gives the trunk's own stage maps; pickles load with weights_only=True."""
    from safetensors.torch import save_file

    trunk, state = _open_clip_state()
    folder = form.startswith("folder:")
    name = form.split(":")[-1]
    if name == "timm":  # a timm hub folder: bare trunk names, its own config.json (not a transformers one)
        name, state = "model.safetensors", {k.removeprefix("visual.trunk."): v for k, v in state.items()
                                            if k.startswith("visual.trunk.")}
        (tmp_path / "config.json").write_text('{"architecture": "convnext_large", "num_classes": 0}')
    f = tmp_path / name
    if name.endswith(".safetensors"):
        save_file(state, str(f))
    else:
        torch.save(state, f)
    enc = encoder("convnext", path=str(tmp_path if folder else f), image_size=64).eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        h = trunk.stem(x)
        for i, stage in enumerate(trunk.stages):
            h = stage(h)
            assert torch.allclose(enc(x).maps[f"stage{i}"], h, atol=1e-5)


def test_unreadable_convnext_forms_are_refused_with_the_accepted_ones(tmp_path):
    class Payload:
        def __reduce__(self):
            import os
            return (os.system, (f"touch {tmp_path / 'pwned'}",))

    torch.save({"visual.trunk.stem.0.weight": Payload()}, tmp_path / "open_clip_pytorch_model.bin")
    with pytest.raises(ConfigError, match=r"open_clip_pytorch_model\.bin: refused: torch\.load\(weights_only=True\)"):
        encoder("convnext", path=str(tmp_path / "open_clip_pytorch_model.bin"))
    assert not (tmp_path / "pwned").exists()
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("x")
    with pytest.raises(ConfigError, match=r"holds no ConvNeXt weights .*found notes\.txt.*accepted: a transformers "
                                          r"ConvNeXt folder"):
        encoder("convnext", path=str(empty))
    (tmp_path / "weights.npz").write_bytes(b"x")
    with pytest.raises(ConfigError, match=r"weights\.npz is not a weights file vlmkit reads"):
        encoder("convnext", path=str(tmp_path / "weights.npz"))


# -- checkpoints written before 0.2 (transformers' module names) ----------------------------------
PRE_0_2 = Path(__file__).parent / "fixtures" / "checkpoints" / "convnext-pre-0.2"


def test_a_checkpoint_written_before_0_2_loads_and_computes_what_it_computed(tmp_path, caplog):
    """Made by vlmkit at commit 252e576 (scripts/checkpoint_fixtures/make_pre_0_2.py), when both towers held
    transformers' ConvNeXt modules: every tensor finds its timm-named place and the towers give the tokens the old
    code gave. Saving again writes today's names."""
    import json
    import logging

    from safetensors import safe_open

    from vlmkit.model.checkpoint import load_checkpoint, save_checkpoint

    with safe_open(str(PRE_0_2 / "checkpoint" / "model.safetensors"), framework="pt") as f:
        old_names = [k for k in f.keys() if k.startswith("encoders.")]
    assert any(".layers.0.dwconv." in k for k in old_names) and any("embeddings.patch" in k for k in old_names)
    import shutil

    from vlmkit.errors import CheckpointError
    from vlmkit.model.checkpoint import seal_checkpoint

    # a pre-0.2 checkpoint records the digest of its weights only: refused until sealed (the migration)
    with pytest.raises(CheckpointError, match=r"written by a vlmkit before 0\.2.*vlmkit checkpoint seal"):
        load_checkpoint(PRE_0_2 / "checkpoint")
    ck = tmp_path / "sealed"
    shutil.copytree(PRE_0_2 / "checkpoint", ck)
    assert seal_checkpoint(ck) == 1 + len([f for f in (ck / "llm").iterdir() if f.is_file()])
    with caplog.at_level(logging.INFO, logger="vlmkit.model.checkpoint"):
        model = load_checkpoint(ck).eval()
    assert f"{len(old_names)} tensor(s) saved under a former layout's names" in caplog.text
    ref = json.loads((PRE_0_2 / "reference.json").read_text())
    torch.manual_seed(ref["seed"])
    pixels = {name: torch.randn(*shape) for name, shape in ref["pixels"].items()}
    with torch.no_grad():
        for enc, tokens in zip(model.encoders, ref["tokens"]):
            diff = (enc(pixels[enc.view.name]).tokens - torch.tensor(tokens)).abs().max().item()
            assert diff <= 1e-6, f"{enc.component_name}: max |diff| {diff:.2e} against the pre-0.2 code"
    save_checkpoint(model, tmp_path / "again")
    with safe_open(str(tmp_path / "again" / "model.safetensors"), framework="pt") as f:
        new_names = [k for k in f.keys() if k.startswith("encoders.")]
    assert len(new_names) == len(old_names) and any(".blocks.0.conv_dw." in k for k in new_names)
    assert not any("dwconv" in k or "embeddings." in k for k in new_names)
    again = load_checkpoint(tmp_path / "again").eval()
    a, b = model.state_dict(), again.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_a_former_name_that_fits_no_tensor_is_still_named_as_unexpected(tmp_path, monkeypatch):
    import shutil

    from safetensors.torch import load_file, save_file

    from vlmkit.errors import CheckpointError
    from vlmkit.model.checkpoint import load_checkpoint

    ck = tmp_path / "ck"
    shutil.copytree(PRE_0_2 / "checkpoint", ck)
    state = load_file(str(ck / "model.safetensors"))
    state["encoders.1.stages.7.layers.0.dwconv.weight"] = torch.zeros(1)
    save_file(state, str(ck / "model.safetensors"))
    monkeypatch.setenv("VLMKIT_VERIFY_WEIGHTS", "0")  # the file was edited on purpose
    with pytest.raises(CheckpointError, match=r"encoders\.1\.stages\.7\.layers\.0\.dwconv\.weight"):
        load_checkpoint(ck)
