"""MG-LLaVA's XTuner checkpoints -> vlmkit (format ``mg-llava``), on tiny stand-ins for its released parts.

Two references. (1) The trainable modules a checkpoint holds, made by MG-LLaVA's ORIGINAL classes
(``DualPathFuseModule``, XTuner's ``ProjectorModel``) at tiny widths with their outputs on fixed inputs:
``tests/fixtures/seeds/mg-llava`` (``scripts/seed_fixtures/mg_llava_original.py``); imported, vlmkit's
``convgate``, ``roi`` projector and ``mlp2x_gelu`` give the same outputs. (2) The whole model: MG-LLaVA's
full stack (XTuner runner, mmengine, DeepSpeed, open_clip, torchvision, paper widths hard-coded) was not run
here, so a tiny vlmkit model of MG-LLaVA's layout is written out under the parameter names of MG-LLaVA's
modules (``projector.model.N``, ``bbox_projector.model.N``, ``fuse_module.*``, XTuner's ``llm.*``) inside an
mmengine-style checkpoint (``{"meta", "state_dict"}``); the import must put every tensor back where it came
from (exact logits on a batch with boxes), take the frozen towers from their own folders (CLIP, and LAION's
ConvNeXt as ``open_clip_pytorch_model.bin``), and refuse what does not fit.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from PIL import Image

from vlmkit.errors import CheckpointError, ConfigError
from vlmkit.interop.catalogue import detect_format, export_checkpoint, import_checkpoint
from vlmkit.interop.formats import ImportOptions
from vlmkit.model.checkpoint import load_checkpoint, read_checkpoint_config
from vlmkit.model.tiny_tokenizer import build_tiny_tokenizer


@pytest.fixture(scope="module")
def parts(tmp_path_factory):
    """Tiny CLIP folder, LAION-style ConvNeXt .bin, LLM folder: what MG-LLaVA's checkpoint leaves out."""
    from safetensors.torch import save_file  # noqa: F401 - the LLM folder is written by transformers
    from timm.models.convnext import ConvNeXt
    from transformers import CLIPVisionConfig, CLIPVisionModel, LlamaConfig, LlamaForCausalLM

    root = tmp_path_factory.mktemp("mg_parts")
    torch.manual_seed(0)
    CLIPVisionModel(CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=3, num_attention_heads=4,
                                     image_size=56, patch_size=14)).save_pretrained(root / "clip")
    trunk = ConvNeXt(depths=(1, 1, 1, 1), dims=(8, 16, 24, 32), num_classes=0)
    (root / "convnext").mkdir()
    torch.save({f"visual.trunk.{k}": v for k, v in trunk.state_dict().items()},
               root / "convnext" / "open_clip_pytorch_model.bin")
    tok = build_tiny_tokenizer()
    llm = LlamaForCausalLM(LlamaConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                                       num_key_value_heads=2, vocab_size=len(tok), max_position_embeddings=512,
                                       pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id,
                                       eos_token_id=tok.eos_token_id))
    llm.save_pretrained(root / "llm")
    tok.save_pretrained(root / "llm")
    return root


def _options(parts: Path, **kw) -> ImportOptions:
    return ImportOptions(vision_tower=str(parts / "clip"), aux_vision_tower=str(parts / "convnext"),
                         llm=str(parts / "llm"), **kw)


def _reference(parts: Path, tmp_path: Path, with_llm: bool = True, seed: int = 1):
    """A vlmkit model of MG-LLaVA's layout, trained-looking, and its state under MG-LLaVA's names."""
    from vlmkit.model.assembly import build_model
    from vlmkit_fusion.mg_llava_format import _model_config

    scratch = tmp_path / "tok"
    scratch.mkdir(exist_ok=True)
    model = build_model(_model_config(parts / "clip", parts / "convnext", parts / "llm", scratch, _options(parts),
                                      {"fuse_module.gate.0.weight": (16, 64)}), pretrained=True).eval()
    torch.manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if not name.startswith("encoders."):
                p.add_(torch.randn_like(p) * 0.05)
    if not with_llm:  # a pretrain checkpoint: the LLM stays the folder's
        from transformers import LlamaForCausalLM

        model.llm.model.load_state_dict(LlamaForCausalLM.from_pretrained(parts / "llm").state_dict())
    roi, convgate, proj = model.connectors
    theirs = {}
    theirs.update({f"bbox_projector.model.{k}": v for k, v in roi.projector.state_dict().items()})
    theirs.update({f"fuse_module.{k}": v for k, v in convgate.state_dict().items()})
    theirs.update({f"projector.model.{k}": v for k, v in proj.proj.state_dict().items()})
    if with_llm:
        theirs.update({f"llm.{k}": v for k, v in model.llm.model.state_dict().items()})
    return model, {k: v.clone() for k, v in theirs.items()}


def _batch(model):
    from vlmkit.data.processing import MultimodalProcessor, collate
    from vlmkit.data.templates import Turn

    proc = MultimodalProcessor.for_model(model)
    feats = []
    for i, colour in enumerate([(220, 20, 20), (20, 200, 40)]):
        img = Image.new("RGB", (96, 72), (255, 255, 255))
        img.paste(Image.new("RGB", (30, 20), colour), (10 + 8 * i, 12))
        feats.append(proc([Turn("user", "<image>\nWhat colour is the box?"), Turn("assistant", "red")], [img],
                          boxes=[[[10 + 8 * i, 12, 40 + 8 * i, 32], [0, 0, 50, 50]]]))
    feats.append(proc([Turn("user", "Say hi"), Turn("assistant", "hi")], []))
    return collate(feats, model.tokenizer.pad_token_id, views=list(model.views))


