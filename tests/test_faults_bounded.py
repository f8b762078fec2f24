"""Bounded work on hostile data: per-record limits, YAML whose aliases would expand without bound, and Ctrl-C
(issue #31's "bounded work" class). The CLI-level cases are in the hostile-input table."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from PIL import Image

from vlmkit import safe_yaml
from vlmkit.errors import ConfigError, DataError
from vlmkit_data.llava_json import LlavaJsonDataset


def _data(tmp_path: Path, records: list[dict]) -> Path:
    Image.new("RGB", (32, 32), (200, 20, 20)).save(tmp_path / "red.png")
    f = tmp_path / "d.jsonl"
    f.write_text("".join(json.dumps(r) + "\n" for r in records))
    return f


def _rec(i: int, **kw) -> dict:
    return {"id": str(i), "image": "red.png", "conversations": [{"from": "human", "value": "<image>\nq"},
                                                                 {"from": "gpt", "value": "a"}], **kw}


def test_a_record_over_a_limit_is_a_named_error_and_the_others_load(tmp_path):
    f = _data(tmp_path, [_rec(0), _rec(1, conversations=[{"from": "human", "value": "<image>\n" + "x" * 50},
                                                          {"from": "gpt", "value": "a"}])])
    ds = LlavaJsonDataset(str(f), limits={"max_text_chars": 40})
    assert ds[0].id == "0"
    with pytest.raises(DataError, match=r"d\.jsonl:2 id=1 field 'conversations': characters: 59, over the limit of 40 "
                                        r"per record \(max_text_chars") as err:
        ds[1]
    assert err.value.kind == "over_limit"
    ds = LlavaJsonDataset(str(f), limits={"max_record_bytes": 150})
    with pytest.raises(DataError, match=r"record size in bytes: 1\d\d, over the limit of 150"):
        ds[1]


def test_limits_are_checked_as_arguments():
    with pytest.raises(ConfigError, match=r"unknown limit\(s\) \['max_tokens'\]; known: .*max_turns"):
        LlavaJsonDataset("nofile", limits={"max_tokens": 3})
    with pytest.raises(ConfigError, match=r"limits\.max_turns: expected an integer >= 1, got 0"):
        LlavaJsonDataset("nofile", limits={"max_turns": 0})


def test_a_box_file_record_over_the_limit_is_refused_when_used_not_parsed(tmp_path):
    """A box file line with 10^5 boxes (MG-LLaVA's NMS would stall on it) is not parsed; the sample that uses it
    is a named error, and the other samples keep their boxes."""
    f = _data(tmp_path, [_rec(0), _rec(1)])
    boxes = tmp_path / "boxes.jsonl"
    n = 100_000
    boxes.write_text(json.dumps({"id": "0", "boxes": [[1, 1, 5, 5]] * 2, "scores": [0.9, 0.8], "labels": ["a", "b"]})
                     + "\n" + json.dumps({"id": "1", "boxes": [[1, 1, 5, 5]] * n, "scores": [0.5] * n,
                                          "labels": ["a"] * n}) + "\n")
    t = time.perf_counter()
    ds = LlavaJsonDataset(str(f), box_file=str(boxes))
    assert len(ds[0].boxes[0]) >= 1
    with pytest.raises(DataError, match=r"boxes: 100,000, over the limit of 10,000 per record \(max_boxes.* in box "
                                        r"file .*boxes\.jsonl") as err:
        ds[1]
    assert err.value.kind == "over_limit" and time.perf_counter() - t < 10


def test_yaml_that_expands_without_bound_is_refused_at_once_and_deep_yaml_is_measured():
    laughs = "a: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n" + "".join(
        f"{p}: &{p} [*{q}, *{q}, *{q}, *{q}, *{q}, *{q}, *{q}, *{q}, *{q}]\n" for p, q in zip("bcdefghi", "abcdefgh"))
    t = time.perf_counter()
    with pytest.raises(ConfigError, match=r"r\.yaml: the YAML expands to more than 200,000 values"):
        safe_yaml.load(laughs, "r.yaml")
    assert time.perf_counter() - t < 1.0
    with pytest.raises(ConfigError, match=r"deep\.yaml: nested deeper than can be read"):
        safe_yaml.load("[" * 5000 + "]" * 5000, "deep.yaml")  # PyYAML's composer recurses per level
    assert safe_yaml.load("x: &v [1, 2]\ny: *v\n", "ok") == {"x": [1, 2], "y": [1, 2]}


@pytest.mark.parametrize("after", [2.0, 8.0])  # while torch and transformers load (the default judge), and well into the check
def test_ctrl_c_stops_a_long_command_within_a_second(tmp_path, after):
    f = _data(tmp_path, [_rec(i) for i in range(150_000)])
    # a test run started in the background (`.ci/run &`) ignores SIGINT, and a child inherits that: Python then
    # installs no KeyboardInterrupt handler, and the check would rightly run on. Ctrl-C at a terminal is on.
    p = subprocess.Popen([sys.executable, "-m", "vlmkit_cli", "data", "check", str(f)], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, cwd=tmp_path,
                         preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    time.sleep(after)
    assert p.poll() is None, "the check finished before it could be interrupted: make the file larger"
    t = time.perf_counter()
    p.send_signal(signal.SIGINT)
    _, err = p.communicate(timeout=30)
    assert time.perf_counter() - t < 1.0
    assert p.returncode == 130 and "interrupted (Ctrl-C)" in err and "Traceback" not in err
