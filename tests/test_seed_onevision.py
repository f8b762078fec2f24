"""LLaVA-OneVision in the original code's format (LLaVA-VL/LLaVA-NeXT): import and export with parity against a
fixture made by that code itself.

``tests/fixtures/seeds/onevision`` was written by ``scripts/seed_fixtures/onevision_original.py make`` running
LLaVA-VL/LLaVA-NeXT @ df179663 unchanged (transformers 4.43.1): a tiny ``LlavaQwenForCausalLM`` with OneVision's
settings (``anyres_max_N``, ``spatial_unpad``, explicit pinpoints of 384 px tiles, LLaVA-NeXT's own SigLIP tower
tuned and saved inside without its last layer, the learned ``image_newline``) and the cap lowered to 2 so that it
runs on small images. Its rows: a 2:1 image (tiled), a two-image row (each padded, not tiled, OneVision's
multi-image convention), a 1:1 image (tiled and capped), text only. The original's pixels are 20 MB, so the
fixture keeps the images (PNG) and the sha256 of the original's crops; its logits are kept at every text position
and every 50th visual one.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
from pathlib import Path

import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from vlmkit.data.processing import MultimodalProcessor
from vlmkit.interop.catalogue import detect_format, export_checkpoint, import_checkpoint
from vlmkit.interop.formats import ImportOptions
from vlmkit.model.checkpoint import load_checkpoint
from vlmkit.model.contracts import IMAGE_PLACEHOLDER

FIXTURE = Path(__file__).parent / "fixtures" / "seeds" / "onevision"
ROOT = Path(__file__).parent.parent
TOL = 1e-5
#: the fixture's images by row, as the rows hold them (the last is the text-only row's dummy)
ROWS = [[0], [1, 2], [3], [4]]


@pytest.fixture(scope="module")
def ref():
    return load_file(str(FIXTURE / "reference.safetensors"))


@pytest.fixture(scope="module")
def meta():
    return json.loads((FIXTURE / "reference.json").read_text())


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return import_checkpoint(FIXTURE / "model", tmp_path_factory.mktemp("onevision") / "ckpt",
                             options=ImportOptions(vision_tower=str(FIXTURE / "siglip-tower")))


def crops_and_sizes(model):
    """vlmkit's own crops of the fixture's images, a row's images processed together (a two-image row pads)."""
    proc = MultimodalProcessor.for_model(model)
    images = [Image.open(FIXTURE / f"image-{i}.png") for i in range(5)]
    crops = []
    for row in ROWS:
        pix, _ = proc.images([images[i] for i in row])
        crops += list(pix["base"])
    return crops, [(im.height, im.width) for im in images]


def digest(t: torch.Tensor) -> str:
    return hashlib.sha256(t.contiguous().float().numpy().tobytes()).hexdigest()


def test_detected_and_imported_with_onevision_settings(ckpt):
    assert detect_format(FIXTURE / "model").name == "llava"
    model = load_checkpoint(ckpt)
    t = model.tiling
    assert (t.merge, t.anyres_max, t.tile_multi_images, t.unpad_rounding) == ("spatial_unpad", 2, False, "floor")
    assert len(t.pinpoints) == 9 and model.encoders[0].view.size == 384
    assert model.config.template == "chatml" and model.llm.model.config.model_type == "qwen2"


def test_vlmkit_crops_are_the_original_crops(ckpt, meta):
    crops, _ = crops_and_sizes(load_checkpoint(ckpt))
    assert [c.shape[0] for c in crops] == [3, 1, 1, 5, 2]  # the two-image row: one padded crop each
    assert [digest(c) for c in crops] == meta["pixel_sha256"]


