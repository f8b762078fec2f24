"""Training a tiling model: every image a different number of tokens, through the same Trainer path as any
model: learning, packing equal to padding, per-sample skipping, exact resume, and DeepSpeed ZeRO-2 with two
processes equal to one.

The data are boxes of one colour on canvases of random size and aspect ratio (1:3 to 3:1, 20 to 150 px),
so every batch mixes grids (1x1 to 3x3 tiles of 32 px) and token counts.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from PIL import Image
from test_training import StopAfter

from vlmkit.data.packing import collate_packed, spliced_length
from vlmkit.data.processing import MultimodalProcessor, collate
from vlmkit.data.templates import Turn
from vlmkit.model.assembly import build_model
from vlmkit.model.checkpoint import load_checkpoint, load_weights
from vlmkit.model.config import ModelConfig
from vlmkit.plugins.hooks import get_plugin_manager
from vlmkit.training.recipe import parse_recipe
from vlmkit.training.runner import run_recipe

MODEL = {
    "encoders": [{"name": "tiny-conv", "args": {"image_size": 32, "width": 32}}],
    "connector": "mlp2x_gelu",
    "llm": {"name": "tiny-llama", "args": {"hidden_size": 64, "num_layers": 1, "num_heads": 2, "intermediate_size": 128}},
    "max_length": 256,
    "tiling": {"pinpoints": "(1x1),...,(3x3)", "merge": "spatial_unpad", "anyres_max": 4},
}
COLOURS = {"red": (220, 30, 30), "green": (30, 200, 30), "blue": (30, 30, 220), "yellow": (230, 220, 20)}


def write_boxes(root: Path, n: int, seed: int = 0) -> Path:
    """llava-json records: one coloured box on a grey canvas of random size; the answer is its colour."""
    rng = random.Random(seed)
    (root / "images").mkdir(parents=True, exist_ok=True)
    lines = []
    for i in range(n):
        w, h = rng.randint(20, 150), rng.randint(20, 150)
        if max(w, h) / min(w, h) > 3:
            h = max(h, w // 3)
            w = max(w, h // 3)
        name, rgb = rng.choice(sorted(COLOURS.items()))
        img = Image.new("RGB", (w, h), (128, 128, 128))
        bw, bh = max(4, w // 2), max(4, h // 2)
        x, y = rng.randint(0, w - bw), rng.randint(0, h - bh)
        img.paste(Image.new("RGB", (bw, bh), rgb), (x, y))
        img.save(root / "images" / f"{i}.png")
        lines.append(json.dumps({"id": str(i), "image": f"images/{i}.png", "conversations": [
            {"from": "human", "value": "<image>\nwhat colour is the box?"}, {"from": "gpt", "value": name}]}))
    path = root / "train.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture(scope="module")
def boxes(tmp_path_factory):
    root = tmp_path_factory.mktemp("boxes")
    return {"train": str(write_boxes(root, 96)), "root": str(root)}


def recipe(boxes, out: Path, **stage_kw) -> dict:
    stage = {"name": "s1", "data": {"dataset": "llava-json", "args": {"path": boxes["train"], "image_root": boxes["root"]},
                                    "template": "vicuna_v1"},
             "trainable": ["encoders", "connector", "llm"], "lr": 3e-3, "max_steps": 6, "batch_size": 8,
             "logging_steps": 1, "save_steps": 3, "warmup_ratio": 0.0, "schedule": "linear", **stage_kw}
    return {"model": MODEL, "output_dir": str(out), "seed": 3, "stages": [stage]}


def losses(final: Path) -> list[float]:
    return [h["loss"] for h in json.loads((final / "log_history.json").read_text()) if "loss" in h]


def test_a_tiling_model_learns_and_its_checkpoint_keeps_the_tiling(boxes, tmp_path):
    final = run_recipe(parse_recipe(recipe(boxes, tmp_path / "run", max_steps=40, save_steps=100)))
    got = losses(final)
    assert len(got) == 40
    first, last = sum(got[:5]) / 5, sum(got[-5:]) / 5
    assert last < 0.6 * first, (first, last)
    model = load_checkpoint(final)
    assert model.tiling is not None and model.tiling.anyres_max == 4
    weights, _ = load_weights(final / "model.safetensors")
    assert "tile_merge.image_newline" in weights


def test_batches_mix_token_counts(boxes):
    torch.manual_seed(0)
    model = build_model(ModelConfig.from_dict(MODEL))
    proc = MultimodalProcessor.for_model(model)
    lines = Path(boxes["train"]).read_text().splitlines()[:8]
    imgs = [Image.open(Path(boxes["root"]) / json.loads(line)["image"]) for line in lines]
    feats = [proc([Turn("user", "<image>\nq"), Turn("assistant", "red")], [im]) for im in imgs]
    counts = {spliced_length(f, model.visual_tokens) for f in feats}
    assert len(counts) >= 4


def test_packed_tiled_batch_equals_the_padded_batch(boxes):
    torch.manual_seed(0)
    model = build_model(ModelConfig.from_dict(MODEL)).eval()
    proc = MultimodalProcessor.for_model(model)
    lines = Path(boxes["train"]).read_text().splitlines()[:6]
    convs = []
    for k, line in enumerate(lines):
        img = Image.open(Path(boxes["root"]) / json.loads(line)["image"])
        imgs = [img] if k % 3 else []  # text-only samples in between
        text = "<image>\nwhat colour?" if imgs else "hello " * (k + 1)
        convs.append(proc([Turn("user", text), Turn("assistant", "red")], imgs))
    views = list(model.views)
    lengths = [spliced_length(f, model.visual_tokens) for f in convs]
    packed = collate_packed(convs, lengths, 256, model.tokenizer.pad_token_id, views)
    rows = packed.pop("packed_rows")
    assert max(len(r) for r in rows) >= 2
    with torch.no_grad():
        out = model(**packed)
        for r, row in enumerate(rows):
            at = 0
            for i in row:
                single = model(**collate([convs[i]], model.tokenizer.pad_token_id, "right", views))
                n = single.logits.shape[1]
                assert n == lengths[i]
                torch.testing.assert_close(out.logits[r, at:at + n], single.logits[0], rtol=0, atol=1e-5)
                at += n


def test_packing_stage_trains_like_the_padded_stage(boxes, tmp_path):
    padded = losses(run_recipe(parse_recipe(recipe(boxes, tmp_path / "padded", max_steps=3, save_steps=100))))
    packed = losses(run_recipe(parse_recipe(recipe(boxes, tmp_path / "packed", max_steps=3, save_steps=100,
                                                   packing=True, pack_max_tokens=256))))
    assert [round(x, 4) for x in packed] == [round(x, 4) for x in padded]


def test_a_corrupt_image_is_skipped_and_counted(boxes, tmp_path):
    lines = Path(boxes["train"]).read_text().splitlines()[:16]
    (Path(boxes["root"]) / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\nnot a png")
    rec = json.loads(lines[4])
    rec["image"] = "bad.png"
    lines[4] = json.dumps(rec)
    path = tmp_path / "data.jsonl"
    path.write_text("\n".join(lines) + "\n")
    doc = recipe(boxes, tmp_path / "skip", max_steps=2, batch_size=16, save_steps=100)
    doc["stages"][0]["data"]["args"]["path"] = str(path)
    doc["stages"][0]["data"]["on_bad_sample"] = "skip"
    final = run_recipe(parse_recipe(doc))
    report = json.loads((final / "skipped.json").read_text())
    assert report["by_kind"] == {"corrupt_image": report["skipped"]} and report["records"][0]["line"] == 5


def test_resume_of_a_tiling_run_is_bitwise_equal(boxes, tmp_path):
    full = run_recipe(parse_recipe(recipe(boxes, tmp_path / "full")))
    pm = get_plugin_manager()
    crash = StopAfter(3)
    pm.register(crash)
    try:
        with pytest.raises(KeyboardInterrupt):
            run_recipe(parse_recipe(recipe(boxes, tmp_path / "resumed")))
    finally:
        pm.unregister(crash)
    resumed = run_recipe(parse_recipe(recipe(boxes, tmp_path / "resumed")), resume=True)
    a, _ = load_weights(full / "model.safetensors")
    b, _ = load_weights(resumed / "model.safetensors")
    assert a.keys() == b.keys() and "tile_merge.image_newline" in a
    assert max((a[k] - b[k]).abs().max().item() for k in a) == 0.0


def test_zero2_two_processes_match_one_process_with_tiling(boxes, tmp_path):
    pytest.importorskip("deepspeed", reason="DeepSpeed is not installed")
    kw = {"max_steps": 4, "save_steps": 100, "lr": 1e-2}
    reference = run_recipe(parse_recipe(recipe(boxes, tmp_path / "one", batch_size=4, **kw)))
    doc = recipe(boxes, tmp_path / "two", batch_size=2, **kw)
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(doc))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "vlmkit_cli", "train", str(path), "--deepspeed", "zero2"]
    proc = subprocess.run(cmd, env=dict(os.environ, OMP_NUM_THREADS="1"), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    final = Path(doc["output_dir"]) / "01-s1" / "final"
    got, want = losses(final), losses(reference)
    assert len(got) == len(want) == 4
    assert all(abs(g - w) <= 1e-4 * abs(w) for g, w in zip(got, want)), (got, want)
    a, _ = load_weights(final / "model.safetensors")
    b, _ = load_weights(reference / "model.safetensors")
    assert max((a[k] - b[k]).abs().max().item() for k in a) < 1e-4
