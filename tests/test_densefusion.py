"""DenseFusion-1M captions (components.md §5.1): captioning samples, LLaVA conversion, missing images reported."""

from __future__ import annotations

import json

import pytest
from PIL import Image
from typer.testing import CliRunner

from vlmkit.data.templates import IMAGE_TOKEN, PlainTemplate, Turn
from vlmkit.errors import DataError
from vlmkit_data.densefusion import DenseFusionDataset, convert_densefusion
from vlmkit_data.llava_json import LlavaJsonDataset

CAPTIONS = ["A dense caption of a red square on a white wall, with text reading OPEN.",
            "Two dogs run across a green field under a cloudy sky.",
            "An image whose file is missing.",
            "A blue car parked next to a tree."]


@pytest.fixture()
def df(tmp_path):
    root = tmp_path / "images"
    root.mkdir()
    Image.new("RGB", (40, 30), (200, 0, 0)).save(root / "a1.png")
    Image.new("RGB", (50, 20), (0, 200, 0)).save(root / "b2.jpg")
    Image.new("RGB", (16, 16), (0, 0, 200)).save(root / "custom.webp")
    recs = [{"image_id": "a1", "url": "http://x/a1", "caption": CAPTIONS[0]},
            {"image_id": "b2", "url": "http://x/b2", "caption": CAPTIONS[1]},
            {"image_id": "gone", "url": "http://x/gone", "caption": CAPTIONS[2]},
            {"image_id": 44, "url": "http://x/44", "caption": CAPTIONS[3], "image": "custom.webp"}]
    path = tmp_path / "DenseFusion-1M.jsonl"
    lines = [json.dumps(recs[0]), json.dumps(recs[1]), "", json.dumps(recs[2]), json.dumps(recs[3])]
    path.write_text("\n".join(lines) + "\n")
    return path, root


def test_records_become_plain_captioning_samples(df):
    path, root = df
    ds = DenseFusionDataset(str(path), image_root=str(root))
    assert len(ds) == 4 and ds.index.nbytes == 4 * 20  # only byte offsets and line numbers are held
    s = ds[0]
    assert s.id == "a1" and s.turns == [Turn("user", IMAGE_TOKEN), Turn("assistant", CAPTIONS[0])]
    assert s.images[0].size == (40, 30) and s.source.endswith(":1") and s.meta["url"] == "http://x/a1"
    assert ds[1].images[0].size == (50, 20)  # found as .jpg
    assert ds[3].id == "44" and ds[3].images[0].size == (16, 16)  # the record's own "image" field
    segs = PlainTemplate().segments(s.turns)
    assert [(g.text, g.supervised) for g in segs if g.text] == [(IMAGE_TOKEN, False), (CAPTIONS[0], True)]
    assert ds.modality_lengths() == [len(c.split()) for c in CAPTIONS]


def test_missing_images_are_errors_or_listed_never_silent(df):
    path, root = df
    ds = DenseFusionDataset(str(path), image_root=str(root))
    with pytest.raises(DataError, match="image not found") as err:
        ds[2]
    assert (err.value.line, err.value.record_id, err.value.kind) == (4, "gone", "missing_image")
    skip = DenseFusionDataset(str(path), image_root=str(root), missing="skip")
    assert len(skip) == 3 and skip.missing_records == [(4, "gone")]
    assert [skip[i].id for i in range(3)] == ["a1", "b2", "44"]
    assert skip.modality_lengths() == [len(CAPTIONS[i].split()) for i in (0, 1, 3)]


def test_bad_lines_name_their_line(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"image_id": "a", "caption": "ok"}\n{"image_id": "b"}\n{not json\n')
    ds = DenseFusionDataset(str(path))
    with pytest.raises(DataError, match="caption") as err:
        ds[1]
    assert err.value.line == 2 and err.value.field == "caption"
    with pytest.raises(DataError, match="malformed JSON") as err:
        ds[2]
    assert err.value.line == 3


def test_convert_writes_llava_jsonl_and_reports_missing(df, tmp_path):
    path, root = df
    out = tmp_path / "out" / "df_llava.jsonl"
    rep = convert_densefusion(str(path), str(out), str(root))
    assert (rep.written, rep.missing, rep.first_missing) == (3, 1, [(4, "gone")])
    recs = [json.loads(x) for x in out.read_text().splitlines()]
    assert recs[0] == {"id": "a1", "image": str(root.resolve() / "a1.png"),
                       "conversations": [{"from": "human", "value": "<image>"}, {"from": "gpt", "value": CAPTIONS[0]}]}
    assert recs[1]["image"].endswith("b2.jpg") and recs[2]["image"].endswith("custom.webp")
    missing = [json.loads(x) for x in open(rep.report)]
    assert missing == [{"line": 4, "image_id": "gone", "url": "http://x/gone", "reason": "image not found"}]
    # the converted file trains through the ordinary loader, rooted at the image folder (paths stay under it)
    ds = LlavaJsonDataset(str(out), image_root=str(root))
    assert len(ds) == 3 and ds[0].turns[1].text == CAPTIONS[0] and ds[0].images[0].size == (40, 30)
    rel = convert_densefusion(str(path), str(tmp_path / "rel.jsonl"), str(root), relative=True)
    assert json.loads(open(tmp_path / "rel.jsonl").readline())["image"] == "a1.png" and rel.written == 3


def test_convert_cli(df, tmp_path):
    from vlmkit_cli.main import app

    path, root = df
    out = tmp_path / "o.jsonl"
    res = CliRunner().invoke(app, ["data", "convert", "densefusion", str(path), str(out), "--images", str(root)])
    assert res.exit_code == 0, res.output
    assert "wrote 3 records" in res.output and "1 records have no image" in res.output
    assert f"{path}:4: image_id=gone" in res.output
    assert (tmp_path / "o.jsonl.missing.jsonl").read_text().count("\n") == 1
    res = CliRunner().invoke(app, ["data", "convert", "coco", str(path), str(out), "--images", str(root)])
    assert res.exit_code == 2 and "unknown format 'coco'" in res.output
