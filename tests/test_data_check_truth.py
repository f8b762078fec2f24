"""``vlmkit data check`` tells the truth: an empty file is a problem, and it says whether (and with what) answers
past max_length and truncation were judged, instead of a silence that reads as "none"."""

from __future__ import annotations

import json

import yaml
from PIL import Image
from typer.testing import CliRunner

from vlmkit_cli.main import app


def _setup(tmp_path, answer: str = "red"):
    Image.new("RGB", (32, 32), (200, 20, 20)).save(tmp_path / "red.png")
    (tmp_path / "d.jsonl").write_text(json.dumps({"id": "a", "image": "red.png", "conversations": [
        {"from": "human", "value": "<image>\nColour?"}, {"from": "gpt", "value": answer}]}) + "\n")
    (tmp_path / "r.yaml").write_text(yaml.safe_dump({
        "model": {"encoders": [{"name": "tiny-conv", "args": {"image_size": 32}}], "connector": "mlp2x_gelu",
                  "llm": "tiny-llama"},
        "stages": [{"name": "short", "max_length": 40, "data": {"dataset": "llava-json", "args": {"path": "d.jsonl"}}},
                   {"name": "long", "max_length": 400, "data": {"dataset": "llava-json", "args": {"path": "d.jsonl"}}}]}))


def test_without_a_tokenizer_the_report_says_truncation_was_not_judged(tmp_path, monkeypatch):
    _setup(tmp_path)
    monkeypatch.chdir(tmp_path)
    res = CliRunner().invoke(app, ["data", "check", "d.jsonl"])
    assert res.exit_code == 0 and "answers past max_length and truncation: not judged" in res.output
    res = CliRunner().invoke(app, ["data", "check", "d.jsonl", "--json"])
    assert json.loads(res.stdout)["truncation_judged_with"] is None


def test_a_recipe_stage_judges_with_its_own_max_length(tmp_path, monkeypatch):
    _setup(tmp_path, answer="red " * 30)  # 16 visual tokens + prompt + a long answer: over 40, under 400
    monkeypatch.chdir(tmp_path)
    res = CliRunner().invoke(app, ["data", "check", "d.jsonl", "--recipe", "r.yaml", "--json"])
    doc = json.loads(res.stdout)
    assert "recipe r.yaml, stage 'short' (max_length 40)" in doc["truncation_judged_with"]
    assert res.exit_code == 1 and doc["problems"] == {"all_masked": 1}  # the answer falls past 40 tokens
    res = CliRunner().invoke(app, ["data", "check", "d.jsonl", "--recipe", "r.yaml", "--stage", "long", "--json"])
    doc = json.loads(res.stdout)
    assert res.exit_code == 0 and doc["truncated"] == 0 and "stage 'long' (max_length 400)" in \
        doc["truncation_judged_with"]
    res = CliRunner().invoke(app, ["data", "check", "d.jsonl", "--recipe", "r.yaml", "--stage", "3"])
    assert res.exit_code == 2 and "--stage 3: r.yaml has the stages short, long" in res.output


def test_an_empty_file_is_a_problem(tmp_path, monkeypatch):
    (tmp_path / "e.jsonl").write_text("")
    monkeypatch.chdir(tmp_path)
    res = CliRunner().invoke(app, ["data", "check", "e.jsonl"])
    assert res.exit_code == 1 and "e.jsonl: no records (the file is empty)" in res.output
