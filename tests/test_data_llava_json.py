"""LlavaJsonDataset: byte-offset indexing of JSON arrays and JSONL, LLaVA image-tag semantics, errors."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from PIL import Image

from vlmkit.data.samples import BOXES, IMAGES, VisionLanguageDataset
from vlmkit.errors import DataError
from vlmkit.plugins.arguments import validate_args
from vlmkit.plugins.registry import registry
from vlmkit_data import json_index
from vlmkit_data.json_index import build_index
from vlmkit_data.llava_json import LlavaJsonDataset

TRICKY = [
    # braces, brackets, commas and escaped quotes inside strings; multi-byte UTF-8; a trailing backslash
    'He said "{not: a, brace}" ] [ and left.',
    "caf\u00e9 \u65e5\u672c\u8a9e \U0001F642 na\u00efve \u2014 \u00bd",
    "ends with a backslash \\",
    "\\\"}{\\\\",
    "line\nbreak and \ttab",
]


def _png(path, colour=(255, 0, 0), size=(8, 6)):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.new("RGB", size, colour).save(path)


def _records(n: int) -> list[dict]:
    recs = []
    for i in range(n):
        text = TRICKY[i % len(TRICKY)]
        recs.append({"id": f"r{i}", "conversations": [{"from": "human", "value": f"q{i} {text}"},
                                                      {"from": "gpt", "value": f"a{i} {text}"}]})
    return recs


def _write_jsonl(path, recs, blank_every=3, crlf=False):
    nl = "\r\n" if crlf else "\n"
    lines, expected_lines = [], []
    for i, r in enumerate(recs):
        if blank_every and i % blank_every == 1:
            lines.append("   ")  # blank line: skipped, still counted
        expected_lines.append(len(lines) + 1)
        lines.append(json.dumps(r, ensure_ascii=False))
    with open(path, "w", encoding="utf-8", newline="") as f:
        f.write(nl.join(lines))  # no trailing newline on the last record
    return expected_lines


def _spans_parse_to(path, index, recs):
    raw = open(path, "rb").read()
    for k, r in enumerate(recs):
        assert json.loads(raw[index.starts[k]:index.ends[k]]) == r


@pytest.mark.parametrize("crlf", [False, True])
def test_jsonl_offsets_lines_and_utf8(tmp_path, crlf):
    recs = _records(11)
    path = tmp_path / "d.jsonl"
    expected_lines = _write_jsonl(path, recs, crlf=crlf)
    for chunk in (5, 64, 1 << 20):  # chunk boundaries inside records and multi-byte characters
        idx = build_index(str(path), chunk_size=chunk)
        assert idx.format == "jsonl" and len(idx) == len(recs)
        assert idx.lines.tolist() == expected_lines
        _spans_parse_to(path, idx, recs)
    ds = LlavaJsonDataset(str(path), progress=False)
    assert ds[1].turns[0].text == "q1 " + TRICKY[1]
    assert ds[-1].id == "r10"
    assert ds[4].source == f"{path}:{expected_lines[4]}"


def test_json_array_offsets_with_tiny_chunks(tmp_path):
    recs = _records(9) + [{"id": "x", "conversations": [{"from": "human", "value": "\\"},
                                                          {"from": "gpt", "value": "\"\\\"\""}]}]
    path = tmp_path / "d.json"
    text = json.dumps(recs, indent=2, ensure_ascii=False)
    path.write_text("\ufeff" + text + "\n\n", encoding="utf-8")  # a BOM and trailing blank lines
    raw = path.read_bytes()
    for chunk in (1, 2, 3, 7, 13, 1 << 20):  # every string and escape is cut somewhere
        idx = build_index(str(path), chunk_size=chunk)
        assert idx.format == "json" and len(idx) == len(recs)
        _spans_parse_to(path, idx, recs)
        for k in range(len(recs)):
            assert raw[idx.starts[k]:idx.starts[k] + 1] == b"{"
            assert idx.lines[k] == raw[:idx.starts[k]].count(b"\n") + 1
    ds = LlavaJsonDataset(str(path), progress=False)
    assert ds[3].turns[1].text == "a3 " + TRICKY[3]
    assert ds.line(0) == 2  # "[" is on line 1


def test_json_array_compact_and_non_object_elements(tmp_path):
    path = tmp_path / "c.json"
    path.write_text('[{"id":1,"conversations":[{"from":"human","value":"a,b]"},{"from":"gpt","value":"c"}]},'
                    ' 42 ,\n"text"]')
    idx = build_index(str(path), chunk_size=4)
    assert len(idx) == 3 and idx.lines.tolist() == [1, 1, 2]
    ds = LlavaJsonDataset(str(path), boxes=False, regions=False, progress=False)
    assert ds[0].id == "1"
    for i in (1, 2):  # never dropped: reported when read
        with pytest.raises(DataError) as err:
            ds[i]
        assert err.value.kind == "malformed_json" and err.value.line == idx.lines[i]
        assert "must be a JSON object" in str(err.value)
    empty = tmp_path / "empty.json"
    empty.write_text(" [ \n ] ")
    assert len(LlavaJsonDataset(str(empty), progress=False)) == 0


@pytest.mark.parametrize("body, line, message", [
    ('[\n{"id": 1},\n{"id": "unterminated}\n]', 3, "unterminated string"),
    ('[\n{"id": 1},\n{"id": 2}\n', 4, "not closed"),
    ('[\n{"id": 1},\n]', 3, "empty array element"),
    ('[\n{"id": 1}\n]\n{"id": 2}', 4, "after the end"),
])
def test_json_array_structure_errors_name_file_and_line(tmp_path, body, line, message):
    path = tmp_path / "bad.json"
    path.write_text(body)
    with pytest.raises(DataError) as err:
        LlavaJsonDataset(str(path), progress=False)
    e = err.value
    assert e.kind == "malformed_json" and e.file == str(path) and e.line == line, str(e)
    assert message in str(e) and f"{path}:{line}" in str(e)


def _image_dataset(tmp_path):
    root = tmp_path / "imgs"
    _png(root / "a.png", (255, 0, 0), (10, 6))
    _png(root / "b.png", (0, 0, 255), (4, 4))
    recs = [
        {"id": "single-moved", "image": "a.png",
         "conversations": [{"from": "human", "value": "What is <image> this?"}, {"from": "gpt", "value": "red"}]},
        {"id": "single-untagged", "image": "a.png",
         "conversations": [{"from": "system", "value": "Be brief."}, {"from": "human", "value": "Colour?"},
                           {"from": "gpt", "value": "red"}, {"from": "human", "value": "Sure?"},
                           {"from": "gpt", "value": "yes"}]},
        {"id": "multi", "image": ["a.png", "b.png"], "task": "compare",
         "conversations": [{"from": "human", "value": "First <image> then <image>: same?"},
                           {"from": "gpt", "value": "no"}]},
        {"id": "text", "conversations": [{"from": "human", "value": "one two three"},
                                         {"from": "gpt", "value": "four five"}]},
    ]
    path = tmp_path / "mixed.jsonl"
    _write_jsonl(path, recs, blank_every=0)
    return LlavaJsonDataset(str(path), image_root=str(root), progress=False)


def test_llava_image_tags_multi_image_and_text_only(tmp_path):
    ds = _image_dataset(tmp_path)
    assert isinstance(ds, VisionLanguageDataset) and ds.provides == frozenset({IMAGES})
    s = ds[0]
    assert [t.role for t in s.turns] == ["user", "assistant"]
    assert s.turns[0].text == "<image>\nWhat is  this?"  # LLaVA: tag removed, stripped, put in front
    assert len(s.images) == 1 and s.images[0].mode == "RGB" and s.images[0].size == (10, 6)
    assert s.images[0].getpixel((0, 0)) == (255, 0, 0)
    s = ds[1]
    assert [t.role for t in s.turns] == ["system", "user", "assistant", "user", "assistant"]
    assert s.turns[1].text == "<image>\nColour?" and s.turns[3].text == "Sure?"
    s = ds[2]
    assert s.turns[0].text == "First <image> then <image>: same?"  # several images: tags stay
    assert [im.size for im in s.images] == [(10, 6), (4, 4)]
    assert s.meta["task"] == "compare" and s.meta["index"] == 2 and s.boxes is None
    s = ds[3]
    assert s.images == [] and s.turns[0].text == "one two three"
    # LLaVA's grouping length: words over all turns (raw record), negative without image
    assert ds.modality_lengths() == [5, 6, 6, -5]


def _error_of(ds, i) -> DataError:
    with pytest.raises(DataError) as err:
        ds[i]
    return err.value


def test_every_error_kind_names_file_line_id_and_field(tmp_path):
    root = tmp_path / "imgs"
    _png(root / "ok.png")
    (root / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n definitely not an image")
    good = [{"from": "human", "value": "<image>\nq"}, {"from": "gpt", "value": "a"}]
    lines = [
        json.dumps({"id": "ok", "image": "ok.png", "conversations": good}),
        '{"id": "broken", "image": "ok.png", "conversations": [',
        json.dumps({"id": "noimg", "image": "missing.png", "conversations": good}),
        json.dumps({"id": "corrupt", "image": ["ok.png", "corrupt.png"],
                    "conversations": [{"from": "human", "value": "<image><image>"}, {"from": "gpt", "value": "a"}]}),
        json.dumps({"id": "empty", "image": "ok.png", "conversations": []}),
        json.dumps({"id": "role", "conversations": [{"from": "human", "value": "q"}, {"from": "bot", "value": "a"}]}),
        json.dumps({"id": "order", "conversations": [{"from": "gpt", "value": "a"}, {"from": "human", "value": "q"}]}),
        json.dumps({"id": "tags", "image": "ok.png",
                    "conversations": [{"from": "human", "value": "<image> <image>"}, {"from": "gpt", "value": "a"}]}),
        json.dumps({"id": "multi", "image": ["ok.png", "ok.png"], "conversations": good}),
        json.dumps({"id": "texttag", "conversations": good}),
        json.dumps({"id": "noconv", "image": "ok.png"}),
        json.dumps({"id": "novalue", "conversations": [{"from": "human"}]}),
    ]
    path = tmp_path / "errors.jsonl"
    path.write_text("\n".join(lines) + "\n")
    ds = LlavaJsonDataset(str(path), image_root=str(root), boxes=False, regions=False, progress=False)
    assert len(ds) == len(lines)
    assert ds[0].id == "ok"
    expected = {  # index -> (kind, field)
        1: ("malformed_json", None), 2: ("missing_image", "image"), 3: ("corrupt_image", "image[1]"),
        4: ("empty_conversation", "conversations"), 5: ("bad_role", "conversations[1].from"),
        6: ("bad_role", "conversations[0].from"), 7: ("placeholder_mismatch", "conversations"),
        8: ("placeholder_mismatch", "conversations"), 9: ("placeholder_mismatch", "conversations"),
        10: ("missing_field", "conversations"), 11: ("missing_field", "conversations[0].value"),
    }
    for i, (kind, field) in expected.items():
        e = _error_of(ds, i)
        assert (e.kind, e.field, e.file, e.line) == (kind, field, str(path), i + 1), str(e)
        assert f"{path}:{i + 1}" in str(e)
        if i != 1:  # a record that does not parse has no id to give
            assert e.record_id == json.loads(lines[i])["id"] and f"id={e.record_id}" in str(e)
    assert "missing.png" in str(_error_of(ds, 2))


def test_json_array_record_errors_give_the_record_line(tmp_path):
    recs = [{"id": "a", "conversations": [{"from": "human", "value": "q"}, {"from": "gpt", "value": "a"}]},
            {"id": "b", "image": "nowhere.png", "conversations": [{"from": "human", "value": "q"}]}]
    path = tmp_path / "arr.json"
    path.write_text(json.dumps(recs, indent=2))
    ds = LlavaJsonDataset(str(path), boxes=False, regions=False, progress=False)
    e = _error_of(ds, 1)
    expected_line = path.read_text().splitlines().index("  {", 2) + 1
    assert e.kind == "missing_image" and e.line == expected_line and e.record_id == "b"


def test_boxes_provides_by_scan_and_flag(tmp_path):
    root = tmp_path / "imgs"
    _png(root / "a.png", size=(20, 10))
    conv = [{"from": "human", "value": "<image>\nq"}, {"from": "gpt", "value": "a"}]
    recs = [{"id": "n", "image": "a.png", "conversations": conv, "boxes": [[[1, 2, 3, 4], [0, 0, 20, 10]]]},
            {"id": "flat", "image": "a.png", "conversations": conv, "boxes": [[5, 5, 9, 9]]},
            {"id": "t", "conversations": [{"from": "human", "value": "q"}, {"from": "gpt", "value": "a"}]},
            {"id": "none", "image": "a.png", "conversations": conv},
            {"id": "bad", "image": "a.png", "conversations": conv, "boxes": [[[1, 2, 3]]]}]
    path = tmp_path / "boxes.jsonl"
    _write_jsonl(path, recs, blank_every=0)
    scanned = LlavaJsonDataset(str(path), image_root=str(root), scan_records=2, progress=False)
    assert scanned.provides == frozenset({IMAGES, BOXES})
    b = scanned[0].boxes
    assert len(b) == 1 and b[0].shape == (2, 4) and b[0].dtype == np.float32 and b[0][1].tolist() == [0, 0, 20, 10]
    assert scanned[1].boxes[0].tolist() == [[5, 5, 9, 9]]  # un-nested form of a single image
    assert scanned[2].boxes is None  # text-only: no boxes needed
    e = _error_of(scanned, 3)
    assert (e.kind, e.field, e.line) == ("missing_field", "boxes", 4)
    assert _error_of(scanned, 4).field == "boxes[0]"
    # a longer scan sees record 3 and does not declare boxes; records with boxes still pass them on
    full = LlavaJsonDataset(str(path), image_root=str(root), progress=False)
    assert full.provides == frozenset({IMAGES}) and full[3].boxes is None and full[0].boxes[0].shape == (2, 4)
    assert BOXES in LlavaJsonDataset(str(path), image_root=str(root), boxes=True, scan_records=0).provides


def test_index_cache_reuse_and_invalidation(tmp_path, monkeypatch):
    recs = _records(6)
    path = tmp_path / "cached.jsonl"
    _write_jsonl(path, recs)
    ds = LlavaJsonDataset(str(path), index_cache=True, progress=False)
    lengths = ds.modality_lengths()
    assert json_index.cache_path(str(path)).is_file()

    def no_rebuild(*a, **k):
        raise AssertionError("index rebuilt although the cache is valid")

    monkeypatch.setattr(json_index, "build_index", no_rebuild)
    again = LlavaJsonDataset(str(path), index_cache=True, progress=False)
    assert again.index.starts.tolist() == ds.index.starts.tolist()
    assert again.index.extras["modality_lengths"].tolist() == lengths  # lengths cached with the index
    monkeypatch.undo()
    with open(path, "a") as f:  # the file changes: size and mtime differ, the cache is ignored
        f.write("\n" + json.dumps(recs[0]))
    assert len(LlavaJsonDataset(str(path), index_cache=True, progress=False)) == len(recs) + 1


def test_progress_callback_and_quiet(tmp_path, capsys):
    path = tmp_path / "p.jsonl"
    _write_jsonl(path, _records(50))
    seen = []
    ds = LlavaJsonDataset(str(path), progress=False, progress_callback=lambda done, total: seen.append((done, total)))
    size = os.path.getsize(path)
    assert seen and seen[-1] == (size, size)
    seen.clear()
    ds.modality_lengths()
    assert seen and seen[-1][0] == seen[-1][1] == size
    out = capsys.readouterr()
    assert out.out == "" and out.err == ""


def test_twenty_thousand_lines_index_small(tmp_path):
    n = 20_000
    path = tmp_path / "big.jsonl"
    line = {"id": 0, "image": "x.jpg", "conversations": [{"from": "human", "value": "<image>\nDescribe the image."},
                                                         {"from": "gpt", "value": "A picture " * 20}]}
    with open(path, "w") as f:
        for i in range(n):
            line["id"] = i
            f.write(json.dumps(line) + "\n")
    ds = LlavaJsonDataset(str(path), boxes=False, regions=False, progress=False)
    assert len(ds) == n and ds.record(n - 1)["id"] == n - 1 and ds.line(12345) == 12346
    assert ds.index.nbytes == 20 * n  # int64 start + int64 end + uint32 line
    assert ds.index.nbytes < os.path.getsize(path) / 10
    lengths = ds.modality_lengths()
    assert len(lengths) == n and set(lengths) == {44}


def test_registered_and_arguments_validate(tmp_path):
    assert registry.load("dataset", "llava-json") is LlavaJsonDataset
    validate_args("llava-json", LlavaJsonDataset, {"path": "x.json", "image_root": None, "boxes": True})
    with pytest.raises(Exception, match="valid arguments"):
        validate_args("llava-json", LlavaJsonDataset, {"path": "x.json", "image_folder": "y"})
    with pytest.raises(DataError, match="not found"):
        LlavaJsonDataset(str(tmp_path / "absent.jsonl"))


def _random_value(rng, depth=0):
    pieces = ['"', "\\", "{", "}", "[", "]", ",", ":", " ", "\n", "\u00e9", "\U0001F642", "a", "\\\\", '\\"']
    kind = rng.randrange(6 if depth < 3 else 3)
    if kind == 0:
        return "".join(rng.choice(pieces) for _ in range(rng.randint(0, 12)))
    if kind == 1:
        return rng.choice([0, -1.5, 1e10, True, None])
    if kind == 2:
        return "\\" * rng.randint(1, 5)  # backslash runs of odd and even length before the closing quote
    if kind == 3:
        return [_random_value(rng, depth + 1) for _ in range(rng.randint(0, 3))]
    return {_random_value(rng, 3) if rng.random() < 0.5 else f"k{j}": _random_value(rng, depth + 1)
            for j in range(rng.randint(0, 3))}


@pytest.mark.parametrize("seed", range(6))
def test_json_array_scanner_fuzz(tmp_path, seed):
    """Random nested values full of quotes, backslash runs and brackets, split at random chunk sizes."""
    import random

    rng = random.Random(seed)
    values = [_random_value(rng) for _ in range(rng.randint(1, 25))]
    text = json.dumps(values, indent=rng.choice([None, 1, 3]), ensure_ascii=rng.random() < 0.5)
    path = tmp_path / "fuzz.json"
    path.write_text(text, encoding="utf-8")
    raw = path.read_bytes()
    values = json.loads(text)  # (keys became strings)
    for chunk in (1, 2, 5, rng.randint(6, 50), 1 << 20):
        idx = build_index(str(path), chunk_size=chunk)
        assert [json.loads(raw[s:e]) for s, e in zip(idx.starts, idx.ends)] == values
        assert idx.lines.tolist() == [raw[:s].count(b"\n") + 1 for s in idx.starts]