def test_imported_logits_match_the_original_code(ckpt, ref):
    model = load_checkpoint(ckpt).eval()
    crops, sizes = crops_and_sizes(model)
    ids, mask = ref["input_ids"], ref["attention_mask"]
    with torch.no_grad():
        out = model(input_ids=ids, attention_mask=mask, pixel_values={"base": crops[:4]}, image_sizes=sizes[:4])
    assert out.attention_mask.sum(1).tolist() == ref["spliced_lengths"].tolist()
    assert [s.num_total for s in out.image_spans] == ref["image_tokens"][:4].tolist()  # 2214 and 2211: capped
    got = out.logits[ref["logit_rows"], ref["logit_cols"]][:, :ref["logits"].shape[-1]]
    assert (got - ref["logits"]).abs().max().item() <= TOL


def test_imported_greedy_generation_matches_the_original_code(ckpt, ref):
    model = load_checkpoint(ckpt).eval()
    crops, sizes = crops_and_sizes(model)
    ids, mask = ref["input_ids"], ref["attention_mask"]
    k = 0
    for row in range(ids.shape[0]):
        r = ids[row][mask[row].bool()][None]
        n = int((r == IMAGE_PLACEHOLDER).sum())
        px = {"base": crops[k:k + n]} if n else None
        ours = model.generate(r, torch.ones_like(r), px, max_new_tokens=6, image_sizes=sizes[k:k + n])
        k += max(n, 1)
        theirs = [t for t in ref["generated"][row].tolist() if t != -1]
        assert ours[0].tolist()[:len(theirs)] == theirs, row


def test_export_then_import_is_exact(ckpt, tmp_path):
    exported = export_checkpoint(ckpt, tmp_path / "llava-onevision-qwen-export", format="llava")
    config = json.loads((exported / "config.json").read_text())
    release = json.loads((FIXTURE / "model" / "config.json").read_text())
    for key in ("architectures", "model_type", "image_aspect_ratio", "mm_patch_merge_type", "image_grid_pinpoints",
                "mm_vision_tower"):
        assert config[key] == release[key], key
    back = import_checkpoint(exported, tmp_path / "back", options=ImportOptions(
        vision_tower=str(FIXTURE / "siglip-tower")))
    a, b = load_checkpoint(ckpt).state_dict(), load_checkpoint(back).state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_export_reloads_in_the_original_code_with_equal_logits(ckpt, tmp_path):
    python, repos = os.environ.get("VLMKIT_SEED_PYTHON_ROSS"), os.environ.get("VLMKIT_SEED_REPOS")
    if not python or not repos or not Path(python).is_file():
        pytest.skip("needs the seed's own environment (transformers 4.43.1 and LLaVA-VL/LLaVA-NeXT, which CI cannot "
                    "download): set VLMKIT_SEED_PYTHON_ROSS and VLMKIT_SEED_REPOS, see scripts/seed_fixtures/README.md")
    exported = export_checkpoint(ckpt, tmp_path / "llava-onevision-qwen-export", format="llava")
    proc = subprocess.run([python, str(ROOT / "scripts" / "seed_fixtures" / "onevision_original.py"), "check",
                           "--repo", str(Path(repos) / "llavanext"), "--fixture", str(FIXTURE), str(exported)],
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["max_abs_logit_diff"] <= TOL and result["greedy_tokens_equal"]


def test_pinpoints_as_a_range_of_tiles_expand_as_the_original_expands_them(ckpt, tmp_path):
    """Training scripts pass ``(1x1),...,(3x3)``; LLaVA-NeXT expands it first number outer in tiles of the tower's
    size, as [width, height]: the same list, in the same order, as the fixture's explicit one."""
    import shutil

    src = tmp_path / "ranged"
    shutil.copytree(FIXTURE / "model", src)
    config = json.loads((src / "config.json").read_text())
    config["image_grid_pinpoints"] = "(1x1),...,(3x3)"
    (src / "config.json").write_text(json.dumps(config))
    ranged = import_checkpoint(src, tmp_path / "ckpt", options=ImportOptions(vision_tower=str(FIXTURE / "siglip-tower")))
    assert load_checkpoint(ranged, meta=True).tiling == load_checkpoint(ckpt, meta=True).tiling
