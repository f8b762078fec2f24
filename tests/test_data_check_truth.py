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


def test_by_default_a_recipe_found_training_on_the_file_judges_it(tmp_path, monkeypatch):
    _setup(tmp_path, answer="red " * 30)  # past stage 'short' (40 tokens): every label would be masked
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")  # found beside the file, not only in the working folder
    res = CliRunner().invoke(app, ["data", "check", str(tmp_path / "d.jsonl"), "--json"])
    doc = json.loads(res.stdout)
    assert res.exit_code == 1 and doc["problems"] == {"all_masked": 1}
    assert "r.yaml, stage 'short' (max_length 40), found training on d.jsonl" in doc["truncation_judged_with"]


def test_by_default_without_a_recipe_the_default_model_judges_and_says_so(tmp_path, monkeypatch):
    _setup(tmp_path, answer="red " * 300)
    (tmp_path / "r.yaml").unlink()
    monkeypatch.chdir(tmp_path)
    res = CliRunner().invoke(app, ["data", "check", "d.jsonl"])
    assert res.exit_code == 0, res.output
    assert "with the default model, preset vlmkit-encoders:tiny (max_length 256)" in res.output
    assert "1 sample(s) would be cut at max_length" in res.output
    res = CliRunner().invoke(app, ["data", "check", "d.jsonl", "--max-length", "2048", "--json"])
    assert json.loads(res.stdout)["truncated"] == 0  # the caller's budget applies to the default judge too


def test_it_says_when_it_cannot_judge_and_why(tmp_path, monkeypatch):
    import vlmkit_cli.commands_data as commands_data
    from vlmkit.errors import ConfigError

    _setup(tmp_path)
    (tmp_path / "r.yaml").unlink()
    monkeypatch.chdir(tmp_path)
    res = CliRunner().invoke(app, ["data", "check", "d.jsonl", "--no-judge"])
    assert res.exit_code == 0 and "truncation: not judged (--no-judge;" in res.output

    def no_tokenizer(*_a, **_k):
        raise ConfigError("llm/tokenizer.json: missing")

    monkeypatch.setattr(commands_data, "_processor", no_tokenizer)
    res = CliRunner().invoke(app, ["data", "check", "d.jsonl", "--json"])
    doc = json.loads(res.stdout)
    assert res.exit_code == 0 and doc["truncation_judged_with"] is None  # the record checks still stand
    assert doc["truncation_not_judged_because"] == "no tokenizer could be built: llm/tokenizer.json: missing"


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


def test_without_the_default_model_installed_it_says_which_distribution_is_missing(tmp_path, monkeypatch):
    import vlmkit_cli.siblings as siblings

    _setup(tmp_path)
    (tmp_path / "r.yaml").unlink()
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(siblings, "missing_components", lambda *needs: [("preset", "tiny", "vlmkit-encoders")])
    res = CliRunner().invoke(app, ["data", "check", "d.jsonl"])
    assert res.exit_code == 0 and "error" not in res.output, res.output
    assert "not judged (the default model needs preset 'tiny' (vlmkit-encoders) and no recipe beside d.jsonl" \
        in res.output

