"""AnyRes parity: transformers' LlavaNext and LlavaOnevision in and out (``hf-llava-next``, ``hf-llava-onevision``).

The references are tiny random transformers models: LLaVA-NeXT with a CLIP tower (56 px tiles, 4x4 patch grid
plus CLS, strategy ``default``), OneVision with a SigLIP tower (strategy ``full``) and a cap small enough
(``anyres_max_2``) that its bilinear downsampling runs. Images of three aspect ratios (2:1, 1:3, 1:1) go
through vlmkit's own processor; the same pixels go to transformers, whose image processor is checked to give
them too. Every image gets as many tokens as transformers gives it, and the logits agree within 1e-5 (fp32).
"""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch
import yaml
from PIL import Image
from test_hf_parity import ATTN, TOL
from transformers import (
    CLIPVisionConfig,
    LlamaConfig,
    LlavaNextConfig,
    LlavaNextForConditionalGeneration,
    LlavaNextImageProcessor,
    LlavaNextImageProcessorPil,
    LlavaOnevisionConfig,
    LlavaOnevisionForConditionalGeneration,
    LlavaOnevisionImageProcessor,
    LlavaOnevisionImageProcessorPil,
    SiglipVisionConfig,
)

from vlmkit.data.processing import MultimodalProcessor, collate
from vlmkit.data.templates import Turn
from vlmkit.errors import ConfigError
from vlmkit.interop.catalogue import detect_format, export_checkpoint, import_checkpoint
from vlmkit.model.checkpoint import load_checkpoint
from vlmkit.model.contracts import IMAGE_PLACEHOLDER
from vlmkit.model.tiny_tokenizer import build_tiny_tokenizer

TILE = 56
NEXT_PINPOINTS = [[56, 112], [112, 56], [112, 112], [56, 168], [168, 56]]
OV_PINPOINTS = [[h * TILE, w * TILE] for h in range(1, 4) for w in range(1, 4)]
FAMILIES = {
    "llava_next": (LlavaNextConfig, LlavaNextForConditionalGeneration, "hf-llava-next"),
    "llava_onevision": (LlavaOnevisionConfig, LlavaOnevisionForConditionalGeneration, "hf-llava-onevision"),
}
#: (width, height): wide 2:1, tall 1:3, square
SIZES = [(200, 100), (60, 180), (90, 90)]


@pytest.fixture(scope="module")
def tok():
    return build_tiny_tokenizer()


def tiny_hf(tok, family: str, seed: int = 0):
    config_cls, model_cls, _ = FAMILIES[family]
    text = LlamaConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                       num_key_value_heads=2, vocab_size=len(tok), max_position_embeddings=1024,
                       pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id)
    common = dict(text_config=text, image_token_index=tok.convert_tokens_to_ids("<image>"))
    if family == "llava_next":
        vision = CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=3, num_attention_heads=4,
                                  image_size=TILE, patch_size=14, projection_dim=32)
        cfg = config_cls(vision_config=vision, image_grid_pinpoints=NEXT_PINPOINTS, **common)
    else:
        vision = SiglipVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=3, num_attention_heads=4,
                                    image_size=TILE, patch_size=14, vision_use_head=False)  # as the release
        cfg = config_cls(vision_config=vision, image_grid_pinpoints=OV_PINPOINTS, vision_aspect_ratio="anyres_max_2",
                         **common)
    cfg._attn_implementation = ATTN
    torch.manual_seed(seed)
    model = model_cls(cfg)
    with torch.no_grad():  # no two norms alike, so a swapped tensor shows in the logits
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return model.eval()


def images(seed: int = 0) -> list[Image.Image]:
    g = torch.Generator().manual_seed(seed)
    out = []
    for w, h in SIZES:
        arr = (torch.rand(h, w, 3, generator=g) * 255).to(torch.uint8).numpy()
        out.append(Image.fromarray(arr))
    return out


@pytest.fixture(scope="module", params=list(FAMILIES))
def reference(request, tmp_path_factory, tok):
    family = request.param
    root = tmp_path_factory.mktemp(family)
    hf = tiny_hf(tok, family)
    hf.save_pretrained(root / "hf")
    tok.save_pretrained(root / "hf")
    ckpt = import_checkpoint(root / "hf", root / "vlmkit")
    return {"family": family, "hf": hf, "hf_dir": root / "hf", "ckpt": ckpt, "root": root}