@pytest.mark.parametrize("with_llm", [True, False], ids=["sft", "pretrain"])
def test_import_puts_every_tensor_back_and_gives_the_same_logits(parts, tmp_path, with_llm):
    ref, state = _reference(parts, tmp_path, with_llm)
    release = tmp_path / "release"
    release.mkdir()
    torch.save({"meta": {"epoch": 1, "iter": 100}, "state_dict": state}, release / "iter_100.pth")
    assert detect_format(release).name == "mg-llava"
    ckpt = import_checkpoint(release, tmp_path / "ckpt", options=_options(parts))
    model = load_checkpoint(ckpt).eval()
    a, b = ref.state_dict(), model.state_dict()
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a), [k for k in a if not torch.equal(a[k], b[k])][:5]
    batch = _batch(ref)
    with torch.no_grad():
        assert torch.equal(ref(**batch).logits, model(**batch).logits)
    origin = read_checkpoint_config(ckpt)["imported_from"]
    assert origin["format"] == "mg-llava" and origin["llm_from"] == ("checkpoint" if with_llm else "--llm folder")
    assert model.config.template == "vicuna_v1" and model.views["hires"].resize == "pad"


def test_the_parts_a_checkpoint_leaves_out_are_asked_for_by_flag(parts, tmp_path):
    _, state = _reference(parts, tmp_path)
    torch.save({"state_dict": state}, tmp_path / "iter_5.pth")
    for missing, flag in (("llm", "--llm"), ("aux_vision_tower", "--vision-tower-aux"), ("vision_tower", "--vision-tower")):
        opts = _options(parts)
        setattr(opts, missing, None)
        with pytest.raises(ConfigError, match=rf"not in MG-LLaVA's checkpoint; pass {flag} PATH"):
            import_checkpoint(tmp_path / "iter_5.pth", tmp_path / f"out-{missing}", format="mg-llava", options=opts)


def test_variants_this_layout_does_not_express_are_refused_by_name(parts, tmp_path):
    _, state = _reference(parts, tmp_path)
    state["multi_level_linear.0.weight"] = torch.zeros(4, 4)  # use_multi_level=True
    torch.save({"state_dict": state}, tmp_path / "iter_6.pth")
    with pytest.raises(CheckpointError, match=r"iter_6\.pth: weights do not match .*multi_level_linear\.0\.weight"):
        import_checkpoint(tmp_path / "iter_6.pth", tmp_path / "out", format="mg-llava", options=_options(parts))
    del state["multi_level_linear.0.weight"]
    state.pop("fuse_module.gate.0.bias")
    torch.save({"state_dict": state}, tmp_path / "iter_7.pth")
    with pytest.raises(CheckpointError, match=r"missing 1 weight\(s\) for vlmkit's connectors\.1\.gate\.0\.bias"):
        import_checkpoint(tmp_path / "iter_7.pth", tmp_path / "out2", format="mg-llava", options=_options(parts))


def test_a_checkpoint_that_would_run_code_is_refused(parts, tmp_path):
    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {tmp_path / 'pwned'}",))

    torch.save({"state_dict": {"projector.model.0.weight": Payload()}}, tmp_path / "iter_8.pth")
    with pytest.raises(CheckpointError, match=r"iter_8\.pth: refused: torch\.load\(weights_only=True\).*trusted "
                                              r"environment"):
        import_checkpoint(tmp_path / "iter_8.pth", tmp_path / "out", format="mg-llava", options=_options(parts))
    assert not (tmp_path / "pwned").exists()


def test_export_to_mg_llava_is_refused_with_the_reason(parts, tmp_path):
    ref, _ = _reference(parts, tmp_path)
    from vlmkit.model.checkpoint import save_checkpoint

    ckpt = save_checkpoint(ref, tmp_path / "ckpt")
    with pytest.raises(ConfigError, match=r"format 'mg-llava' is import-only: MG-LLaVA's code builds its model from an "
                                          r"XTuner Python config"):
        export_checkpoint(ckpt, tmp_path / "out", format="mg-llava")


def test_the_original_modules_give_their_outputs_after_import(parts, tmp_path):
    """fuse_module / projector / bbox_projector made by MG-LLaVA's own classes (the fixture), plus the tiny
    LLM: after import, vlmkit's convgate, mlp2x_gelu and roi projector compute what the originals computed."""
    from safetensors.torch import load_file
    from transformers import LlamaForCausalLM

    fixture = load_file(str(Path(__file__).parent / "fixtures" / "seeds" / "mg-llava" / "modules.safetensors"))
    ref = {k[4:]: v for k, v in fixture.items() if k.startswith("ref.")}
    state = {k: v for k, v in fixture.items() if not k.startswith("ref.")}
    state.update({f"llm.{k}": v for k, v in LlamaForCausalLM.from_pretrained(parts / "llm").state_dict().items()})
    torch.save({"meta": {"iter": 1}, "state_dict": state}, tmp_path / "iter_1.pth")
    model = load_checkpoint(import_checkpoint(tmp_path / "iter_1.pth", tmp_path / "ckpt", options=_options(parts)))
    roi, convgate, proj = model.connectors
    assert convgate.gate[0].out_features == 16  # DualPathFuseModule's low_res_dim // 2, read from the tensors
    with torch.no_grad():
        fused = convgate.fuse(ref["fuse_low"], (4, 4), ref["fuse_high"])
        assert (fused - ref["fuse_out"]).abs().max() <= 1e-6
        assert (proj.proj(ref["projector_in"]) - ref["projector_out"]).abs().max() <= 1e-6
        assert (roi.projector(ref["bbox_in"]) - ref["bbox_out"]).abs().max() <= 1e-6
    assert ref["fuse_out"].sub(ref["fuse_low"]).abs().max() > 1e-2  # the fusion changes its input
