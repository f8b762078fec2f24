"""transformers' VipLlavaForConditionalGeneration in and out (format ``hf-vip-llava``), with parity.

The reference is transformers' own VipLlava (the HF port of ViP-LLaVA, transformers PR #27932): a tiny
random one with a 12-layer CLIP so that ViP's layers [-2, -5, -8, -11, 6] exist. A second check closes
the loop with the original code: the ViP-LLaVA fixture made by WisconsinAIVision/ViP-LLaVA, imported
from its own format and exported as VipLlava, gives the original's logits inside transformers.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from test_hf_parity import ATTN, TOL, compare, expand, pad, sample_rows, tiny_hf_llava
from transformers import VipLlavaConfig, VipLlavaForConditionalGeneration

from vlmkit.errors import ConfigError
from vlmkit.interop.catalogue import detect_format, export_checkpoint, import_checkpoint
from vlmkit.interop.formats import ImportOptions
from vlmkit.model.checkpoint import load_checkpoint
from vlmkit.model.contracts import IMAGE_PLACEHOLDER
from vlmkit.model.tiny_tokenizer import build_tiny_tokenizer

FIXTURE = Path(__file__).parent / "fixtures" / "seeds" / "vip-llava"


def _image_id(config) -> int:
    """The image token's id (``image_token_id`` in newer transformers, ``image_token_index`` before)."""
    value = getattr(config, "image_token_id", None)
    return int(value if value is not None else config.image_token_index)


@pytest.fixture(scope="module")
def tok():
    return build_tiny_tokenizer()


def tiny_vip_llava(tok, seed: int = 0) -> VipLlavaForConditionalGeneration:
    """12 CLIP layers, so that ViP's [-2, -5, -8, -11, 6] exist."""
    return tiny_hf_llava(tok, seed, VipLlavaConfig, VipLlavaForConditionalGeneration, vision_layers=12)


@pytest.fixture(scope="module")
def reference(tmp_path_factory, tok):
    root = tmp_path_factory.mktemp("hf_vip")
    hf = tiny_vip_llava(tok)
    hf.save_pretrained(root / "hf")
    tok.save_pretrained(root / "hf")
    return {"hf": hf, "hf_dir": root / "hf", "root": root}


def test_detected_and_imported_with_transformers_logits(reference, tok):
    assert detect_format(reference["hf_dir"]).name == "hf-vip-llava"
    ckpt = import_checkpoint(reference["hf_dir"], reference["root"] / "vlmkit")
    model = load_checkpoint(ckpt).eval()
    assert model.config.encoders[0].name.endswith("clip-multilayer")
    assert model.encoders[0].feature_layers == [-2, -5, -8, -11, 6]
    r = compare(model, reference["hf"], tok, "right", n_tokens=16, image_id=tok.convert_tokens_to_ids("<image>"))
    assert r["diff"] <= TOL and r["sensitivity"] > 1e-2


def test_export_reloads_in_transformers_with_equal_logits(reference, tok, tmp_path):
    ckpt = import_checkpoint(reference["hf_dir"], tmp_path / "vlmkit")
    out = export_checkpoint(ckpt, tmp_path / "hf", format="hf-vip-llava")
    back = VipLlavaForConditionalGeneration.from_pretrained(out, attn_implementation=ATTN).eval()
    model = load_checkpoint(ckpt).eval()
    r = compare(model, back, tok, "right", n_tokens=16, image_id=_image_id(back.config))
    assert r["diff"] <= TOL


def test_the_original_vip_llava_fixture_gives_its_logits_in_transformers_through_vlmkit(tmp_path):
    """Original ViP-LLaVA code -> vlmkit (format 'llava') -> transformers VipLlava: the original's logits."""
    ckpt = import_checkpoint(FIXTURE / "model", tmp_path / "vlmkit",
                             options=ImportOptions(vision_tower=str(FIXTURE / "clip-tower")))
    out = export_checkpoint(ckpt, tmp_path / "hf", format="hf-vip-llava")
    hf = VipLlavaForConditionalGeneration.from_pretrained(out, attn_implementation=ATTN).eval()
    ref = load_file(str(FIXTURE / "reference.safetensors"))
    ids, mask = ref["input_ids"], ref["attention_mask"]
    rows = [r[m.bool()].tolist() for r, m in zip(ids, mask)]
    image_id = _image_id(hf.config)
    hf_ids, hf_mask = pad(expand(rows, image_id, 16), 0, "right")
    n_images = sum(r.count(IMAGE_PLACEHOLDER) for r in rows)
    with torch.no_grad():
        logits = hf(input_ids=hf_ids, attention_mask=hf_mask, pixel_values=ref["pixel_values"][:n_images]).logits
    width = ref["logits"].shape[1]
    valid = hf_mask.bool()[:, :width]
    vocab = ref["logits"].shape[-1]
    diff = (logits[:, :width, :vocab] - ref["logits"])[valid].abs().max().item()
    assert diff <= TOL


def test_a_llava_model_is_not_a_vip_llava(tmp_path, tok):
    from vlmkit.model.assembly import build_model
    from vlmkit.model.checkpoint import save_checkpoint
    from vlmkit.model.config import ComponentConfig, ModelConfig

    cfg = ModelConfig(encoders=[ComponentConfig("clip", {"config": "tiny"})], connector=ComponentConfig("mlp2x_gelu"))
    ckpt = save_checkpoint(build_model(cfg, pretrained=False), tmp_path / "ckpt")
    with pytest.raises(ConfigError, match=r"cannot be written as hf-vip-llava: encoder\.0 'clip': .*'clip-multilayer'"):
        export_checkpoint(ckpt, tmp_path / "out", format="hf-vip-llava")


def test_sample_rows_are_the_shared_batch(tok):
    # the batch helpers come from the Llava parity tests; one image, two images, text only
    assert [r.count(IMAGE_PLACEHOLDER) for r in sample_rows(tok)] == [1, 2, 0]