def vlmkit_batch(model, tok, imgs):
    """One sample per image: the image, then a question and an answer of different lengths."""
    proc = MultimodalProcessor.for_model(model, template="plain")
    feats = []
    for k, img in enumerate(imgs):
        feats.append(proc([Turn("user", "<image>"), Turn("assistant", "a red circle" + " left" * k)], [img]))
    return feats, collate(feats, tok.pad_token_id, "right", list(model.views))


def hf_inputs(feats, counts, image_id, pad_id):
    """transformers' layout: each placeholder repeated once per visual token, right padded."""
    rows = [[t for x in f.input_ids for t in ([image_id] * n if x == IMAGE_PLACEHOLDER else [x])]
            for f, n in zip(feats, counts)]
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, :len(r)] = torch.tensor(r)
        mask[i, :len(r)] = 1
    return ids, mask


def padded(pixel_list):
    n = max(t.shape[0] for t in pixel_list)
    return torch.stack([torch.cat([t, t.new_zeros(n - t.shape[0], *t.shape[1:])]) for t in pixel_list])


def run_both(model, hf, tok, imgs):
    feats, batch = vlmkit_batch(model, tok, imgs)
    counts = [model.visual_tokens(*f.visual_sizes(0)[:1], **f.visual_sizes(0)[1]) for f in feats]
    with torch.no_grad():
        out = model(**batch)
    assert [s.num_total for s in out.image_spans] == counts  # the count that budgets text is the forward's
    image_id = hf.config.image_token_id
    ids, mask = hf_inputs(feats, counts, image_id, tok.pad_token_id)
    pix = padded(list(batch["pixel_values"]["base"]))
    with torch.no_grad():
        ref = hf(input_ids=ids, attention_mask=mask, pixel_values=pix, image_sizes=batch["image_sizes"]).logits
    assert torch.equal(out.attention_mask, mask)
    valid = mask.bool()
    return (out.logits[..., :ref.shape[-1]] - ref)[valid].abs().max().item(), out, ref, batch


def test_detected_and_imported_with_the_family_tiling(reference):
    fmt = FAMILIES[reference["family"]][2]
    assert detect_format(reference["hf_dir"]).name == fmt
    model = load_checkpoint(reference["ckpt"])
    assert model.tiling is not None and model.tiling.merge == "spatial_unpad"
    onevision = reference["family"] == "llava_onevision"
    assert model.tiling.anyres_max == (2 if onevision else None)
    assert model.tiling.tile_multi_images is (not onevision)
    assert model.config.encoders[0].name.endswith("siglip" if onevision else "clip")
    assert model.config.template == ("chatml" if onevision else "vicuna_v1")  # Llama LLM, no <|im_start|>


def test_imported_logits_match_transformers_on_three_aspect_ratios(reference, tok):
    model = load_checkpoint(reference["ckpt"]).eval()
    diff, out, ref, batch = run_both(model, reference["hf"], tok, images())
    assert diff <= TOL
    # tiles really differ per image: 2:1 and 1:3 pick different grids, and the images change the logits
    assert [t.shape[0] for t in batch["pixel_values"]["base"]] != [5, 5, 5]
    swapped = images(seed=1)
    diff_other, *_ = run_both(model, reference["hf"], tok, swapped)
    assert diff_other <= TOL
    feats, b2 = vlmkit_batch(model, tok, swapped)
    with torch.no_grad():
        other = model(**b2).logits
    assert (other - out.logits).abs().max() > 1e-3


