"""Data under hostile input: paths stay under their root, `data check` catches what training rejects,
skips and truncations are counted exactly (with DataLoader workers and across resume), a batch of bad
samples does not stop training, and an error inside a worker shows the real DataError."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image

from vlmkit.errors import DataError
from vlmkit.training.recipe import parse_recipe
from vlmkit.training.runner import run_recipe

TINY_MODEL = {
    "encoders": [{"name": "tiny-conv", "args": {"image_size": 32, "width": 32}}],
    "connector": "mlp2x_gelu",
    "llm": {"name": "tiny-llama", "args": {"hidden_size": 64, "num_layers": 1, "num_heads": 2, "intermediate_size": 128}},
    "max_length": 64,
    "template": "vicuna_v1",
}


def conv(q: str = "<image>\nWhat colour?", a: str = "red") -> list[dict]:
    return [{"from": "human", "value": q}, {"from": "gpt", "value": a}]


@pytest.fixture()
def root(tmp_path):
    """An image root with two good images, and a secret image beside (outside) it."""
    imgs = tmp_path / "data"
    imgs.mkdir()
    for name, colour in (("a.png", "red"), ("b.png", "blue")):
        Image.new("RGB", (32, 32), colour).save(imgs / name)
    Image.new("RGB", (32, 32), "green").save(tmp_path / "secret.png")
    return imgs


def write(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


# -- paths stay under the root -------------------------------------------------------------------------
@pytest.mark.parametrize("image", ["../secret.png", "/etc/passwd", "sub/../../secret.png"])
def test_image_paths_outside_the_root_are_refused(root, image):
    from vlmkit_data.llava_json import LlavaJsonDataset

    f = write(root / "d.jsonl", [{"id": "x", "image": image, "conversations": conv()}])
    with pytest.raises(DataError, match=r"d\.jsonl:1 id=x field 'image': image path .* leads outside the image root") \
            as err:
        LlavaJsonDataset(str(f))[0]
    assert err.value.kind == "outside_root"


def test_outside_paths_load_when_allowed(root):
    from vlmkit_data.llava_json import LlavaJsonDataset

    f = write(root / "d.jsonl", [{"id": "x", "image": "../secret.png", "conversations": conv()}])
    assert LlavaJsonDataset(str(f), allow_outside_root=True)[0].images[0].getpixel((0, 0)) == (0, 128, 0)


def test_data_check_reports_what_training_would_reject(root):
    from vlmkit_data.check import check_file, format_report

    f = write(root / "d.jsonl", [
        {"id": "ok", "image": "a.png", "conversations": conv()},
        {"id": "escape", "image": "../secret.png", "conversations": conv()},
        {"id": "nan", "image": "a.png", "conversations": conv(), "boxes": [[float("nan"), 1, 5, 10]]},
        {"id": "outside", "image": "a.png", "conversations": conv(), "boxes": [[1, 1, 50, 10]]},
        {"id": "question-only", "image": "b.png", "conversations": [{"from": "human", "value": "<image>\nHi"}]},
    ])
    report = check_file(str(f), progress=False)
    assert dict(report.counts) == {"outside_root": 1, "bad_box": 1, "box_outside_image": 1, "no_assistant_turn": 1}
    assert (report.checked, report.bad_records) == (5, 4)
    assert "1 ok, 4 with problems" in format_report(report)


def test_data_check_with_a_model_finds_answers_past_max_length(root):
    from vlmkit.data.processing import MultimodalProcessor
    from vlmkit.model.assembly import build_model
    from vlmkit.model.config import ModelConfig
    from vlmkit_data.check import check_file

    long_q = "<image>\n" + " ".join(["why"] * 200)
    f = write(root / "d.jsonl", [
        {"id": "ok", "image": "a.png", "conversations": conv()},
        {"id": "long", "image": "a.png", "conversations": conv(long_q)},
        {"id": "cut", "image": "a.png", "conversations": conv(a=" ".join(["red"] * 80))},
    ])
    model = build_model(ModelConfig.from_dict(TINY_MODEL), meta=True)
    report = check_file(str(f), progress=False, processor=MultimodalProcessor.for_model(model))
    assert dict(report.counts) == {"all_masked": 1}
    assert report.first[0].record_id == "long" and "max_length=64" in report.first[0].message
    assert report.truncated == 1


def test_data_check_of_a_broken_json_array_counts_no_records(tmp_path):
    from vlmkit_data.check import check_file, format_report

    f = tmp_path / "d.json"
    f.write_text('[{"id": "a", "conversations": []}, {"id": ')
    report = check_file(str(f), progress=False)
    assert not report.ok and report.as_dict()["ok_records"] == 0
    assert "-1 ok" not in format_report(report) and "could not be read as a whole" in format_report(report)


def test_data_convert_refuses_images_outside_the_root(tmp_path):
    from vlmkit_data.densefusion import convert_densefusion

    imgs = tmp_path / "imgs"
    imgs.mkdir()
    Image.new("RGB", (8, 8)).save(imgs / "a.png")
    Image.new("RGB", (8, 8)).save(tmp_path / "b.png")
    src = write(tmp_path / "df.jsonl", [{"image_id": "a", "caption": "x"}, {"image_id": "../b", "caption": "y"},
                                        {"image_id": "c", "caption": "z", "image": "/etc/passwd"}])
    rep = convert_densefusion(str(src), str(tmp_path / "out.jsonl"), str(imgs))
    assert (rep.written, rep.refused) == (1, 2)
    listed = [json.loads(x) for x in open(rep.report)]
    assert [r["image_id"] for r in listed] == ["../b", "c"] and all("outside the image root" in r["reason"]
                                                                    for r in listed)
    assert "b.png" not in (tmp_path / "out.jsonl").read_text()


# -- skips and truncation are counted exactly ----------------------------------------------------------
def recipe(out: Path, data: Path, root: Path, **stage_kw) -> dict:
    stage = {"name": "s1", "data": {"dataset": "llava-json", "args": {"path": str(data), "image_root": str(root)},
                                    "on_bad_sample": "skip"},
             "trainable": ["connector"], "lr": 1e-3, "epochs": 1, "batch_size": 4, "logging_steps": 1,
             "save_steps": 2, "warmup_ratio": 0.0}
    stage.update(stage_kw)
    return {"model": TINY_MODEL, "output_dir": str(out), "seed": 0, "stages": [stage]}


@pytest.fixture()
def half_bad(root):
    """16 records: 8 good, 8 whose image is missing, interleaved; and one that is cut at max_length."""
    recs = []
    for i in range(16):
        image = "a.png" if i % 2 == 0 else f"gone{i}.png"
        recs.append({"id": f"r{i}", "image": image, "conversations": conv(a="red" if i else " ".join(["red"] * 80))})
    return write(root / "half.jsonl", recs)


@pytest.mark.parametrize("workers", [0, 2])
def test_skips_and_truncations_are_counted_exactly(root, half_bad, tmp_path, workers):
    final = run_recipe(parse_recipe(recipe(tmp_path / "run", half_bad, root, dataloader_workers=workers)))
    report = json.loads((final / "skipped.json").read_text())
    assert report["skipped"] == 8 and report["by_kind"] == {"missing_image": 8}
    assert sorted(r["id"] for r in report["records"]) == sorted(f"r{i}" for i in range(1, 16, 2))
    assert report["truncated"] == 1 and report["truncated_records"][0]["id"] == "r0"
    # r15 is replaced by the next usable record, r0: used twice in the epoch, so cut twice
    assert report["skip_events"] == 8 and report["truncation_events"] == 2


def test_skip_counts_survive_a_resume(root, half_bad, tmp_path, crash_after_save):
    with crash_after_save(2):
        run_recipe(parse_recipe(recipe(tmp_path / "run", half_bad, root)))
    final = run_recipe(parse_recipe(recipe(tmp_path / "run", half_bad, root)), resume=True)
    assert json.loads((final / "skipped.json").read_text())["skipped"] == 8


def test_a_batch_of_only_bad_samples_does_not_stop_training(root, tmp_path):
    recs = [{"id": "bad", "image": "gone.png", "conversations": conv()},
            {"id": "good", "image": "a.png", "conversations": conv()}]
    data = write(root / "d.jsonl", recs)
    final = run_recipe(parse_recipe(recipe(tmp_path / "run", data, root, batch_size=1, max_steps=4)))
    report = json.loads((final / "skipped.json").read_text())
    assert report["skipped"] >= 1 and {r["id"] for r in report["records"]} == {"bad"}


def test_an_error_in_a_worker_shows_the_real_data_error(root, tmp_path):
    data = write(root / "d.jsonl", [{"id": "bad", "image": "gone.png", "conversations": conv()}] * 4)
    doc = recipe(tmp_path / "run", data, root, dataloader_workers=1)
    doc["stages"][0]["data"]["on_bad_sample"] = "error"
    f = tmp_path / "r.json"
    f.write_text(json.dumps(doc))
    proc = subprocess.run([sys.executable, "-m", "vlmkit_cli", "train", str(f)], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 2, proc.stderr[-2000:]
    errors = re.findall(r"error: [^\r\n]*", proc.stderr)  # (the progress bar may share its line)
    assert len(errors) == 1 and "d.jsonl:1 id=bad field 'image': image file not found" in errors[0], proc.stderr
    assert "Caught" not in errors[0]


def test_first_line_unwraps_a_dataloader_worker_error(root):
    from vlmkit_cli.errors import first_line
    from vlmkit_data.llava_json import LlavaJsonDataset

    data = write(root / "d.jsonl", [{"id": "bad", "image": "gone.png", "conversations": conv()}])
    loader = torch.utils.data.DataLoader(LlavaJsonDataset(str(data)), num_workers=1, collate_fn=lambda x: x)
    with pytest.raises(DataError) as err:
        next(iter(loader))
    assert str(err.value).startswith("Caught DataError")
    assert first_line(err.value).endswith("d.jsonl:1 id=bad field 'image': image file not found: "
                                          f"{root / 'gone.png'}")


def test_eval_of_an_empty_file_is_an_error(root, tmp_path):
    from vlmkit.model.assembly import build_model
    from vlmkit.model.checkpoint import save_checkpoint
    from vlmkit.model.config import ModelConfig

    save_checkpoint(build_model(ModelConfig.from_dict(TINY_MODEL)), tmp_path / "ck")
    empty = root / "empty.jsonl"
    empty.write_text("")
    proc = subprocess.run([sys.executable, "-m", "vlmkit_cli", "eval", "--model", str(tmp_path / "ck"), "--data",
                           str(empty)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and "empty.jsonl" in proc.stderr and "no records" in proc.stderr, proc.stderr
