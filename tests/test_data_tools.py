"""``vlmkit data check`` and ``vlmkit data preview``: every problem counted by kind with its line, grids drawn."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image
from test_vip_records import RECORDS
from typer.testing import CliRunner

from vlmkit_data.check import check_file
from vlmkit_data.preview import PreviewItem, render_grid


def conv(q="<image>\nWhat is it?", a="a cat"):
    return [{"from": "human", "value": q}, {"from": "gpt", "value": a}]


@pytest.fixture()
def data(tmp_path):
    Image.new("RGB", (100, 80), (10, 120, 200)).save(tmp_path / "ok.png")
    (tmp_path / "corrupt.png").write_bytes(b"not a png at all")
    good = [{"id": "g1", "image": "ok.png", "conversations": conv()},
            {"id": "g2", "conversations": conv("Hello?", "Hi.")},
            {"id": "g3", "image": "ok.png", "conversations": conv(), "boxes": [[[0, 0, 100, 80], [10, 10, 20, 20]]]},
            {"id": "refcocog-train-1", "image": "ok.png", "conversations": conv(),
             **{**RECORDS["refcocog"][1], "bboxes": [[5, 5, 60, 70]], "segmentations": None}}]
    bad = ['{"id": "b1", "image": "ok.png", "conversations": [',  # malformed JSON
           json.dumps({"id": "b2", "image": "nope.png", "conversations": conv()}),
           json.dumps({"id": "b3", "image": "corrupt.png", "conversations": conv()}),
           json.dumps({"id": "b4", "image": "ok.png", "conversations": conv("<image> <image> twice")}),
           json.dumps({"id": "b5", "image": "ok.png", "conversations": [conv()[0], conv()[0]]}),
           json.dumps({"id": "b6", "image": "ok.png", "conversations": conv(), "boxes": [[[50, 50, 120, 70]]]}),
           json.dumps({"id": "foo-x-1", "image": "ok.png", "conversations": conv(), "bboxes": [[1, 1, 5, 5]]}),
           json.dumps({"id": "v7w-x-2", "image": "ok.png", "conversations": conv(),
                       "question": "Which?", "bboxes": [[1, 1, 500, 5]], "answer": 0})]
    clean = tmp_path / "clean.jsonl"
    clean.write_text("".join(json.dumps(r) + "\n" for r in good))
    dirty = tmp_path / "dirty.jsonl"
    dirty.write_text("".join(json.dumps(r) + "\n" for r in good) + "\n".join(bad) + "\n")
    return tmp_path, clean, dirty


def test_check_counts_each_kind_with_its_line(data):
    root, clean, dirty = data
    seen = []
    report = check_file(str(dirty), progress=False, callback=lambda done, total: seen.append((done, total)))
    assert report.records == report.checked == 12 and report.bad_records == 7
    assert dict(report.counts) == {"malformed_json": 1, "missing_image": 1, "corrupt_image": 1,
                                   "placeholder_mismatch": 1, "bad_role": 1, "box_outside_image": 2}
    lines = {p.record_id or "b1": p.line for p in report.first}
    assert lines["b1"] == 5 and lines["b2"] == 6 and lines["b6"] == 10 and lines["v7w-x-2"] == 12
    outside = [p for p in report.first if p.kind == "box_outside_image"]
    assert {p.field for p in outside} == {"boxes[0][0]", "region[0]"}
    assert seen[-1] == (12, 12)
    assert check_file(str(clean), progress=False).ok
    # read as a ViP mix, region fields under an unknown id prefix are refused too (as the vip transform does)
    strict = check_file(str(dirty), dataset="vip-regions", progress=False)
    assert strict.counts["bad_region"] == 1 and strict.bad_records == 8
    assert [p.line for p in strict.first if p.kind == "bad_region"] == [11]
    assert check_file(str(clean), dataset="vip-regions", progress=False).ok


def test_check_cli_exit_codes_and_json(data):
    from vlmkit_cli.main import app

    root, clean, dirty = data
    runner = CliRunner()
    res = runner.invoke(app, ["data", "check", str(dirty), "--json"])
    assert res.exit_code == 1
    doc = json.loads(res.stdout)
    assert doc["problems"]["missing_image"] == 1 and doc["bad_records"] == 7 and doc["ok"] is False
    assert doc["first"][0]["line"] == 5
    res = runner.invoke(app, ["data", "check", str(dirty), "--show", "6"])
    assert res.exit_code == 1
    assert "12 records" in res.stdout and re.search(r"box_outside_image +2\n", res.stdout)
    assert "id=b6 field 'boxes[0][0]': box [50.0, 50.0, 120.0, 70.0] lies outside the 100x80 image" in res.stdout
    assert f"{dirty}:5" in res.stdout and "first 6:" in res.stdout and "foo-x-1" not in res.stdout
    res = runner.invoke(app, ["data", "check", str(clean)])
    assert res.exit_code == 0 and "4 ok, 0 with problems" in res.stdout
    res = runner.invoke(app, ["data", "check", str(root / "absent.jsonl")])
    assert res.exit_code == 1 and "missing_file" in res.stdout


def test_preview_draws_prompts_and_text(data):
    from vlmkit_cli.main import app

    root, clean, _ = data
    out = root / "grid.png"
    res = CliRunner().invoke(app, ["data", "preview", str(clean), "--transform", "{name: vip, args: {alpha: 255}}",
                                   "--n", "4", "--out", str(out), "--cell", "128", "--json"])
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    assert doc["shown"] == [0, 1, 2, 3] and not doc["errors"]
    grid = Image.open(out)
    assert grid.size == tuple(doc["size"]) and grid.size[0] == 2 * 128 + 3 * 6  # 2 columns of 128 px cells
    arr = np.asarray(grid.convert("RGB"))
    assert ((arr == (10, 120, 200)).all(-1)).sum() > 1000  # the images are in the grid
    assert ((arr < 60).all(-1)).sum() > 200  # and so is the text


def test_preview_grid_with_a_failed_sample_shows_its_error():
    grid = render_grid([PreviewItem(0, error="data.jsonl:3: image file not found")], cell=100, text_lines=4)
    arr = np.asarray(grid)
    assert ((arr[:, :, 0] > 150) & (arr[:, :, 1] < 60)).sum() > 20  # red error text under the empty cell


def test_data_help_does_not_import_torch():
    code = ("import sys\nsys.argv=['vlmkit', 'data', '--help']\nfrom vlmkit_cli.main import main\n"
            "try:\n    main()\nexcept SystemExit as e:\n    assert not e.code, e.code\n"
            "print('TORCH' if 'torch' in sys.modules else 'NO-TORCH')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().endswith("NO-TORCH")