@pytest.mark.parametrize("resampler", ["pil", "torch"])
def test_vlmkit_pixels_are_transformers_image_processor_pixels(reference, tok, resampler):
    """``resampler: pil`` gives transformers' PIL processors' crops (the original code's resampling), ``torch`` its
    default torchvision processors' crops: equal tensors. (The two backends differ from each other by up to 0.33
    in normalised units where an image is enlarged: another bicubic kernel.)"""
    model = load_checkpoint(reference["ckpt"])
    view = model.encoders[0].view
    common = dict(image_mean=list(view.mean), image_std=list(view.std))
    if reference["family"] == "llava_next":
        cls = LlavaNextImageProcessorPil if resampler == "pil" else LlavaNextImageProcessor
        proc = cls(size={"shortest_edge": TILE}, crop_size={"height": TILE, "width": TILE},
                   image_grid_pinpoints=NEXT_PINPOINTS, **common)
    else:
        cls = LlavaOnevisionImageProcessorPil if resampler == "pil" else LlavaOnevisionImageProcessor
        proc = cls(size={"height": TILE, "width": TILE}, image_grid_pinpoints=OV_PINPOINTS, **common)
    model.tiling = dataclasses.replace(model.tiling, resampler=resampler)
    mine = MultimodalProcessor.for_model(model, template="plain")
    for img in images():
        ref = proc(images=[img], return_tensors="pt")
        pix, _ = mine.images([img])
        ours = pix["base"][0]
        assert ref["image_sizes"][0].tolist() == [img.height, img.width]
        theirs = ref["pixel_values"][0][:ours.shape[0]]
        assert ours.shape == theirs.shape
        assert torch.equal(ours, theirs)


def test_export_reloads_in_transformers_with_equal_logits(reference, tok, tmp_path):
    family = reference["family"]
    config_cls, model_cls, fmt = FAMILIES[family]
    out = export_checkpoint(reference["ckpt"], tmp_path / "hf", format=fmt)
    back = model_cls.from_pretrained(out, attn_implementation=ATTN).eval()
    assert back.config.image_grid_pinpoints == reference["hf"].config.image_grid_pinpoints
    model = load_checkpoint(reference["ckpt"]).eval()
    diff, *_ = run_both(model, back, tok, images())
    assert diff <= TOL


def test_a_model_that_does_not_tile_is_not_llava_next(tmp_path, tok):
    from vlmkit.model.assembly import build_model
    from vlmkit.model.checkpoint import save_checkpoint
    from vlmkit.model.config import ComponentConfig, ModelConfig

    cfg = ModelConfig(encoders=[ComponentConfig("clip", {"config": "tiny"})], connector=ComponentConfig("mlp2x_gelu"))
    ckpt = save_checkpoint(build_model(cfg, pretrained=False), tmp_path / "ckpt")
    with pytest.raises(ConfigError, match=r"tiling: LlavaNextForConditionalGeneration tiles images"):
        export_checkpoint(ckpt, tmp_path / "out", format="hf-llava-next")


def test_the_readme_walkthrough_import_ask_about_a_wide_image_fine_tune(reference, tmp_path):
    """README, 'High resolution (AnyRes)': a LLaVA-NeXT / OneVision folder imported by the CLI, asked about a
    2:1 image, then fine-tuned with `vlmkit train` from the imported checkpoint (init_from); the run keeps the
    tiling and trains the image-newline embedding with the connector."""
    from typer.testing import CliRunner

    from vlmkit.model.checkpoint import load_weights
    from vlmkit_cli.main import app

    runner = CliRunner()
    res = runner.invoke(app, ["import", str(reference["hf_dir"]), str(tmp_path / "next")])
    assert res.exit_code == 0, res.output
    assert FAMILIES[reference["family"]][2] in res.output
    wide = images()[0]  # 200 x 100
    (tmp_path / "data" / "images").mkdir(parents=True)
    wide.save(tmp_path / "data" / "images" / "wide.png")
    res = runner.invoke(app, ["generate", "--model", str(tmp_path / "next"), "--image",
                              str(tmp_path / "data" / "images" / "wide.png"), "--prompt", "What is in the image?",
                              "--max-new-tokens", "4"])
    assert res.exit_code == 0, res.output
    records = [{"id": str(i), "image": "images/wide.png", "conversations": [
        {"from": "human", "value": "<image>\nWhat is in the image?"}, {"from": "gpt", "value": "red circle"}]}
        for i in range(8)]
    (tmp_path / "data" / "train.jsonl").write_text("\n".join(json.dumps(r) for r in records) + "\n")
    recipe = {"init_from": str(tmp_path / "next"), "output_dir": str(tmp_path / "run"), "seed": 0,
              "stages": [{"name": "finetune", "trainable": ["connector"], "lr": 1e-2, "max_steps": 2, "batch_size": 4,
                          "save_steps": 100, "data": {"dataset": "llava-json", "args": {
                              "path": str(tmp_path / "data" / "train.jsonl"), "image_root": str(tmp_path / "data")}}}]}
    (tmp_path / "recipe.yaml").write_text(yaml.safe_dump(recipe))
    res = runner.invoke(app, ["train", str(tmp_path / "recipe.yaml")])
    assert res.exit_code == 0, res.output
    final = tmp_path / "run" / "01-finetune" / "final"
    model = load_checkpoint(final)
    assert model.tiling == load_checkpoint(reference["ckpt"]).tiling
    before, _ = load_weights(reference["ckpt"] / "model.safetensors")
    after, _ = load_weights(final / "model.safetensors")
    assert not torch.equal(before["tile_merge.image_newline"], after["tile_merge.image_newline"])
    assert torch.equal(before["encoders.0.vision.embeddings.patch_embedding.weight"],
                       after["encoders.0.vision.embeddings.patch_embedding.weight"])


def test_onevision_multi_image_sample_matches_transformers(reference, tok):
    """OneVision's multi-image input: a sample with two images gives each its base crop only (+ one newline),
    a sample with one image is tiled; transformers is told the same with ``batch_num_images``, and its image
    processor gives the same crops for the nested image list."""
    if reference["family"] != "llava_onevision":
        pytest.skip("multi-image samples without tiling are OneVision's; LLaVA-NeXT tiles every image")
    model = load_checkpoint(reference["ckpt"]).eval()
    proc = MultimodalProcessor.for_model(model, template="plain")
    wide, tall, square = images()
    feats = [proc([Turn("user", "<image><image>"), Turn("assistant", "two shapes")], [wide, tall]),
             proc([Turn("user", "<image>"), Turn("assistant", "one shape")], [square])]
    assert [t.shape[0] for t in feats[0].pixel_values["base"]] == [1, 1]  # not tiled
    assert feats[1].pixel_values["base"][0].shape[0] > 1  # tiled
    view = model.encoders[0].view
    hf_proc = LlavaOnevisionImageProcessorPil(size={"height": TILE, "width": TILE}, image_mean=list(view.mean),
                                              image_std=list(view.std), image_grid_pinpoints=OV_PINPOINTS)
    theirs = hf_proc(images=[[wide, tall], [square]], return_tensors="pt")
    assert theirs["batch_num_images"].tolist() == [2, 1]
    ours = [t for f in feats for t in f.pixel_values["base"]]
    for i, t in enumerate(ours):
        assert torch.equal(t, theirs["pixel_values"][i][:t.shape[0]])
    # the torch resampler against transformers' torchvision processor, on the same nested list
    tv = LlavaOnevisionImageProcessor(size={"height": TILE, "width": TILE}, image_mean=list(view.mean),
                                      image_std=list(view.std), image_grid_pinpoints=OV_PINPOINTS)
    tv_out = tv(images=[[wide, tall], [square]], return_tensors="pt")["pixel_values"]
    fast = MultimodalProcessor.for_model(model, template="plain")
    fast.tiling = dataclasses.replace(fast.tiling, resampler="torch")
    for k, (imgs, ref_rows) in enumerate((([wide, tall], (0, 1)), ([square], (2,)))):
        pix, _ = fast.images(imgs)
        for t, i in zip(pix["base"], ref_rows):
            assert torch.equal(t, tv_out[i][:t.shape[0]]), (k, i)
    batch = collate(feats, tok.pad_token_id, "right", list(model.views))
    counts = [model.visual_tokens(*f.visual_sizes(i)[:1], **f.visual_sizes(i)[1]) for f in feats
              for i in range(f.num_images)]
    assert counts[:2] == [16 + 1, 16 + 1]
    with torch.no_grad():
        out = model(**batch)
    assert [s.num_total for s in out.image_spans] == counts
    image_id = reference["hf"].config.image_token_id
    rows = []
    k = 0
    for f in feats:
        row = []
        for x in f.input_ids:
            if x == IMAGE_PLACEHOLDER:
                row += [image_id] * counts[k]
                k += 1
            else:
                row.append(x)
        rows.append(row)
    width = max(len(r) for r in rows)
    ids = torch.tensor([r + [tok.pad_token_id] * (width - len(r)) for r in rows])
    mask = torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in rows])
    with torch.no_grad():
        ref = reference["hf"](input_ids=ids, attention_mask=mask, pixel_values=padded(ours),
                              image_sizes=batch["image_sizes"], batch_num_images=torch.tensor([2, 1])).logits
    assert (out.logits[..., :ref.shape[-1]] - ref)[mask.bool()].abs().max().item() <= TOL
